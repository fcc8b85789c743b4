"""from_pretrained: the real loading path offline, and errors that name the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam3core.engine import Sam3Engine
from sam3core.loading import Sam3LoadError, check_torch_stack, looks_like_path, resolve_device_dtype
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


@pytest.mark.parametrize("source", ["./sam3", "../models/sam3", "/models/sam3", "~/sam3", "models\\sam3",
                                    "C:/models/sam3", "C:sam3", "data/models/sam3", Path("/models/sam3")])
def test_paths_are_told_from_hub_ids(source: str | Path) -> None:
    assert looks_like_path(source)


@pytest.mark.parametrize("source", ["facebook/sam3", "sam3", "Qwen/Qwen2.5-VL-7B-Instruct", "org/name.v2"])
def test_hub_ids_are_not_paths(source: str) -> None:
    assert not looks_like_path(source)


def test_local_directory_spelled_as_a_hub_id_loads(tiny_sam3_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sam3`` names a hub repository unless a directory of that name is where we stand."""
    monkeypatch.chdir(tiny_sam3_dir.parent)
    with Sam3Engine.from_pretrained(tiny_sam3_dir.name, device="cpu") as engine:
        assert engine.device.type == "cpu"


def test_device_dtype_defaults_names_and_auto() -> None:
    import torch

    assert resolve_device_dtype("cpu", None) == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", torch.float16) == (torch.device("cpu"), torch.float16)
    assert resolve_device_dtype("cpu", "auto", allow_auto=True) == (torch.device("cpu"), "auto")
    with pytest.raises(ValueError, match="unknown dtype 'auto'"):
        resolve_device_dtype("cpu", "auto")
    with pytest.raises(ValueError, match="'auto'"):
        resolve_device_dtype("cpu", "float8", allow_auto=True)
