"""Engine speed and memory: cold call (new image), warm call (cached image, new phrase), batch of 8.

Usage:
    python benchmarks/engine.py --size tiny --json
    python benchmarks/engine.py --size full --device cpu
    python benchmarks/engine.py --size full --device cuda        # bf16 by default on cuda

Random weights: numbers measure speed and memory, not accuracy. Times are medians of ``--runs``
calls in a warmed-up process, with the GPU synchronised around each call.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from sam3core.engine import Sam3Engine
from sam3core.testing import build_random_sam3

WORDS = ["person", "cup", "dog", "car", "tree", "window", "chair", "bottle", "bird", "lamp", "shoe", "hat"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(engine: Sam3Engine, fn: Any) -> float:
    _sync(engine.device)
    start = time.perf_counter()
    fn()
    _sync(engine.device)
    return time.perf_counter() - start


def _image(i: int, height: int, width: int) -> np.ndarray:
    return np.random.RandomState(1000 + i).randint(0, 256, (height, width, 3), dtype=np.uint8)


def run(size: str, device: str | None, dtype: str | None, runs: int, height: int, width: int) -> dict[str, Any]:
    """Measure and return the numbers (see the module docstring)."""
    t0 = time.perf_counter()
    model, processor = build_random_sam3(size)  # type: ignore[arg-type]
    engine = Sam3Engine(model, processor, device=device, dtype=dtype)
    build_s = time.perf_counter() - t0
    if engine.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(engine.device)
    counter = iter(range(10_000))

    def phrase() -> str:
        n = next(counter)
        return f"{WORDS[n % len(WORDS)]} {n}"

    engine.segment(_image(-1, height, width), phrase())  # warm-up (kernels, allocator)
    runs_before = engine.stats.vision_encoder_runs
    cold = [_timed(engine, lambda i=i: engine.segment(_image(i, height, width), phrase())) for i in range(runs)]
    cold_runs = engine.stats.vision_encoder_runs - runs_before
    handle = engine.prepare(_image(0, height, width))
    runs_before = engine.stats.vision_encoder_runs
    warm = [_timed(engine, lambda: engine.segment(handle, phrase())) for _ in range(runs)]
    batch8 = [_timed(engine, lambda: engine.segment(handle, [phrase() for _ in range(8)])) for _ in range(runs)]
    warm_runs = engine.stats.vision_encoder_runs - runs_before
    if engine.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(engine.device) / 1024**3
        device_name = torch.cuda.get_device_name(engine.device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB (Linux)
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    engine.close()
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    return {
        "size": size,
        "device": device_name,
        "dtype": str(engine.dtype).replace("torch.", ""),
        "image": f"{width}x{height}",
        "runs": runs,
        "cold_s": cold_s,
        "warm_s": warm_s,
        "batch8_s": statistics.median(batch8),
        "warm_over_cold": warm_s / cold_s,
        "vision_encoder_runs": {"cold_calls": cold_runs, "warm_and_batch_calls": warm_runs},
        "peak_mem_gb": peak,
        "peak_mem_kind": "cuda max_memory_allocated" if engine.device.type == "cuda" else "process max RSS",
        "build_s": build_s,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="bfloat16 / float16 / float32 (default: bf16 on cuda)")
    parser.add_argument("--runs", type=int, default=None, help="timed calls per measurement (median)")
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    on_cpu_full = args.size == "full" and (args.device == "cpu" or not torch.cuda.is_available())
    runs = args.runs or (1 if on_cpu_full else 10)
    result = run(args.size, args.device, args.dtype, runs, args.height, args.width)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"SAM 3 engine, {result['size']} model, {result['dtype']} on {result['device']}, "
          f"image {result['image']}, median of {runs}")
    rows = [("cold call (new image, 1 phrase)", result["cold_s"]), ("warm call (cached image, new phrase)",
            result["warm_s"]), ("batch of 8 phrases (cached image)", result["batch8_s"])]
    for name, seconds in rows:
        print(f"  {name:<40} {seconds * 1000:10.1f} ms")
    print(f"  {'warm / cold':<40} {result['warm_over_cold']:10.3f}")
    print(f"  {'vision encoder runs':<40} {result['vision_encoder_runs']}")
    print(f"  {'peak memory (' + result['peak_mem_kind'] + ')':<40} {result['peak_mem_gb']:10.2f} GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
