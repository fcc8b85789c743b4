"""Agent overhead: what the loop itself costs outside the LLM and SAM 3.

Two measurements at 1024x1024 with the fake engine (masks given, no SAM 3 time):

1. **Per-turn overhead** — request building, rendering, image encoding, parsing and bookkeeping —
   over a 4-turn run (segment 8 masks, a bad selection, segment again, select) with a zero-latency
   scripted LLM; reported in ms and as a share of a turn whose LLM call takes ``--latency`` s
   (goal < 3 %).
2. **examine_each_mask over 8 masks** over real HTTP (``OpenAICompatibleLLM`` against the scripted
   OpenAI-compatible server answering every call after ``--latency`` s): the examine step's own
   time (rendering 16 images plus 8 concurrent verification calls, the main-loop call excluded)
   as a multiple of one call's latency (goal <= 1.5x).

Usage:
    python benchmarks/agent.py                # latency 1 s, 5 runs
    python benchmarks/agent.py --latency 0.5 --runs 3 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from sam3agent import Agent, AgentConfig
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3core.fake import FakeEngine

SIZE = 1024


def _image() -> np.ndarray:
    """A real photo (scikit-image's astronaut) at 1024x1024, or a smooth synthetic picture."""
    try:
        from skimage import data

        return cv2.resize(data.astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    except ImportError:
        ramp = np.linspace(0, 255, SIZE, dtype=np.float32)
        return np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (SIZE, 1)),
                         np.tile(ramp[:, None], (1, SIZE))], axis=-1).astype(np.uint8)


def _masks(count: int, seed: int) -> list[np.ndarray]:
    """``count`` ellipses of varied size at 1024x1024."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        canvas = np.zeros((SIZE, SIZE), np.uint8)
        centre = (int(rng.integers(100, SIZE - 100)), int(rng.integers(100, SIZE - 100)))
        axes = (int(rng.integers(20, 160)), int(rng.integers(20, 160)))
        cv2.ellipse(canvas, centre, axes, float(rng.integers(0, 180)), 0, 360, 1, -1)
        out.append(canvas.astype(bool))
    return out


def _tool(name: str, **params: object) -> str:
    return f"<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"


async def per_turn_overhead(image: np.ndarray, runs: int) -> dict[str, float]:
    """Median per-turn time outside the LLM and the engine, over ``runs`` runs."""
    engine = FakeEngine({"thing": _masks(8, 1), "object": _masks(8, 2)})
    per_turn = []
    for _ in range(runs + 1):  # the first run warms up imports and caches
        llm = ScriptedLLM([_tool("segment_phrase", text_prompt="thing"),
                           _tool("select_masks_and_return", final_answer_masks=[99]),
                           _tool("segment_phrase", text_prompt="object"),
                           _tool("select_masks_and_return", final_answer_masks=[1, 2])])
        result = await Agent(llm, engine).arun(image, "the two largest objects")
        totals = result.totals
        per_turn.append((totals.wall_seconds - totals.llm_seconds - totals.sam_seconds) / totals.turns)
    overhead = statistics.median(per_turn[1:])
    return {"overhead_ms_per_turn": overhead * 1000}


async def examine_ratio(image: np.ndarray, latency: float, runs: int) -> dict[str, float]:
    """Median examine-step time (main call excluded) over one call's latency."""
    engine = FakeEngine({"thing": _masks(8, 3)})
    ratios, verify_latencies = [], []
    for _ in range(runs):
        main = iter([("segment_phrase", {"text_prompt": "thing"}), ("examine_each_mask", {}),
                     ("select_masks_and_return", {"final_answer_masks": [1]})])

        def reply(body: dict[str, Any], main: Any = main) -> str:
            last = body["messages"][-1]["content"]
            text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
            if "Candidate: mask" in text:
                return "<verdict>Reject</verdict>" if "mask 2." in text else "<verdict>Accept</verdict>"
            name, params = next(main)
            return _tool(name, **params)

        with ScriptedOpenAIServer(reply, latency=latency) as server:
            llm = OpenAICompatibleLLM(server.base_url, "scripted", timeout=30, max_retries=0)
            result = await Agent(llm, engine, AgentConfig()).arun(image, "the thing on the left")
        step = result.steps[1]
        if len(step.verifications) != 8:
            raise RuntimeError(f"expected 8 verifications, got {len(step.verifications)}")
        ratios.append((step.wall_seconds - step.llm_seconds) / latency)
        verify_latencies.extend(v.seconds for v in step.verifications)
    return {"examine_over_latency": statistics.median(ratios),
            "verify_call_s_median": statistics.median(verify_latencies)}


async def run(latency: float, runs: int) -> dict[str, Any]:
    """Measure both numbers (see the module docstring)."""
    image = _image()
    overhead = await per_turn_overhead(image, runs)
    share = overhead["overhead_ms_per_turn"] / 1000 / (latency + overhead["overhead_ms_per_turn"] / 1000)
    examine = await examine_ratio(image, latency, runs)
    return {"image": f"{SIZE}x{SIZE}", "latency_s": latency, "runs": runs, "machine": platform.processor()
            or platform.machine(), **overhead, "overhead_share": share, **examine}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=1.0, help="LLM latency per call in seconds")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.latency, args.runs))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"sam3agent loop overhead, {result['image']} image, LLM latency {args.latency:g} s, "
          f"median of {args.runs} runs")
    print(f"  {'per-turn overhead':<44} {result['overhead_ms_per_turn']:8.1f} ms")
    print(f"  {'share of a turn (goal < 3 %)':<44} {100 * result['overhead_share']:8.2f} %")
    print(f"  {'examine 8 masks / one call (goal <= 1.5x)':<44} {result['examine_over_latency']:8.2f} x")
    print(f"  {'verification call latency (median)':<44} {result['verify_call_s_median']:8.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
