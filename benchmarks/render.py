"""Rendering speed: what the agent spends per turn outside the LLM and SAM 3.

Usage:
    python benchmarks/render.py              # 1024x1024, 8 random blob masks, a table
    python benchmarks/render.py --json       # the same numbers as one JSON object
    python benchmarks/render.py --size 4000x3000 --masks 20 --runs 20

Times are medians of ``--runs`` calls after one warm-up call, in this process, on the CPU.
``per_turn`` is ``render_marks + encode_image(jpeg)``, what every ``segment_phrase`` turn costs;
``share_of_1s_turn`` puts it against a 1 s LLM turn (the product goal is < 3%).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import supervision as sv

from sam3agent.render import encode_image, render_marks, render_single, render_zoom_pair
from sam3core.postprocess import detections_from_masks


def make_scene(height: int, width: int, n_masks: int, seed: int) -> tuple[np.ndarray, sv.Detections]:
    """A smooth random RGB image and ``n_masks`` irregular, partly overlapping blob masks."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    masks = []
    while len(masks) < n_masks:
        cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        radius = rng.uniform(0.04, 0.2) * min(height, width)
        noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), radius / 3)
        field = 1 - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / radius + 8 * noise
        mask = field > 0
        if mask.any():
            masks.append(mask)
    return image, detections_from_masks(np.stack(masks), rng.uniform(0.3, 1.0, n_masks), "blob")


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU (this process, all threads) milliseconds of ``fn`` over ``runs`` calls.

    One warm-up call comes first. The CPU time is the steadier number on a busy machine.
    """
    fn()
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def run(height: int, width: int, n_masks: int, runs: int, seed: int) -> dict[str, Any]:
    """Measure and return the numbers (see the module docstring)."""
    image, detections = make_scene(height, width, n_masks, seed)
    marks = render_marks(image, detections)
    pil_image = marks.copy()
    timings = {
        "render_marks": median_ms(lambda: render_marks(image, detections), runs),
        "encode_image_jpeg": median_ms(lambda: encode_image(marks), runs),
        "render_single": median_ms(lambda: render_single(image, detections, 0), runs),
        "render_zoom_pair": median_ms(lambda: render_zoom_pair(image, detections, 0), runs),
        "render_marks_from_pil": median_ms(lambda: render_marks(pil_image, detections), runs),
        "encode_image_png": median_ms(lambda: encode_image(marks, fmt="png"), max(3, runs // 5)),
    }
    per_turn, per_turn_cpu = median_ms(lambda: encode_image(render_marks(image, detections)), runs)
    encoded = encode_image(marks)
    return {
        "image": f"{width}x{height}",
        "masks": n_masks,
        "runs": runs,
        "ms": {k: round(v[0], 2) for k, v in timings.items()},
        "cpu_ms": {k: round(v[1], 2) for k, v in timings.items()},
        "per_turn_ms": round(per_turn, 2),
        "per_turn_cpu_ms": round(per_turn_cpu, 2),
        "share_of_1s_turn_pct": round(per_turn / 10, 2),
        "encoded": f"{encoded.width}x{encoded.height} jpeg {len(encoded.data) / 1024:.0f} KiB",
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "opencv_threads": cv2.getNumThreads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1024x1024", help="WIDTHxHEIGHT of the image (default 1024x1024)")
    parser.add_argument("--masks", type=int, default=8, help="number of random blob masks (default 8)")
    parser.add_argument("--runs", type=int, default=50, help="timed calls per function (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    result = run(height, width, args.masks, args.runs, args.seed)
    if args.json:
        print(json.dumps(result))
        return
    print(f"render benchmark: {result['image']} image, {result['masks']} masks, median of {result['runs']} runs")
    print(f"{'function':<24}{'wall ms':>9}{'cpu ms':>9}")
    for name, ms in result["ms"].items():
        print(f"{name:<24}{ms:>9.2f}{result['cpu_ms'][name]:>9.2f}")
    print(f"{'per turn (marks+jpeg)':<24}{result['per_turn_ms']:>9.2f}{result['per_turn_cpu_ms']:>9.2f}"
          f"   = {result['share_of_1s_turn_pct']:.2f}% of a 1 s LLM turn (goal < 3%)")  # fmt: skip
    print(f"encoded for the LLM: {result['encoded']}")


if __name__ == "__main__":
    main()
