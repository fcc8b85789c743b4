"""``sam3agent run`` end to end: tiny SAM 3, a scripted endpoint over HTTP, files, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sam3agent.app import cli
from sam3agent.app.cli import main
from sam3agent.llm.server import ScriptedOpenAIServer

FILES = ("overlay.png", "mask.png", "result.json", "trajectory.json", "trajectory.html")
SAVED = re.compile(r"^saved\s+(\S.*)$", re.MULTILINE)


def run_args(image: Path, url: str, sam3: Path, *extra: str) -> list[str]:
    return ["run", str(image), "the red cup", "--llm-base-url", url, "--model", "scripted", "--sam3", str(sam3),
            "--device", "cpu", "--score-threshold", "0", "--max-masks", "3", "--llm-retries", "0", *extra]


def check_saved(folder: Path) -> dict:
    assert folder.is_absolute() and folder.is_dir()
    assert all((folder / name).is_file() for name in FILES)
    assert list((folder / "images").iterdir())
    return json.loads((folder / "result.json").read_text())


def test_two_concurrent_runs_in_subprocesses(image_file, server, tiny_sam3_dir, tmp_path) -> None:
    """The real entry point twice at once: both succeed, each prints its own absolute folder."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    argv = [sys.executable, "-m", "sam3agent.cli", *run_args(image_file, server.base_url, tiny_sam3_dir)]
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    folders = [Path(SAVED.search(out).group(1)) for out, _ in outputs]
    assert folders[0] != folders[1]
    for folder, (out, _) in zip(folders, outputs, strict=True):
        assert folder.parent == (tmp_path / "sam3agent-runs").resolve()
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", folder.name)
        data = check_saved(folder)
        assert data["status"] == "answered" and len(data["detections"]) == 1
        assert "status   answered" in out and "phrases  'red cup'" in out and "turns    3" in out
    main_calls = [b for b in server.requests if "Candidate: mask" not in json.dumps(b["messages"][-1])]
    assert len(main_calls) == 6


def test_run_in_process_with_out(image_file, server, tiny_sam3_dir, tmp_path, capsys) -> None:
    out_dir = tmp_path / "my run"
    code = main(run_args(image_file, server.base_url, tiny_sam3_dir, "--out", str(out_dir)))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert Path(SAVED.search(out).group(1)) == out_dir.resolve()
    data = check_saved(out_dir)
    assert data["status"] == "answered"
    assert data["detections"][0]["rle"]["size"] == [120, 160]
    assert "<section class=\"turn\" id=\"turn-3\">" in (out_dir / "trajectory.html").read_text()


def test_dead_endpoint_exits_3_before_loading_sam3(image_file, dead_url, in_tmp, capsys) -> None:
    code = main(run_args(image_file, dead_url, in_tmp / "no-such-sam3"))
    out, err = capsys.readouterr()
    assert code == 3
    assert f"nothing answers at {dead_url}" in err and "vllm serve" in err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert not (in_tmp / "sam3agent-runs").exists()


def test_backend_failing_mid_run_exits_3(image_file, tiny_sam3_dir, in_tmp, capsys) -> None:
    with ScriptedOpenAIServer([{"status": 500, "message": "the GPU fell over"}], models=["scripted"]) as failing:
        code = main(run_args(image_file, failing.base_url, tiny_sam3_dir))
        url = failing.base_url
    err = capsys.readouterr().err
    assert code == 3
    assert url in err and "failed after 1 attempt(s)" in err and "the GPU fell over" in err
    assert "Traceback" not in err


def test_budget_exhausted_exits_1_and_still_saves(image_file, tiny_sam3_dir, in_tmp, capsys) -> None:
    with ScriptedOpenAIServer(lambda body: "I am not sure what to do.", models=["scripted"]) as vague:
        code = main(run_args(image_file, vague.base_url, tiny_sam3_dir, "--max-turns", "2"))
    out = capsys.readouterr().out
    assert code == 1
    data = check_saved(Path(SAVED.search(out).group(1)))
    assert data["status"] == "budget_exhausted" and data["totals"]["failures"] == {"no_tool_call": 2}
    assert "2 model mistakes" in out


def test_missing_sam3_weights_exit_2(image_file, server, in_tmp, capsys) -> None:
    code = main(run_args(image_file, server.base_url, in_tmp / "nowhere" / "sam3"))
    err = capsys.readouterr().err
    assert code == 2
    assert "SAM 3 directory not found" in err


@pytest.mark.parametrize("kind", ["missing", "not an image", "empty"])
def test_bad_image_exits_2(kind, dead_url, in_tmp, capsys) -> None:
    path = in_tmp / "picture.png"
    if kind == "not an image":
        path.write_text("hello")
    elif kind == "empty":
        path.write_bytes(b"")
    code = main(run_args(path, dead_url, in_tmp))
    err = capsys.readouterr().err
    assert code == 2
    assert str(path) in err and err.startswith("error: ")


@pytest.mark.parametrize("argv", [[], ["run"], ["run", "x.png"], ["frobnicate"],
                                  ["run", "x.png", "q", "--score-threshold", "2"],
                                  ["run", "x.png", "q", "--protocol", "smoke-signals"]])
def test_usage_errors_exit_2(argv, capsys) -> None:
    assert main(argv) == 2
    assert "usage: sam3agent" in capsys.readouterr().err


def test_empty_query_exits_2(image_file, dead_url, capsys) -> None:
    assert main(["run", str(image_file), "   ", "--llm-base-url", dead_url]) == 2
    assert "QUERY is empty" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["doctor", "--help"], ["selftest", "--help"]])
def test_help_everywhere(argv, capsys) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sam3agent")


def test_help_documents_exit_codes_and_env(capsys) -> None:
    main(["run", "--help"])
    out = capsys.readouterr().out
    assert "exit codes: 0 ok" in out and "3" in out
    assert "SAM3AGENT_LLM_BASE_URL" in out and "SAM3AGENT_SAM3" in out


def test_new_run_dir_never_reuses_a_folder(tmp_path, monkeypatch) -> None:
    names = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(cli.secrets, "token_hex", lambda n: next(names))
    monkeypatch.setattr(cli.time, "strftime", lambda fmt: "20250101-000000")
    first, second = cli.new_run_dir(tmp_path / "runs"), cli.new_run_dir(tmp_path / "runs")
    assert first.name == "20250101-000000-aaaaaa" and second.name == "20250101-000000-bbbbbb"
    assert first.is_absolute() and second.is_dir()


def test_eval_delegates_to_evals(capsys, monkeypatch) -> None:
    seen: list[list[str]] = []
    import evals.cli

    monkeypatch.setattr(evals.cli, "main", lambda argv, prog: seen.append([prog, *argv]) or 7)
    assert main(["eval", "reasonseg", "score", "--data", "d"]) == 7
    assert seen == [["sam3agent eval", "reasonseg", "score", "--data", "d"]]


def test_eval_help_is_the_evals_help(capsys) -> None:
    assert main(["eval", "--help"]) == 0
    assert "reasonseg" in capsys.readouterr().out


def test_serve_missing_is_a_clean_error(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "sam3agent.app.serve.cli", None)
    assert main(["serve", "--help"]) == 2
    err = capsys.readouterr().err
    assert "`sam3agent serve` is not available" in err and "Traceback" not in err


def test_serve_delegates(monkeypatch) -> None:
    import types

    seen: list[list[str]] = []
    fake = types.ModuleType("sam3agent.app.serve.cli")
    fake.main = lambda argv: seen.append(list(argv)) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sam3agent.app.serve.cli", fake)
    assert main(["-v", "serve", "http", "--port", "0"]) == 0
    assert seen == [["http", "--port", "0"]]


def test_replay_from_cache_needs_no_endpoint(image_file, server, dead_url, tiny_sam3_dir, tmp_path, capsys) -> None:
    cache = tmp_path / "completions.jsonl"
    first = main(run_args(image_file, server.base_url, tiny_sam3_dir, "--llm-cache", str(cache),
                          "--out", str(tmp_path / "recorded")))
    assert first == 0 and cache.is_file()
    capsys.readouterr()
    again = main(run_args(image_file, dead_url, tiny_sam3_dir, "--llm-cache", str(cache), "--llm-cache-mode",
                          "replay", "--out", str(tmp_path / "replayed")))
    out, err = capsys.readouterr()
    assert again == 0, err
    recorded, replayed = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("recorded", "replayed"))
    assert replayed["detections"] == recorded["detections"] and "view     " in out


def test_out_that_is_a_file_exits_2(image_file, dead_url, tmp_path, capsys) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(run_args(image_file, dead_url, tmp_path, "--out", str(blocker))) == 2
    assert "is not a folder" in capsys.readouterr().err
