"""A user's first minutes: no reachable hub, progress bars in logs, a model the endpoint does not list."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_helpers import RETRY_NOISE, closed_port_url

from sam3agent import backends as bo
from sam3agent.app.cli import main
from sam3agent.app.selftest import scripted_policy
from sam3agent.llm.server import ScriptedOpenAIServer


def closed_hub_env(hf_home: Path) -> dict[str, str]:
    """Online mode (CI sets HF_HUB_OFFLINE=1), an empty hub cache, and a hub where nothing answers."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    return {**env, "HF_HOME": str(hf_home), "HF_ENDPOINT": closed_port_url(), "TRANSFORMERS_VERBOSITY": "error"}


def run_args(image: Path, url: str, *extra: str) -> list[str]:
    return ["run", str(image), "the red cup", "--llm-base-url", url, "--model", "scripted", "--device", "cpu",
            "--score-threshold", "0", "--max-masks", "3", "--llm-retries", "0", *extra]


def test_run_fails_fast_when_the_hub_is_unreachable(image_file, server, tmp_path) -> None:
    """Before: exit 2 after ~224 s and ~200 stderr lines of retry warnings, then a 'gated' message."""
    argv = [sys.executable, "-m", "sam3agent.cli", *run_args(image_file, server.base_url)]
    started = time.perf_counter()
    try:
        done = subprocess.run(argv, cwd=tmp_path, env=closed_hub_env(tmp_path / "hf"), capture_output=True,
                              text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("sam3agent run still loading SAM 3 after 90 s (huggingface_hub's retries)")
    seconds = time.perf_counter() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert seconds < 30, seconds  # mostly the interpreter importing torch; the load itself takes < 1 s
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: cannot reach the Hugging Face hub at http://127.0.0.1:")
    assert "'facebook/sam3' is not in the local hub cache" in lines[0] and "--sam3 /path/to/sam3" in lines[0]
    assert not any(noise in done.stderr for noise in RETRY_NOISE)


# ----------------------------------------------------------------------------- progress bars


@pytest.fixture
def restore_progress_bars() -> Iterator[None]:
    """Put transformers' (and huggingface_hub's) progress-bar switch back as it was."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    yield
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()


def test_no_weight_progress_bars_when_stderr_is_not_a_terminal(image_file, server, tiny_sam3_dir, tmp_path,
                                                               capsys, restore_progress_bars) -> None:
    """Before: stderr carried transformers' 'Loading weights: 100%|...' bar even when it was a log file."""
    code = main(run_args(image_file, server.base_url, "--sam3", str(tiny_sam3_dir), "--out", str(tmp_path / "a")))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Loading weights" not in err and "it/s]" not in err


def test_weight_progress_bars_with_verbose(image_file, server, tiny_sam3_dir, tmp_path, capsys,
                                           restore_progress_bars) -> None:
    code = main(run_args(image_file, server.base_url, "--sam3", str(tiny_sam3_dir), "--out", str(tmp_path / "b"),
                         "-v"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Loading weights" in err


class _Stream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("flags", "tty", "shown"), [
    ({}, False, False), ({}, True, True), ({"verbose": 1}, False, True), ({"log_level": "debug"}, False, True),
    ({"log_level": "info"}, False, False),
])
def test_progress_bar_rule(monkeypatch, flags: dict, tty: bool, shown: bool) -> None:
    import argparse

    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    assert bo.show_progress_bars(argparse.Namespace(**flags)) is shown


@pytest.mark.parametrize("command", ["run", "doctor"])
def test_verbose_after_the_command_is_accepted(command: str, capsys) -> None:
    """``sam3agent run IMAGE QUERY -v`` (before: 'unrecognized arguments: -v', exit 2)."""
    assert main([command, "--help"]) == 0
    assert "-v, --verbose" in capsys.readouterr().out


# ----------------------------------------------------------------------------- a model the endpoint does not list


def test_doctor_warns_about_an_unlisted_model(tiny_sam3_dir, capsys, monkeypatch) -> None:
    """Before: ``FAIL ... it does not serve 'other-model'`` and exit 1, while ``run`` only warned."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with ScriptedOpenAIServer(models=["scripted", "qwen-small"]) as live:
        code = main(["doctor", "--llm-base-url", live.base_url, "--model", "other-model", "--sam3",
                     str(tiny_sam3_dir)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if "LLM endpoint" in line)
    assert lines[index].startswith("WARN") and "does not list 'other-model'" in lines[index]
    assert "it serves: scripted, qwen-small" in lines[index]
    assert "pass --model one of those names" in lines[index + 1]
    assert code == 0, out


def test_run_warns_the_same_way_and_continues(image_file, tiny_sam3_dir, tmp_path, capsys) -> None:
    """A server that lists one name but answers to any (a gateway, an alias): the warning, then the run."""
    with ScriptedOpenAIServer(scripted_policy(), models=None) as live:  # lists ["scripted"], accepts any name
        argv = run_args(image_file, live.base_url, "--sam3", str(tiny_sam3_dir), "--out", str(tmp_path / "c"))
        argv[argv.index("scripted")] = "other-model"
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert "does not list 'other-model'" in warning and "it serves: scripted" in warning
    assert "pass --model one of those names" in warning
    assert "status   answered" in out


def test_run_with_an_unlisted_model_that_the_server_refuses(image_file, tiny_sam3_dir, tmp_path, capsys) -> None:
    with ScriptedOpenAIServer(scripted_policy(), models=["scripted"]) as live:  # 404 for any other name
        argv = run_args(image_file, live.base_url, "--sam3", str(tiny_sam3_dir), "--out", str(tmp_path / "d"))
        argv[argv.index("scripted")] = "other-model"
        code = main(argv)
    err = capsys.readouterr().err
    assert code == 3, err
    assert any(line.startswith("warning:") and "does not list 'other-model'" in line for line in err.splitlines())
    assert "the server lists these models: scripted" in err


def test_run_with_a_local_llm_fails_fast_when_the_hub_is_unreachable(image_file, tiny_sam3_dir, tmp_path) -> None:
    """``--llm-local HUB_ID`` not cached, hub unreachable: one error naming --llm-local, within seconds.

    Before: SAM 3 loaded, then the in-process MLLM's first call spent minutes in huggingface_hub's retries.
    """
    argv = [sys.executable, "-m", "sam3agent.cli", "run", str(image_file), "the red cup", "--sam3",
            str(tiny_sam3_dir), "--llm-local", "someone/tiny-vlm", "--device", "cpu"]
    try:
        done = subprocess.run(argv, cwd=tmp_path, env=closed_hub_env(tmp_path / "hf"), capture_output=True,
                              text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("sam3agent run --llm-local still loading after 90 s (huggingface_hub's retries)")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert "cannot reach the Hugging Face hub at http://127.0.0.1:" in lines[0]
    assert "'someone/tiny-vlm' is not in the local hub cache" in lines[0] and "--llm-local /path/to/model" in lines[0]
