"""Fixtures of the serve tests: an allowed root with an image, a file outside it, and a symlink out."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import PolicyLLM, fake_engine, png

from sam3agent import Agent
from sam3core.fake import FakeEngine


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """``root/cat.png`` (64x48), ``root/sub/dog.png``, ``root/link.png`` -> ``../secret.png`` (outside)."""
    folder = tmp_path / "root"
    (folder / "sub").mkdir(parents=True)
    (folder / "cat.png").write_bytes(png())
    (folder / "sub" / "dog.png").write_bytes(png(seed=1))
    (tmp_path / "secret.png").write_bytes(png(seed=2))
    (folder / "link.png").symlink_to(tmp_path / "secret.png")
    return folder


@pytest.fixture
def engine() -> FakeEngine:
    """The fake engine: 'cat' -> the central quarter of the image."""
    return fake_engine()


@pytest.fixture
def llm() -> PolicyLLM:
    """The stateless scripted MLLM."""
    return PolicyLLM()


@pytest.fixture
def agent(llm: PolicyLLM, engine: FakeEngine) -> Agent:
    """An agent over the policy MLLM and the fake engine."""
    return Agent(llm, engine)
