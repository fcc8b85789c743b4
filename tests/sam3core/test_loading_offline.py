"""from_pretrained with no reachable hub: one clear error within seconds, or the local hub cache.

Each test runs the load in a fresh interpreter: huggingface_hub reads ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``
and ``HF_HOME`` when it is imported, and this test process already imported it with
``HF_HUB_OFFLINE=1`` (tests/conftest.py). The hub is a closed loopback port, so a connection attempt is
refused at once and any retry shows up as a warning on stderr and as seconds of backoff.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_helpers import RETRY_NOISE, closed_port_url

from sam3core.loading import Sam3LoadError
from sam3core.testing import save_tiny_sam3

LOAD = """
import json, sys, time
import torch, torchvision, transformers  # imported first: the timer measures the load alone
from transformers import Sam3Model, Sam3Processor
from sam3core.engine import Sam3Engine
from sam3core.loading import Sam3LoadError
started = time.perf_counter()
try:
    with Sam3Engine.from_pretrained(sys.argv[1], device="cpu"):
        outcome = "loaded"
except Sam3LoadError as e:
    outcome = "error: " + str(e)
print(json.dumps({"seconds": time.perf_counter() - started, "outcome": outcome}))
"""
COMMIT = "0123456789abcdef0123456789abcdef01234567"



def closed_hub_env(hf_home: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The environment of a machine whose hub does not answer: online mode, an empty cache of its own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    return {**env, "HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint, "TRANSFORMERS_VERBOSITY": "error", **extra}


def load_in_subprocess(source: str, env: dict[str, str], timeout: float = 60.0) -> tuple[dict, str]:
    """Run ``Sam3Engine.from_pretrained(source)`` in a fresh interpreter: its JSON outcome and its stderr."""
    try:
        done = subprocess.run([sys.executable, "-c", LOAD, source], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"from_pretrained({source!r}) still running after {timeout:g} s; stderr:\n{err[-1500:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def fake_hub_cache(hf_home: Path, repo_id: str, model_dir: Path) -> Path:
    """Lay ``model_dir``'s files out as huggingface_hub caches ``repo_id`` at revision main."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_unreachable_hub_fails_fast_with_one_message(tmp_path: Path) -> None:
    """Before: ~220 s of 5 retries per file (~100 warning lines), then a misleading 'gated' message."""
    endpoint = closed_port_url()
    result, err = load_in_subprocess("facebook/sam3", closed_hub_env(tmp_path / "hf", endpoint))
    assert result["seconds"] < 5.0, result
    message = result["outcome"]
    assert message.startswith("error: "), message
    assert f"cannot reach the Hugging Face hub at {endpoint}" in message
    assert "'facebook/sam3' is not in the local hub cache" in message
    assert "hf download facebook/sam3" in message and "--sam3 /path/to/sam3" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert not any(noise in err for noise in RETRY_NOISE), err[-2000:]


def test_unreachable_hub_loads_from_the_local_hub_cache(tmp_path: Path) -> None:
    """A tiny model in the hub cache layout loads with no network and no retry warnings."""
    hf_home = tmp_path / "hf"
    fake_hub_cache(hf_home, "facebook/sam3", save_tiny_sam3(tmp_path / "tiny"))
    result, err = load_in_subprocess("facebook/sam3", closed_hub_env(hf_home, closed_port_url()))
    assert result["outcome"] == "loaded", result
    assert result["seconds"] < 10.0, result
    assert not any(noise in err for noise in RETRY_NOISE), err[-2000:]


def test_hub_offline_env_loads_from_the_local_hub_cache(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    fake_hub_cache(hf_home, "facebook/sam3", save_tiny_sam3(tmp_path / "tiny"))
    result, err = load_in_subprocess("facebook/sam3", closed_hub_env(hf_home, closed_port_url(), HF_HUB_OFFLINE="1"))
    assert result["outcome"] == "loaded", result
    assert not any(noise in err for noise in RETRY_NOISE), err[-2000:]


def test_hub_offline_and_not_cached_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the 'gated checkpoint' message, which does not mention HF_HUB_OFFLINE or the cache."""
    from sam3core.engine import Sam3Engine

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Sam3LoadError) as info:
        Sam3Engine.from_pretrained("nobody/no-such-sam3")
    msg = str(info.value)
    assert "'nobody/no-such-sam3' is not in the local hub cache" in msg
    assert "HF_HUB_OFFLINE is set" in msg and "hf download nobody/no-such-sam3" in msg
    assert "local directory" in msg


def test_probe_reports_a_closed_port_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from huggingface_hub import constants

    from sam3core.loading import probe_hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read at import; this process imported it offline
    endpoint = closed_port_url()
    started = time.perf_counter()
    problem = probe_hub(endpoint, timeout=2.0)
    assert problem is not None and "ConnectError" in problem
    assert time.perf_counter() - started < 2.0
