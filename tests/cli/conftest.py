"""Fixtures of the CLI tests: a picture on disk and a scripted OpenAI-compatible endpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sam3agent.app.selftest import scripted_policy, synthetic_image
from sam3agent.llm.server import ScriptedOpenAIServer


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    """The self-test's drawn scene as a PNG file."""
    path = tmp_path / "scene.png"
    synthetic_image(160, 120).save(path)
    return path


@pytest.fixture
def server() -> Iterator[ScriptedOpenAIServer]:
    """A live endpoint serving model ``scripted``: segment, examine (mask 2 rejected), select mask 1."""
    with ScriptedOpenAIServer(scripted_policy(), models=["scripted"]) as live:
        yield live


@pytest.fixture
def dead_url() -> str:
    """The URL of an endpoint that was started and stopped: nothing answers there."""
    stopped = ScriptedOpenAIServer().start()
    stopped.stop()
    return stopped.base_url


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path`` (where default output folders are created)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
