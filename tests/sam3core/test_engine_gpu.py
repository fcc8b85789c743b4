"""The engine on a CUDA device in bf16 (skipped without a GPU; see tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam3core.engine import Sam3Engine

pytestmark = pytest.mark.gpu


def test_cuda_defaults_to_bf16_and_caches(tiny_sam3_dir: Path) -> None:
    import torch

    image = np.random.RandomState(0).randint(0, 256, (301, 177, 3), dtype=np.uint8)
    with Sam3Engine.from_pretrained(tiny_sam3_dir) as engine:
        assert engine.device.type == "cuda" and engine.dtype == torch.bfloat16
        first = engine.segment(image, "cat", score_threshold=0.0)
        again = engine.segment(image, "cat", score_threshold=0.0)
        assert first.mask.shape[1:] == (301, 177)
        np.testing.assert_array_equal(first.mask, again.mask)
        np.testing.assert_array_equal(first.confidence, again.confidence)
        assert engine.stats.vision_encoder_runs == 1


def test_cuda_batch_matches_single_within_tolerance(tiny_sam3_dir: Path) -> None:
    image = np.random.RandomState(1).randint(0, 256, (240, 320, 3), dtype=np.uint8)
    with Sam3Engine.from_pretrained(tiny_sam3_dir, dtype="float32") as engine:
        batch = engine.segment(image, ["cat", "dog"], score_threshold=0.0, dedup_iou=None)
        single = engine.segment(image, "dog", score_threshold=0.0, dedup_iou=None)
        n = min(len(batch[1]), len(single))
        np.testing.assert_allclose(np.sort(batch[1].confidence)[-n:], np.sort(single.confidence)[-n:], atol=1e-4)
