"""Prompt cost: text and pixels the agent sends per sample, for each prompt/preset choice.

Every word of the system prompt rides on every main-loop call, and every image costs visual
tokens (Qwen2.5-VL: one per 28x28 pixels), so the prompt and the image budget are latency and
money. This benchmark runs the real agent over a fixed set of scripted trajectories with the fake
engine (masks given, no SAM 3) and counts what every request carried:

* prompt characters and words per sample (system prompts and every text part of every request,
  main loop and verification; the model's own replies in the history included);
* requests, images and megapixels per sample, and the visual tokens those pixels make at 28 px.

Rows: our ``default`` preset, our ``paper`` preset (the reference's knobs: original-size PNGs,
re-examining every mask), and the ``paper`` preset with a user-supplied prompt file (for example
the reference's own ``system_prompt.txt`` and ``system_prompt_iterative_checking.txt`` from a
checkout of Meta's repository; nothing of them ships here), when ``--system-prompt`` is given.

Usage:
    python benchmarks/prompt_cost.py
    python benchmarks/prompt_cost.py --system-prompt ~/sam3/sam3/agent/system_prompts/system_prompt.txt \\
        --verify-prompt ~/sam3/sam3/agent/system_prompts/system_prompt_iterative_checking.txt --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from sam3agent import Agent, AgentConfig
from sam3agent.llm.base import LLMRequest, TextPart
from sam3agent.llm.scripted import ScriptedLLM
from sam3core.fake import FakeEngine

logger = logging.getLogger("prompt_cost")
PATCH = 28


def _call(name: str, **params: Any) -> str:
    body = json.dumps({"name": name, "parameters": params})
    return f"The query asks for one object; I will call {name}.\n<tool>{body}</tool>"


def _ellipses(height: int, width: int, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    out = []
    for _ in range(count):
        cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.1, 0.9) * width
        ry, rx = rng.uniform(0.03, 0.12) * height, rng.uniform(0.03, 0.12) * width
        out.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0)
    return out


# name -> (main-loop replies, 1-based mask ids the verifier rejects)
TRAJECTORIES: dict[str, tuple[list[str], set[int]]] = {
    "one phrase, select": ([_call("segment_phrase", text_prompt="cup"),
                            _call("select_masks_and_return", final_answer_masks=[1])], set()),
    "one phrase, examine 4, select": ([_call("segment_phrase", text_prompt="person"),
                                       _call("examine_each_mask"),
                                       _call("select_masks_and_return", final_answer_masks=[1])], {2, 4}),
    "nothing found, second phrase": ([_call("segment_phrase", text_prompt="teapot"),
                                      _call("segment_phrase", text_prompt="cup"),
                                      _call("select_masks_and_return", final_answer_masks=[2])], set()),
    "two phrases, examine twice": ([_call("segment_phrase", text_prompt="person"),
                                    _call("examine_each_mask"), _call("segment_phrase", text_prompt="child"),
                                    _call("examine_each_mask"), _call("examine_each_mask"),
                                    _call("select_masks_and_return", final_answer_masks=[1])], {3}),
}


def _verifier(rejected: set[int]) -> Callable[[LLMRequest], str]:
    def reply(request: LLMRequest) -> str:
        label = next(i.label for i in request.images if i.label.endswith("alone"))
        verdict = "Reject" if int(label.split()[1]) in rejected else "Accept"
        return f"The mask covers one whole object.\n<verdict>{verdict}</verdict>"

    return reply


def _count(requests: list[LLMRequest]) -> dict[str, float]:
    text = [p.text for r in requests for m in r.messages for p in m.content if isinstance(p, TextPart)]
    images = [i for r in requests for i in r.images]
    pixels = sum(i.width * i.height for i in images)
    return {
        "requests": len(requests),
        "main_requests": sum(r.purpose == "main" for r in requests),
        "prompt_chars": sum(len(t) for t in text),
        "prompt_words": sum(len(t.split()) for t in text),
        "system_words": sum(len(r.messages[0].plain_text.split()) for r in requests),
        "images": len(images),
        "megapixels": pixels / 1e6,
        "visual_tokens": sum((i.width // PATCH) * (i.height // PATCH) for i in images),
    }


async def measure(config: AgentConfig, height: int, width: int) -> dict[str, Any]:
    """Run every trajectory once; per-sample means of the counts, and the system prompt's words."""
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    engine = FakeEngine({"cup": _ellipses(height, width, 2, 1), "person": _ellipses(height, width, 4, 2),
                         "child": _ellipses(height, width, 3, 3)})
    rows = []
    for replies, rejected in TRAJECTORIES.values():
        llm = ScriptedLLM(replies, verify_replies=_verifier(rejected))
        result = await Agent(llm, engine, config).arun(image, "the person holding the cup")
        if result.status != "answered":
            raise RuntimeError(f"trajectory did not follow its script: {result.status} ({result.reason})")
        rows.append(_count(llm.requests))
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    means["system_prompt_words"] = len(config.load_prompts().system(config.protocol).split())
    means["verify_prompt_words"] = len(config.load_prompts().verify_system().split())
    return means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system-prompt", type=Path, default=None, help="a prompt file for the third row")
    parser.add_argument("--verify-prompt", type=Path, default=None, help="a verification prompt file for it")
    parser.add_argument("--height", type=int, default=1200, help="image height (default 1200)")
    parser.add_argument("--width", type=int, default=1600, help="image width (default 1600)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    configs = {"default": AgentConfig(), "paper": AgentConfig.paper()}
    if args.system_prompt or args.verify_prompt:
        configs["paper + prompt file"] = AgentConfig.paper(system_prompt_file=args.system_prompt,
                                                           verify_prompt_file=args.verify_prompt)
    report = {name: asyncio.run(measure(cfg, args.height, args.width)) for name, cfg in configs.items()}
    out = {"image": f"{args.width}x{args.height}", "trajectories": list(TRAJECTORIES), "per_sample": report}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{len(TRAJECTORIES)} scripted trajectories on a {args.width}x{args.height} image; means per sample")
    head = ("setting", "sys words", "verify words", "requests", "prompt words", "prompt chars", "images", "MP",
            "visual tok")
    print(" | ".join(head))
    for name, r in report.items():
        print(f"{name} | {r['system_prompt_words']:.0f} | {r['verify_prompt_words']:.0f} | {r['requests']:.1f} | "
              f"{r['prompt_words']:.0f} | {r['prompt_chars']:.0f} | {r['images']:.1f} | {r['megapixels']:.2f} | "
              f"{r['visual_tokens']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
