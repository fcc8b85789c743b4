"""``sam3agent serve``: options checked before anything loads, the API key, slow clients cut off.

The last test starts the real CLI in a subprocess and holds 50 slow connections against it.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from serve_helpers import wait_healthy

import sam3agent.app.serve.cli as serve_cli
from sam3agent.app.cli import main as sam3agent_main
from sam3agent.app.serve.auth import API_KEY_ENV, is_loopback, resolve_api_key
from sam3agent.app.serve.cli import build_parser, main

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KEY = "k3y-for-the-tests-0123456789"


@pytest.fixture
def no_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the server gets as far as loading the agent."""

    def refuse(args: object) -> None:
        raise AssertionError("the backend was loaded before the options were checked")

    monkeypatch.setattr(serve_cli, "build_agent", refuse)
    monkeypatch.delenv(API_KEY_ENV, raising=False)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "http"])
def test_port_out_of_range_is_a_usage_error(port: str, no_loading: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["http", "--port", port])
    assert exit_info.value.code == 2
    assert "0-65535" in capsys.readouterr().err
    assert sam3agent_main(["serve", "http", "--port", port]) == 2


@pytest.mark.parametrize("server", [["http"], ["mcp", "--transport", "streamable-http"]])
def test_busy_port_exits_2_before_loading(server: list[str], busy_port: int, no_loading: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*server, "--port", str(busy_port)]) == 2
    assert f"cannot bind 127.0.0.1:{busy_port}" in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--header-timeout", "0"], ["--body-timeout", "-1"], ["--max-connections", "0"]])
def test_connection_options_must_be_positive(option: list[str], no_loading: None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["http", *option]) == 2
    assert option[0] in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["http", "--host", "0.0.0.0"],
    ["http", "--host", "192.168.10.20"],
    ["mcp", "--transport", "streamable-http", "--host", "::"],
])
def test_non_loopback_without_an_api_key_exits_2(argv: list[str], no_loading: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and API_KEY_ENV in err and "loopback" in err


@pytest.mark.parametrize("key", ["", "   ", "two words", "caf\u00e9"])
def test_unusable_api_keys_exit_2(key: str, no_loading: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["http", "--api-key", key]) == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and (not key.strip() or key not in err)


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert resolve_api_key(None) is None
    monkeypatch.setenv(API_KEY_ENV, KEY)
    assert resolve_api_key(None) == KEY
    assert resolve_api_key("from-the-flag") == "from-the-flag"


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("LOCALHOST", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.com", False), ("", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def _hold_slow_connections(port: int, count: int, give_up_s: float) -> list[float]:
    """Open ``count`` connections (half sending headers, half a body, a byte every 0.2 s).

    Returns:
        For each connection, the seconds until the server closed it.
    """
    body_headers = (b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n{")
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    start = time.monotonic()
    closed: dict[socket.socket, float] = {}
    try:
        for i, sock in enumerate(socks):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: " if i % 2 else body_headers)
        while len(closed) < count and time.monotonic() - start < give_up_s:
            live = [s for s in socks if s not in closed]
            for sock in live:
                try:
                    sock.send(b"a")
                except OSError:
                    closed[sock] = time.monotonic() - start
            readable, _, _ = select.select([s for s in live if s not in closed], [], [], 0.2)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    closed[sock] = time.monotonic() - start
    finally:
        for sock in socks:
            sock.close()
    return [closed.get(s, float("inf")) for s in socks]


def test_cli_server_cuts_off_slow_clients_and_requires_its_key(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]), API_KEY_ENV: KEY}
    command = [sys.executable, "-m", "sam3agent.serve", "http", "--_test-backend", "serve_helpers:build_backend",
               "--port", "0", "--request-timeout", "5", "--header-timeout", "1", "--body-timeout", "1",
               "--log-level", "info"]
    log = tmp_path / "server.log"
    with log.open("w+") as errlog:
        process = subprocess.Popen(command, stderr=errlog, text=True, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while not (match := re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text())):
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            port = int(match.group(1))
            with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                health = wait_healthy(client)
                seconds = _hold_slow_connections(port, 50, give_up_s=15)
                anonymous = client.get("/v1/info")
                keyed = client.get("/v1/info", headers={"Authorization": f"Bearer {KEY}"})
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log.read_text()
    assert health.status_code == 200
    assert max(seconds) < 1 + 3.5, sorted(seconds)[-5:]
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "unauthorized"
    assert keyed.status_code == 200 and keyed.json()["service"] == "sam3agent"
    assert KEY not in output
