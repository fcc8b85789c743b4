"""from_pretrained: the real loading path offline, and errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam3core.engine import Sam3Engine
from sam3core.loading import Sam3LoadError, check_torch_stack
from sam3core.testing import build_random_sam3, save_tiny_sam3


def test_tiny_model_round_trips_offline(tmp_path: Path) -> None:
    """Same seed, same weights; saved + loaded through from_pretrained gives the same masks."""
    path = save_tiny_sam3(tmp_path / "m", seed=3)
    assert (path / "config.json").exists()
    model, processor = build_random_sam3("tiny", seed=3)
    img = np.random.RandomState(0).randint(0, 256, (64, 48, 3), np.uint8)
    with Sam3Engine.from_pretrained(path, device="cpu") as loaded, Sam3Engine(model, processor) as built:
        a = loaded.segment(img, "cat", score_threshold=0.0)
        b = built.segment(img, "cat", score_threshold=0.0)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.confidence, b.confidence)


def test_missing_hub_weights_message_names_the_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Sam3LoadError) as info:
        Sam3Engine.from_pretrained("facebook/sam3", local_files_only=True)
    msg = str(info.value)
    assert "facebook/sam3" in msg
    assert "licence" in msg and "hf auth login" in msg and "local directory" in msg


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(Sam3LoadError, match="directory not found"):
        Sam3Engine.from_pretrained(str(tmp_path / "nowhere"))


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(Sam3LoadError, match=r"no config\.json"):
        Sam3Engine.from_pretrained(tmp_path)


def test_broken_torch_pair_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.ops

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("operator torchvision::roi_align does not exist")

    monkeypatch.setattr(torchvision.ops, "roi_align", broken)
    with pytest.raises(Sam3LoadError, match="matching pair"):
        check_torch_stack()


def test_versions_reported() -> None:
    versions = check_torch_stack()
    assert set(versions) == {"torch", "torchvision", "transformers"}


def test_bad_device_and_dtype(tiny_sam3_dir: Path) -> None:
    import torch

    with pytest.raises(ValueError, match="dtype"):
        Sam3Engine.from_pretrained(tiny_sam3_dir, dtype="float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Sam3Engine.from_pretrained(tiny_sam3_dir, device="cuda")
