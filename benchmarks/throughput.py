"""Throughput: many agents sharing one SAM 3 against an inference server with slots and latency.

A loopback OpenAI-compatible server (:class:`~sam3agent.llm.server.ScriptedOpenAIServer`) behaves
like a busy vLLM: every chat completion takes ``--latency`` seconds while holding one of ``--slots``
slots, and requests beyond them queue. Its replies come from a deterministic policy that reads each
request and plays a scripted, realistic trajectory per sample: 1-3 ``segment_phrase`` calls, one
``examine_each_mask`` over 4-8 masks (one verification call per mask, some rejected), sometimes a
selection with an invalid id (a model mistake that costs a turn), then ``select_masks_and_return``:
3-6 main turns. SAM 3 is the real :class:`~sam3core.engine.Sam3Engine` with random weights (tiny or
full size), so image encoding, caching and batching are real; ``score_threshold=0``, duplicate
suppression off (random weights give overlapping masks) and a ``max_masks`` drawn per sample in
4..8 give the examine step its 4-8 masks.

Modes, all in one run over the same synthetic ReasonSeg-format set (``<id>.jpg`` + ``<id>.json``,
distinct images, written to a temporary folder and read back with :mod:`evals.reasonseg`):

* **reference-style**: how the reference agent works. The engine keeps no image or text features
  (``cache_bytes=0``: every ``segment_phrase`` re-encodes the image), no cross-request batching,
  verifications one after another (``verify_concurrency=1``), one sample at a time.
* **sam3agent at concurrency K** (``--concurrency``, default 1, 4, 16): one shared engine with its
  feature cache and cross-request batching, concurrent verifications, K samples in flight (asyncio).
* **reference-style at the largest K**: the same parallelism as sam3agent's widest mode, so the gain
  from the engine and the loop is separated from the gain from parallelism.

Every mode starts from a fresh engine (cold cache) and a fresh server. The server can complete at
most ``slots / latency`` calls per second, so no mode can beat ``ceiling_sps`` = that rate divided by
the LLM calls a sample needs; ``ceiling_ratio`` is that bound over the reference-style rate.

``--batch-sweep 1,2,4,8,16`` adds the engine's cross-request batching gain vs the batch cap: for
each cap B, single-phrase requests on distinct, already-encoded images are all submitted at once to
an engine with ``max_batch=B``; requests/s and the speed-up over B=1 are reported (and peak GPU
memory on CUDA). ``--sweep-only`` skips the agent modes.

Usage:
    python benchmarks/throughput.py --size tiny                              # latency 1 s, 8 slots
    python benchmarks/throughput.py --size tiny --latency 0.2 --samples 50 --json
    python benchmarks/throughput.py --size full --device cuda --batch-sweep 1,2,4,8,16 --json

Random weights: the numbers measure speed, not accuracy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import importlib.metadata
import json
import logging
import platform
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch

from evals.reasonseg import ReasonSegSample, load_samples
from sam3agent import Agent, AgentConfig, AgentResult
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3core.engine import DEFAULT_CACHE_BYTES, DEFAULT_TEXT_CACHE_BYTES, Sam3Engine
from sam3core.testing import build_random_sam3

logger = logging.getLogger("throughput")

# (noun, phrases the model tries in order): the first is the plain noun, then alternatives.
OBJECTS: list[tuple[str, tuple[str, str, str]]] = [
    ("cup", ("cup", "mug", "container")),
    ("dog", ("dog", "puppy", "animal")),
    ("car", ("car", "vehicle", "automobile")),
    ("chair", ("chair", "seat", "furniture")),
    ("bottle", ("bottle", "flask", "drink")),
    ("lamp", ("lamp", "light", "fixture")),
    ("bird", ("bird", "pigeon", "animal")),
    ("book", ("book", "notebook", "paper")),
    ("shoe", ("shoe", "sneaker", "footwear")),
    ("umbrella", ("umbrella", "parasol", "canopy")),
    ("bicycle", ("bicycle", "bike", "cycle")),
    ("plant", ("plant", "pot plant", "flower")),
]
COLORS: list[tuple[str, tuple[int, int, int]]] = [
    ("red", (220, 40, 40)), ("green", (40, 170, 60)), ("blue", (40, 80, 220)), ("yellow", (230, 210, 40)),
    ("orange", (240, 140, 30)), ("purple", (140, 60, 180)), ("white", (240, 240, 240)), ("black", (25, 25, 25)),
]
SHORT_TEMPLATES = ["the {color} {noun}", "{color} {noun} on the left"]
LONG_TEMPLATES = [
    "Which {noun} in this picture is {color}, the one someone would most likely pick up first?",
    "If you had to point at the {color} {noun} that is closest to the camera, which one would it be?",
]
SIZES = [(480, 640), (600, 800), (768, 1024), (1024, 768)]  # (height, width)
VERIFY_MARK = re.compile(r"Candidate: mask (\d+)\.")
QUERY_LINE = re.compile(r"Query: (.+)")


# ----------------------------------------------------------------------------- dataset and trajectories


@dataclass(frozen=True)
class Trajectory:
    """What the scripted model does for one sample.

    Attributes:
        phrases: The ``segment_phrase`` prompts, in order (1-3).
        max_masks: ``AgentConfig.max_masks`` of the sample (4-8): the masks examine sees.
        mistake: Whether the model first selects an invalid mask id (costs one turn).
        rejects: Mask ids (>= 2) the verifier rejects; mask 1 is always accepted and selected.
    """

    phrases: tuple[str, ...]
    max_masks: int
    mistake: bool
    rejects: frozenset[int]

    @property
    def main_turns(self) -> int:
        """Planned main-loop turns: the segments, the examine, the (mistaken) selections."""
        return len(self.phrases) + 2 + int(self.mistake)


def _query(k: int, rng: random.Random) -> tuple[str, bool, int, int]:
    """A unique query for sample ``k``: (text, is_sentence, object index, colour index)."""
    obj, col = k % len(OBJECTS), (k // len(OBJECTS)) % len(COLORS)
    long = rng.random() < 0.5
    templates = LONG_TEMPLATES if long else SHORT_TEMPLATES
    tpl = (k // (len(OBJECTS) * len(COLORS))) % len(templates)
    text = templates[tpl].format(color=COLORS[col][0], noun=OBJECTS[obj][0])
    if k >= len(OBJECTS) * len(COLORS) * len(templates):
        text += f" (scene {k})"
    return text, long, obj, col


def write_dataset(root: Path, count: int, seed: int = 0) -> dict[str, Trajectory]:
    """Write ``count`` synthetic ReasonSeg samples into ``root``; return each query's trajectory.

    Each image is a distinct scene (a gradient background, 3-6 coloured shapes, mild noise) at one of
    a few realistic sizes; the JSON has ``text`` (one query), ``is_sentence`` and a ``target``
    polygon around the queried shape, as ReasonSeg's files do.
    """
    root.mkdir(parents=True, exist_ok=True)
    plans: dict[str, Trajectory] = {}
    for k in range(count):
        rng = random.Random(seed * 100_003 + k)
        query, long, obj, col = _query(k, rng)
        height, width = SIZES[k % len(SIZES)]
        np_rng = np.random.default_rng(seed * 100_003 + k)
        base = np.array([rng.randint(60, 200) for _ in range(3)], np.float32)
        ramp = np.linspace(0.6, 1.2, width, dtype=np.float32)[None, :, None]
        canvas = np.clip(base[None, None, :] * ramp + np_rng.normal(0, 6, (height, width, 3)), 0, 255)
        canvas = np.ascontiguousarray(canvas.astype(np.uint8))
        target: list[list[float]] = []
        for i in range(rng.randint(3, 6)):
            w, h = rng.randint(width // 10, width // 3), rng.randint(height // 10, height // 3)
            x0, y0 = rng.randint(0, width - w - 1), rng.randint(0, height - h - 1)
            color = COLORS[col][1] if i == 0 else COLORS[rng.randrange(len(COLORS))][1]
            if i == 0 or rng.random() < 0.5:
                cv2.rectangle(canvas, (x0, y0), (x0 + w, y0 + h), color, -1)
                if i == 0:
                    target = [[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]]
            else:
                cv2.ellipse(canvas, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, color, -1)
        stem = f"scene_{k:04d}"
        cv2.imwrite(str(root / f"{stem}.jpg"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        shapes = [{"label": "target", "points": target, "shape_type": "polygon"}]
        data = {"text": [query], "is_sentence": long, "shapes": shapes}
        (root / f"{stem}.json").write_text(json.dumps(data), encoding="utf-8")
        max_masks = rng.randint(4, 8)
        plans[query] = Trajectory(
            phrases=OBJECTS[obj][1][: rng.randint(1, 3)],
            max_masks=max_masks,
            mistake=rng.random() < 0.3,
            rejects=frozenset(i for i in range(2, max_masks + 1) if rng.random() < 0.3),
        )
    return plans


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def _tool(name: str, **params: Any) -> str:
    return f"<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"


class TrajectoryPolicy:
    """The scripted model: reads each request and answers with the sample's next planned action.

    Verification requests are recognised by their ``Candidate: mask N.`` line and answered with the
    plan's verdict for mask N; main-loop requests by the query in their first user turn, answered
    with the plan's next action (the count of main calls seen for that query is the turn number).
    Thread-safe: the server calls it from one thread per connection.
    """

    def __init__(self, plans: dict[str, Trajectory]) -> None:
        self.plans = plans
        self._turns: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body["messages"]
        found = QUERY_LINE.search(_text_of(messages[1]))
        if found is None or found.group(1).strip() not in self.plans:
            return "I cannot tell what to segment. " + _tool("report_no_mask")
        query = found.group(1).strip()
        plan = self.plans[query]
        verify = VERIFY_MARK.search(_text_of(messages[-1]))
        if verify is not None:
            mask_id = int(verify.group(1))
            verdict = "Reject" if mask_id in plan.rejects else "Accept"
            return f"Mask {mask_id} is checked against the query. <verdict>{verdict}</verdict>"
        with self._lock:
            turn = self._turns[query]
            self._turns[query] += 1
        actions: list[str] = [
            f"The query asks for a {p}-like object; try a plain noun. " + _tool("segment_phrase", text_prompt=p)
            for p in plan.phrases
        ]
        actions.append("Several candidates look alike; check each one. " + _tool("examine_each_mask"))
        if plan.mistake:
            actions.append("Mask 99 looks right. " + _tool("select_masks_and_return", final_answer_masks=[99]))
        actions.append("Mask 1 is the answer. " + _tool("select_masks_and_return", final_answer_masks=[1]))
        return actions[min(turn, len(actions) - 1)]


# ----------------------------------------------------------------------------- one mode


@dataclass
class ModeResult:
    """Measurements of one mode."""

    name: str
    reference: bool
    concurrency: int
    samples: int
    wall_s: float
    llm_calls: int
    max_in_flight: int
    vision_encoder_runs: int
    forwards: int
    batched_requests: int
    largest_batch: int
    sample_latency_s: float
    statuses: dict[str, int]
    main_turns: dict[int, int]
    segment_calls: dict[int, int]
    examined_masks: dict[int, int]
    plan_mismatches: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sps(self) -> float:
        """Samples per second."""
        return self.samples / self.wall_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe view (with samples/s)."""
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out["sps"] = self.sps
        out["llm_calls_per_sample"] = self.llm_calls / self.samples
        return out


def _hist(values: Sequence[int]) -> dict[int, int]:
    return dict(sorted(collections.Counter(values).items()))


async def run_mode(name: str, *, reference: bool, concurrency: int, samples: Sequence[ReasonSegSample],
                   plans: dict[str, Trajectory], model: Any, processor: Any, args: argparse.Namespace) -> ModeResult:
    """Run every sample through the agent in one mode and measure it (see the module docstring)."""
    engine = Sam3Engine(
        model, processor, device=args.device, dtype=args.dtype,
        cache_bytes=0 if reference else DEFAULT_CACHE_BYTES,
        text_cache_bytes=0 if reference else DEFAULT_TEXT_CACHE_BYTES,
        max_batch=1 if reference else args.max_batch, batch_window_ms=args.batch_window_ms, name=name,
        dedup_iou=None,  # random weights give overlapping masks; keep them so examine sees 4-8
    )
    server = ScriptedOpenAIServer(TrajectoryPolicy(plans), latency=args.latency, slots=args.slots).start()
    llm = OpenAICompatibleLLM(server.base_url, "scripted", timeout=600, max_retries=0)
    limit = asyncio.Semaphore(concurrency)
    # overlap_iom=None: the agent's overlap removal would drop most of the random model's
    # overlapping masks, and the scripted trajectories need exactly max_masks of them
    configs = {q: AgentConfig(score_threshold=0.0, max_masks=p.max_masks, timeout_s=None, overlap_iom=None,
                              verify_concurrency=1 if reference else args.verify_concurrency)
               for q, p in plans.items()}

    async def one(sample: ReasonSegSample) -> AgentResult:
        async with limit:
            agent = Agent(llm, engine, configs[sample.query])
            return await agent.arun(sample.image_path, sample.query)

    logger.info("%s: %d samples at concurrency %d ...", name, len(samples), concurrency)
    try:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(s) for s in samples))
        wall = time.perf_counter() - start
    finally:
        await llm.aclose()
        server.stop()
        engine.close()
    stats = engine.stats
    turns, segments, examined, mismatches = [], [], [], 0
    for sample, result in zip(samples, results, strict=True):
        plan = plans[sample.query]
        turns.append(result.totals.turns)
        segments.append(sum(1 for s in result.steps if s.call and s.call["name"] == "segment_phrase"))
        examined.extend(len(s.verifications) for s in result.steps if s.verifications)
        mismatches += int(result.totals.turns != plan.main_turns or result.status != "answered")
    mode = ModeResult(
        name=name, reference=reference, concurrency=concurrency, samples=len(samples), wall_s=wall,
        llm_calls=server.call_count, max_in_flight=server.max_in_flight,
        vision_encoder_runs=stats.vision_encoder_runs, forwards=stats.forwards,
        batched_requests=stats.batched_requests, largest_batch=stats.largest_batch,
        sample_latency_s=statistics.mean(r.totals.wall_seconds for r in results),
        statuses=dict(collections.Counter(r.status for r in results)), main_turns=_hist(turns),
        segment_calls=_hist(segments), examined_masks=_hist(examined), plan_mismatches=mismatches,
    )
    if mismatches:
        logger.warning("%s: %d sample(s) did not follow their planned trajectory", name, mismatches)
    logger.info("%s: %d samples in %.1f s (%.3f samples/s), %d LLM calls, %d vision-encoder runs",
                name, mode.samples, wall, mode.sps, mode.llm_calls, mode.vision_encoder_runs)
    return mode


# ----------------------------------------------------------------------------- batch sweep


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


async def batch_sweep(model: Any, processor: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Cross-request batching gain vs the batch cap (see the module docstring)."""
    caps: list[int] = args.batch_sweep
    images = [np.random.RandomState(5000 + i).randint(0, 256, (args.sweep_height, args.sweep_width, 3),
                                                       dtype=np.uint8) for i in range(max(caps))]
    phrases = [OBJECTS[i % len(OBJECTS)][0] for i in range(args.sweep_requests)]
    rows: list[dict[str, Any]] = []
    for cap in caps:
        engine = Sam3Engine(model, processor, device=args.device, dtype=args.dtype, max_batch=cap,
                            batch_window_ms=args.batch_window_ms, cache_bytes=args.sweep_cache_gb * 1024**3,
                            name=f"sweep-{cap}")
        try:
            handles = [engine.encode(img) for img in images]
            engine.segment(handles[0], sorted(set(phrases)))  # text features cached, kernels warm
            if engine.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(engine.device)
            forwards_before = engine.stats.forwards
            times = [await _burst(engine, handles, phrases) for _ in range(args.sweep_runs)]
            seconds = statistics.median(times)
            stats = engine.stats
            row: dict[str, Any] = {
                "max_batch": cap, "requests": len(phrases), "seconds": seconds,
                "requests_per_s": len(phrases) / seconds, "ms_per_request": 1000 * seconds / len(phrases),
                "forwards": (stats.forwards - forwards_before) / args.sweep_runs,
                "largest_batch": stats.largest_batch, "vision_encoder_runs": stats.vision_encoder_runs,
            }
            if engine.device.type == "cuda":
                row["peak_mem_gb"] = torch.cuda.max_memory_allocated(engine.device) / 1024**3
        finally:
            engine.close()
        rows.append(row)
        logger.info("batch sweep: max_batch=%d -> %.1f requests/s", cap, row["requests_per_s"])
    base = rows[0]["requests_per_s"]
    for row in rows:
        row["speedup_vs_first"] = row["requests_per_s"] / base
    return rows


async def _burst(engine: Sam3Engine, handles: Sequence[Any], phrases: Sequence[str]) -> float:
    """Seconds to answer one single-phrase request per phrase, image i mod len(handles), all at once."""
    _sync(engine.device)
    start = time.perf_counter()
    await asyncio.gather(*(engine.asegment(handles[i % len(handles)], p) for i, p in enumerate(phrases)))
    _sync(engine.device)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- driver


def _version() -> str:
    try:
        return importlib.metadata.version("sam3agent")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (source checkout)"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the model, write the data, run every mode; return the JSON-safe report."""
    t0 = time.perf_counter()
    model, processor = build_random_sam3(args.size)
    probe = Sam3Engine(model, processor, device=args.device, dtype=args.dtype, name="warmup")
    probe.segment(np.zeros((64, 64, 3), np.uint8), "warm up")  # kernels, allocator, lazy imports
    device, dtype = probe.device, probe.dtype
    probe.close()
    build_s = time.perf_counter() - t0
    report: dict[str, Any] = {
        "benchmark": "throughput",
        "size": args.size,
        "device": _device_name(device),
        "dtype": str(dtype).replace("torch.", ""),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__, "sam3agent": _version()},
        "build_s": build_s,
    }
    if args.batch_sweep:
        report["batch_sweep"] = await batch_sweep(model, processor, args)
    if args.sweep_only:
        return report
    concurrency = sorted(set(args.concurrency))
    widest = concurrency[-1]
    with tempfile.TemporaryDirectory(prefix="sam3agent-throughput-") as tmp:
        plans = write_dataset(Path(tmp), args.samples, seed=args.seed)
        samples = load_samples(tmp)
        digests = {hashlib.sha1(s.image_path.read_bytes()).hexdigest() for s in samples}
        if len(digests) != len(samples):
            raise RuntimeError("internal error: the synthetic images are not distinct")
        sequential = samples[: args.sequential_samples] if args.sequential_samples else samples
        modes: list[ModeResult] = []
        modes.append(await run_mode("reference-style", reference=True, concurrency=1, samples=sequential,
                                    plans=plans, model=model, processor=processor, args=args))
        for k in concurrency:
            modes.append(await run_mode("sam3agent", reference=False, concurrency=k,
                                        samples=sequential if k == 1 else samples, plans=plans, model=model,
                                        processor=processor, args=args))
        if widest > 1:
            modes.append(await run_mode("reference-style", reference=True, concurrency=widest, samples=samples,
                                        plans=plans, model=model, processor=processor, args=args))
    reference_sps = modes[0].sps
    ours = {m.concurrency: m for m in modes if not m.reference}
    equal = next((m for m in modes[1:] if m.reference), modes[0])
    calls_per_sample = statistics.mean(m.llm_calls / m.samples for m in modes)
    ceiling_sps = args.slots / args.latency / calls_per_sample if args.latency > 0 else float("inf")
    report.update({
        "reference_sps": reference_sps,
        "sps": {str(k): m.sps for k, m in ours.items()},
        "ratio": {str(k): m.sps / reference_sps for k, m in ours.items()},
        "equal_concurrency": widest,
        "reference_sps_equal_concurrency": equal.sps,
        "equal_concurrency_ratio": ours[widest].sps / equal.sps,
        "llm_calls_per_sample": calls_per_sample,
        "ceiling_sps": ceiling_sps,
        "ceiling_ratio": ceiling_sps / reference_sps,
        "settings": {"samples": args.samples, "sequential_samples": modes[0].samples,
                     "latency_s": args.latency, "slots": args.slots, "concurrency": concurrency,
                     "verify_concurrency": args.verify_concurrency, "max_batch": args.max_batch,
                     "batch_window_ms": args.batch_window_ms, "seed": args.seed, "score_threshold": 0.0,
                     "max_masks": "4-8 per sample", "image_sizes": [f"{w}x{h}" for h, w in SIZES]},
        "modes": [m.to_dict() for m in modes],
    })
    return report


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _print_table(report: dict[str, Any]) -> None:
    print(f"sam3agent throughput: {report['size']} SAM 3 ({report['dtype']}) on {report['device']}")
    if "batch_sweep" in report:
        print("cross-request batching (single-phrase requests on distinct cached images, all submitted at once)")
        print(f"  {'max_batch':>9} {'req/s':>9} {'ms/req':>9} {'speed-up':>9} {'forwards':>9}")
        for row in report["batch_sweep"]:
            print(f"  {row['max_batch']:>9} {row['requests_per_s']:>9.1f} {row['ms_per_request']:>9.2f} "
                  f"{row['speedup_vs_first']:>8.2f}x {row['forwards']:>9.1f}")
    if "modes" not in report:
        return
    s = report["settings"]
    print(f"{s['samples']} samples ({s['sequential_samples']} in the concurrency-1 modes), LLM latency "
          f"{s['latency_s']:g} s, {s['slots']} server slots")
    print(f"  {'mode':<16} {'conc':>4} {'samples/s':>10} {'vs ref':>8} {'wall s':>8} {'s/sample':>9} "
          f"{'LLM calls':>9} {'ViT runs':>8} {'forwards':>8} {'batched':>7}")
    ref = report["reference_sps"]
    for m in report["modes"]:
        print(f"  {m['name']:<16} {m['concurrency']:>4} {m['sps']:>10.3f} {m['sps'] / ref:>7.2f}x "
              f"{m['wall_s']:>8.1f} {m['sample_latency_s']:>9.2f} {m['llm_calls']:>9} "
              f"{m['vision_encoder_runs']:>8} {m['forwards']:>8} {m['batched_requests']:>7}")
    k = report["equal_concurrency"]
    print(f"  equal concurrency {k}: sam3agent / reference-style = {report['equal_concurrency_ratio']:.2f}x")
    print(f"  server ceiling ({s['slots']} slots / {s['latency_s']:g} s / "
          f"{report['llm_calls_per_sample']:.1f} calls per sample) = {report['ceiling_sps']:.3f} "
          f"samples/s = {report['ceiling_ratio']:.2f}x reference-style")
    first = report["modes"][1]
    print(f"  trajectories: main turns {first['main_turns']}, segment calls {first['segment_calls']}, "
          f"masks examined {first['examined_masks']}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="bfloat16 / float16 / float32 (default: bf16 on cuda)")
    parser.add_argument("--samples", type=int, default=50, help="synthetic ReasonSeg samples (>= 50 for a report)")
    parser.add_argument("--sequential-samples", type=int, default=None, metavar="N",
                        help="run the concurrency-1 modes on the first N samples only (default: all)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per LLM call")
    parser.add_argument("--slots", type=int, default=8, help="completions the server runs at once")
    parser.add_argument("--concurrency", type=_ints, default=[1, 4, 16], help="samples in flight (default 1,4,16)")
    parser.add_argument("--verify-concurrency", type=int, default=8, help="sam3agent's verifications in flight")
    parser.add_argument("--max-batch", type=int, default=8, help="sam3agent engine's cross-request batch cap")
    parser.add_argument("--batch-window-ms", type=float, default=2.0, help="engine batching window")
    parser.add_argument("--seed", type=int, default=0, help="dataset and trajectory seed")
    parser.add_argument("--batch-sweep", type=_ints, default=None, metavar="LIST",
                        help="also measure cross-request batching at these batch caps, e.g. 1,2,4,8,16")
    parser.add_argument("--sweep-only", action="store_true", help="run only the batch sweep")
    parser.add_argument("--sweep-requests", type=int, default=64, help="requests per sweep measurement")
    parser.add_argument("--sweep-runs", type=int, default=3, help="sweep repetitions (median)")
    parser.add_argument("--sweep-height", type=int, default=768)
    parser.add_argument("--sweep-width", type=int, default=1024)
    parser.add_argument("--sweep-cache-gb", type=int, default=4, help="engine cache budget in the sweep")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (progress is always on stderr)")
    args = parser.parse_args(argv)
    if args.samples < 1 or (args.sequential_samples is not None and args.sequential_samples < 1):
        parser.error("--samples and --sequential-samples must be >= 1")
    if args.sweep_only and not args.batch_sweep:
        parser.error("--sweep-only needs --batch-sweep")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)  # per-mode progress on stderr
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
