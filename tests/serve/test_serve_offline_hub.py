"""``sam3agent serve`` with the default ``--sam3 facebook/sam3`` and no reachable hub: one error, at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hub_helpers import closed_port_url


@pytest.mark.parametrize("server", ["http", "mcp"])
def test_serve_fails_fast_when_the_hub_is_unreachable(server: str, tmp_path: Path) -> None:
    """Before: exit 1 after ~220 s and ~200 stderr lines of huggingface_hub retry warnings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=closed_port_url(), TRANSFORMERS_VERBOSITY="error")
    argv = [sys.executable, "-m", "sam3agent.serve", server, "--device", "cpu"]
    if server == "http":
        argv += ["--port", "0"]
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"sam3agent serve {server} still loading SAM 3 after 90 s (huggingface_hub's retries)")
    assert done.returncode == 1, done.stderr[-2000:]
    assert time.perf_counter() - started < 30  # mostly the interpreter importing torch
    assert "Retrying in" not in done.stderr and "thrown while requesting" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "cannot load the backend" in line]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "cannot reach the Hugging Face hub at http://127.0.0.1:" in errors[0]
    assert "'facebook/sam3' is not in the local hub cache" in errors[0] and "hf download facebook/sam3" in errors[0]
