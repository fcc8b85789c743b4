"""Batch runs: samples/s of ``Agent.arun_many`` and of ``sam3agent batch``'s runner at concurrency 1 and 16.

Every mode runs the same ``--samples`` items (distinct synthetic pictures, distinct queries) against
a fresh loopback OpenAI-compatible server (:class:`~sam3agent.llm.server.ScriptedOpenAIServer`) whose
every chat completion takes ``--latency`` seconds, with no slot limit. Its stateless policy (the
self-test's, :func:`sam3agent.app.selftest.scripted_policy`) plays a short, realistic trajectory per
sample: ``segment_phrase``, ``examine_each_mask`` over the two masks found (two verification calls
at once, one rejected), ``select_masks_and_return``: 3 main turns and 2 verifications, so 4 latencies
on a sample's critical path. SAM 3 is the fake engine (two fixed masks per picture, no model time;
default) or, with ``--engine tiny``, the real ``Sam3Engine`` on a tiny random model (real encoding,
caching and cross-request batching on CPU).

Modes:

* **arun_many**: ``async for done in agent.arun_many(items, concurrency=K)``, in memory;
* **batch**: the runner ``sam3agent batch`` uses (:func:`evals.runner.run_samples` over
  :class:`evals.run_pairs.PairTask`), into a fresh run directory: one fsynced ``samples.jsonl``
  line and one atomic mask PNG per sample, the thread pool widened as the command widens it.

One warm-up sample runs first, untimed (the first picture encoding imports transformers' resize
code, seconds on a small CPU). The ratio of samples/s at the highest to the lowest concurrency
cannot exceed the ratio of their numbers of waves (``ceil(N / K)``), 16x for 32 samples at 1 and 16.

Usage:
    python benchmarks/batch.py                                   # 32 samples, latency 0.2 s, K = 1 and 16
    python benchmarks/batch.py --latency 0.2 --samples 32 --json
    python benchmarks/batch.py --engine tiny --modes arun_many
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import ImageDraw

from evals.pairs import Pair
from evals.run_options import widen_default_executor
from evals.run_pairs import PairTask, Progress, StatusMetric
from evals.rundir import RunPaths
from evals.runner import RunSettings, run_samples
from sam3agent import Agent, AgentConfig
from sam3agent.app.selftest import scripted_policy, synthetic_image
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3agent.many import ManyResult
from sam3core.fake import FakeEngine
from sam3core.image import ImageHandle
from sam3core.protocol import SegmentEngine

logger = logging.getLogger("batch")

PHRASE = "cup"
MODES = ("arun_many", "batch")


def write_items(folder: Path, count: int) -> list[tuple[Path, str]]:
    """``count`` distinct pictures (the self-test's scene, a numbered marker moved per sample) and queries."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for k in range(count):
        image = synthetic_image(320, 240)
        draw = ImageDraw.Draw(image)
        x, y = 8 + (k * 37) % 280, 8 + (k * 23) % 60
        draw.rectangle([x, y, x + 24, y + 16], fill=((k * 53) % 256, (k * 97) % 256, (k * 151) % 256))
        path = folder / f"{k:04d}.png"
        image.save(path)
        items.append((path, f"the red cup in scene {k}"))
    return items


def fake_masks(handle: ImageHandle, phrase: str) -> list[np.ndarray]:
    """Two masks for any picture: the cup's region and a second box the verifier rejects."""
    h, w = handle.height, handle.width
    cup = np.zeros((h, w), bool)
    cup[int(0.40 * h) : int(0.67 * h), int(0.19 * w) : int(0.34 * w)] = True
    other = np.zeros((h, w), bool)
    other[int(0.46 * h) : int(0.67 * h), int(0.50 * w) : int(0.66 * w)] = True
    return [cup, other]


def build_engine(kind: str, folder: Path) -> SegmentEngine:
    """A fresh engine (a cold cache for the tiny model)."""
    if kind == "fake":
        return FakeEngine({PHRASE: fake_masks})
    from sam3core.engine import Sam3Engine
    from sam3core.testing import save_tiny_sam3

    model_dir = folder / "tiny-sam3"
    if not model_dir.exists():
        save_tiny_sam3(model_dir)
    return Sam3Engine.from_pretrained(model_dir, device="cpu")


def _config(kind: str) -> AgentConfig:
    # the tiny model's random scores sit near 0.25: threshold 0 and two masks keep its trajectory the fake's
    return AgentConfig(score_threshold=0.0, max_masks=2, overlap_iom=None) if kind == "tiny" else AgentConfig()


async def _arun_many(agent: Agent, items: Sequence[tuple[Path, str]], concurrency: int, folder: Path) -> Counter[str]:
    statuses: Counter[str] = Counter()
    async for done in agent.arun_many(items, concurrency=concurrency):
        statuses[done.result.status if isinstance(done, ManyResult) else f"error:{type(done.error).__name__}"] += 1
    return statuses


async def _batch(agent: Agent, items: Sequence[tuple[Path, str]], concurrency: int, folder: Path) -> Counter[str]:
    widen_default_executor(concurrency)
    pairs = [Pair(id=f"{k:04d}", image=path, image_text=path.name, query=query, line=k + 1)
             for k, (path, query) in enumerate(items)]
    tasks = [PairTask(p, agent, Progress()) for p in pairs]
    settings = RunSettings(concurrency=concurrency, progress=False)
    records = await run_samples(RunPaths(folder), tasks, metric=StatusMetric(), settings=settings)
    return Counter(r["status"] for r in records)


async def _warm_up(agent: Agent, image: Path) -> None:
    await agent.arun(image, "a warm-up query")


def run_mode(mode: str, concurrency: int, items: Sequence[tuple[Path, str]], args: argparse.Namespace,
             folder: Path) -> dict[str, Any]:
    """Run every item once in ``mode`` at ``concurrency``; samples/s from the wall time of the whole set."""
    with ScriptedOpenAIServer(scripted_policy(PHRASE), latency=args.latency, models=["scripted"]) as server:
        engine = build_engine(args.engine, folder)
        llm = OpenAICompatibleLLM(server.base_url, "scripted", max_retries=0)
        agent = Agent(llm, engine, _config(args.engine))
        body = _arun_many if mode == "arun_many" else _batch

        async def timed() -> tuple[float, Counter[str], int]:
            await _warm_up(agent, items[0][0])
            calls_before, started = server.call_count, time.perf_counter()
            statuses = await body(agent, items, concurrency, folder / f"{mode}-{concurrency}")
            seconds = time.perf_counter() - started
            await llm.aclose()
            return seconds, statuses, server.call_count - calls_before

        try:
            seconds, statuses, calls = asyncio.run(timed())
        finally:
            close = getattr(engine, "close", None)
            if close is not None:
                close()
    n = len(items)
    logger.info("%s at %d: %d samples in %.2f s", mode, concurrency, n, seconds)
    return {"mode": mode, "concurrency": concurrency, "samples": n, "seconds": seconds, "sps": n / seconds,
            "statuses": dict(sorted(statuses.items())), "llm_calls": calls,
            "max_llm_calls_in_flight": server.max_in_flight}


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("openai", "supervision", "torch", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def report(args: argparse.Namespace, runs: list[dict[str, Any]], levels: Sequence[int]) -> dict[str, Any]:
    """The JSON report: every run, and per mode the samples/s ratio of the highest to the lowest concurrency."""
    low, high = min(levels), max(levels)
    sps = {(r["mode"], r["concurrency"]): r["sps"] for r in runs}
    ratio = {m: sps[(m, high)] / sps[(m, low)] for m in args.modes}
    waves = math.ceil(args.samples / low) / math.ceil(args.samples / high)
    return {
        "settings": {"samples": args.samples, "latency_s": args.latency, "engine": args.engine,
                     "concurrency": list(levels), "modes": list(args.modes)},
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "platform": platform.platform()},
        "versions": _versions(),
        "runs": runs,
        "ratio": ratio,
        "ratio_bound": waves,
    }


def print_table(data: dict[str, Any]) -> None:
    """The runs side by side, with each mode's ratio."""
    levels = data["settings"]["concurrency"]
    print(f"{data['settings']['samples']} samples, LLM latency {data['settings']['latency_s']} s per call, "
          f"engine {data['settings']['engine']}; {data['machine']['cpu_count']} CPUs")
    print(f"{'mode':<10}" + "".join(f"{f'K={k} samples/s':>18}" for k in levels) + f"{'ratio':>9}{'bound':>8}")
    for mode in data["settings"]["modes"]:
        cells = "".join(f"{r['sps']:>18.2f}" for k in levels for r in data["runs"]
                        if r["mode"] == mode and r["concurrency"] == k)
        print(f"{mode:<10}{cells}{data['ratio'][mode]:>8.2f}x{data['ratio_bound']:>7.1f}x")


def _levels(text: str) -> list[int]:
    levels = sorted({int(v) for v in text.split(",")})
    if len(levels) < 2 or levels[0] < 1:
        raise argparse.ArgumentTypeError(f"--concurrency takes two or more integers >= 1, e.g. 1,16 (got {text!r})")
    return levels


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    if not modes or any(m not in MODES for m in modes):
        raise argparse.ArgumentTypeError(f"--modes takes a comma-separated subset of {', '.join(MODES)}")
    return modes


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=32, help="items per mode (default 32)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per chat completion (default 0.2)")
    parser.add_argument("--concurrency", type=_levels, default=[1, 16], help="levels, e.g. 1,16 (default)")
    parser.add_argument("--modes", type=_modes, default=MODES, help="arun_many,batch (default both)")
    parser.add_argument("--engine", choices=["fake", "tiny"], default="fake",
                        help="fake: fixed masks, no model time (default); tiny: a tiny random Sam3Engine on CPU")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run every mode at every level; print the table (or ``--json``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        folder = Path(tmp)
        items = write_items(folder / "images", args.samples)
        runs = [run_mode(mode, k, items, args, folder) for mode in args.modes for k in args.concurrency]
    data = report(args, runs, args.concurrency)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_table(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
