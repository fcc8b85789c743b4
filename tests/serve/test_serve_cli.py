"""``sam3agent serve``: options, exit codes, and the HTTP API started by the CLI in a subprocess."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from serve_helpers import png, wait_healthy

from sam3agent.app.serve.cli import build_parser, main

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.mark.parametrize("server", ["mcp", "http"])
def test_help_hides_the_test_hook(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([server, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--allowed-root" in out and "--max-upload-mb" in out and "--llm-base-url" in out
    assert "_test" not in out and "test-backend" not in out
    assert ("--transport" in out) == (server == "mcp")


def test_defaults() -> None:
    args = build_parser().parse_args(["http"])
    assert args.host == "127.0.0.1" and args.allowed_root == [] and args.allow_urls is False
    assert build_parser().parse_args(["mcp"]).transport == "stdio"


def test_bad_options_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["http", "--allowed-root", str(tmp_path / "missing")]) == 2
    assert "not an existing directory" in capsys.readouterr().err
    assert main(["http", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["ftp"])
    assert exit_info.value.code == 2


def test_unloadable_sam3_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["http", "--sam3", str(tmp_path / "no-weights"), "--device", "cpu", "--port", "0"])
    assert code == 1
    assert "cannot load the backend" in capsys.readouterr().err


def test_http_server_from_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    command = [sys.executable, "-m", "sam3agent.serve", "http", "--_test-backend", "serve_helpers:build_backend",
               "--port", "0", "--allowed-root", str(tmp_path), "--log-level", "warning"]
    (tmp_path / "cat.png").write_bytes(png())
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        assert match, line + process.stderr.read()
        url = match.group(1)
        with httpx2.Client(base_url=url, timeout=30) as client:
            health = wait_healthy(client)
            by_path = client.post("/v1/segment", json={"image_path": "cat.png", "query": "cat"})
            inline = client.post("/v1/segment", json={"image": base64.b64encode(png()).decode(), "query": "cat"})
            info = client.get("/v1/info").json()
        assert health.json() == {"status": "ok"}
        assert by_path.status_code == 200 and by_path.json()["status"] == "answered"
        assert inline.json()["status"] == "answered"
        assert info["limits"]["file_paths"] is True and info["sam3"]["source"] == "serve_helpers:build_backend"
        process.send_signal(signal.SIGTERM)  # graceful stop, exit 0 (Ctrl-C too)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
