"""``python -m sam3core``: an offline self-check of the engine on a tiny random SAM 3.

It builds a tiny random model, saves it, loads it back through ``Sam3Engine.from_pretrained``
(the same path real weights take), segments a synthetic image and checks the caching behaviour.
Random weights: it proves the installation works, not that masks are meaningful.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Run the self-check; print PASS/FAIL per stage; exit 0 when all pass."""
    parser = argparse.ArgumentParser(prog="python -m sam3core", description=__doc__)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from sam3core.engine import Sam3Engine
    from sam3core.loading import check_torch_stack
    from sam3core.testing import save_tiny_sam3

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - older transformers
        pass
    failures = 0

    def stage(name: str, ok: bool, detail: str = "") -> None:
        nonlocal failures
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {name}{'  ' + detail if detail else ''}")

    versions = check_torch_stack()
    stage("torch / torchvision / transformers import and work together",
          True, ", ".join(f"{k} {v}" for k, v in versions.items()))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = save_tiny_sam3(tmp)
        engine = Sam3Engine.from_pretrained(path, device=args.device)
        stage("tiny SAM 3 saved and loaded through from_pretrained", True,
              f"{engine.device}, {engine.dtype}, {time.perf_counter() - start:.1f} s")
        image = np.random.RandomState(0).randint(0, 256, (333, 517, 3), dtype=np.uint8)
        det = engine.segment(image, "a red cup", score_threshold=0.0)
        stage("masks at the original resolution", det.mask.shape[1:] == (333, 517) and len(det) > 0,
              f"{len(det)} masks of {det.mask.shape[1]}x{det.mask.shape[2]}")
        batch = engine.segment(image, ["cup", "person", "table"], score_threshold=0.0)
        again = engine.segment(image, "a red cup", score_threshold=0.0)
        stage("image encoded once for 5 phrases", engine.stats.vision_encoder_runs == 1,
              f"vision encoder runs: {engine.stats.vision_encoder_runs}, batched forward of {len(batch)}")
        stage("cached call is bit-identical", bool(np.array_equal(det.mask, again.mask)
                                                      and np.array_equal(det.confidence, again.confidence)))
        engine.close()
    print("all checks passed" if failures == 0 else f"{failures} check(s) failed")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
