"""``benchmarks/parity.py --photos`` at small size: a real photo, real phrases, each side's own preprocessing.

The full-size run (4 photos x 3 phrases, CLIP's BPE) is recorded in ``benchmarks/RESULTS.md``; this checks
the same code path in seconds with the small build and a letter-level tokenizer.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def photos(parity: ModuleType) -> ModuleType:
    pytest.importorskip("skimage")  # the photos come from scikit-image (a dev extra)
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("parity_photos", REPO / "benchmarks" / "parity_photos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_photo_end_to_end_meets_the_targets(photos: ModuleType) -> None:
    report = photos.run_photos("small", photos=("chelsea",), phrases=("cat", "coffee cup"), k=10)
    summary = report["summary"]
    assert summary["pairs"] == 2 and summary["ids_equal"] and summary["targets_met"], summary
    assert summary["topk_score_max_diff"] < 1e-5 and summary["pixel_max_diff"] < 1e-6
    assert report["vision_encoder_runs_ours"] == 1  # one encoding for both phrases
    (entry,) = report["photos"]
    assert entry["size_hw"] == [300, 451]
    for row in entry["phrases"].values():
        assert row["ids"][0] == 62 and row["ids"][-1] == 63 and len(row["ids"]) > 3  # letters between BOS/EOS
        assert len(row["full_iou_logits"]) == 10
        # Meta's order gives Meta's pixels up to logits within rounding of 0; the default order differs more
        assert row["pixels_differing_logits"] <= 10 < row["pixels_differing_probabilities"]
