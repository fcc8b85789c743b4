"""Shared fixtures: the tiny random SAM 3 saved once per session and loaded through from_pretrained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when torch sees no CUDA device."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SAM 3 saved with save_pretrained (model + processor)."""
    from sam3core.testing import save_tiny_sam3

    return save_tiny_sam3(tmp_path_factory.mktemp("tiny-sam3"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_sam3_dir: Path):
    """A Sam3Engine over the tiny model on CPU (shared; tests must not rely on its counters)."""
    from sam3core.engine import Sam3Engine

    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu")
    yield engine
    engine.close()


@pytest.fixture
def fresh_engine(tiny_sam3_dir: Path):
    """A new engine per test, so counters and caches start at zero."""
    from sam3core.engine import Sam3Engine

    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu")
    yield engine
    engine.close()
