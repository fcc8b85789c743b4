"""Hostile or odd input gets a clear 4xx (never a 500 or an opaque MCP error), and the API key holds.

Everything goes over real HTTP on 127.0.0.1 (uvicorn in a background thread), or through the MCP
tool and the OpenAI tool handler directly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from serve_helpers import ServerThread, error_message, png

from sam3agent import Agent, as_openai_tool
from sam3agent.app.serve import ServeLimits, build_mcp_server, create_app
from sam3agent.app.serve.mcp_server import call_segment_image, streamable_http_app
from sam3core.fake import FakeEngine

KEY = "s3cret-Key_for.tests~0123456789"
LONG_NAME = "a" * 300 + ".png"


@pytest.fixture
def odd_root(root: Path) -> Path:
    """The allowed root, with ``loop`` (a symlink to itself) and ``a -> b -> a`` added."""
    (root / "loop").symlink_to(root / "loop")
    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    return root


@contextmanager
def serving(agent: Agent, api_key: str | None = None, **limits: Any) -> Iterator[httpx2.Client]:
    """A client of the HTTP API served for ``agent``."""
    app = create_app(agent, ServeLimits(**limits), api_key=api_key)
    with ServerThread(app) as server, httpx2.Client(base_url=server.url, timeout=30) as client:
        yield client


_error = error_message


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------------ odd paths and bodies


@pytest.mark.parametrize("path", ["loop", "a", "sub/../loop", LONG_NAME, f"sub/{LONG_NAME}", "cat\x00.png"])
def test_odd_image_paths_are_4xx_over_http(agent: Agent, engine: FakeEngine, odd_root: Path, path: str) -> None:
    with serving(agent, allowed_roots=(odd_root,)) as client:
        response = client.post("/v1/segment", json={"image_path": path, "query": "cat"})
        form = client.post("/v1/segment", data={"image_path": path, "query": "cat"},
                           files={"unused": ("x.txt", b"", "text/plain")}) if "\x00" not in path else response
        after = client.get("/healthz")
    assert 400 <= response.status_code < 500, response.text
    assert 400 <= form.status_code < 500, form.text
    assert after.status_code == 200 and engine.calls == []


def test_symlink_loop_and_long_name_messages(agent: Agent, odd_root: Path) -> None:
    with serving(agent, allowed_roots=(odd_root,)) as client:
        loop = _error(client.post("/v1/segment", json={"image_path": "loop", "query": "cat"}), 400, "bad_request")
        long = _error(client.post("/v1/segment", json={"image_path": LONG_NAME, "query": "cat"}),
                      400, "bad_request")
    assert "symlink loop" in loop and "'loop'" in loop
    assert "too long" in long and str(odd_root) not in long


@pytest.mark.parametrize("spec", ["loop", LONG_NAME])
async def test_odd_image_paths_are_tool_errors_over_mcp_and_openai(agent: Agent, odd_root: Path,
                                                                  spec: str) -> None:
    limits = ServeLimits(allowed_roots=(odd_root,))
    result = await call_segment_image(agent, limits, spec, "cat")
    assert result.is_error
    assert json.loads(result.content[0].text)["error"]["type"] == "bad_request"  # type: ignore[union-attr]
    _, handler = as_openai_tool(agent, allowed_roots=[odd_root])
    answer = await handler({"image": spec, "query": "cat"})
    assert not answer.ok and answer.json["error"]["type"] == "bad_request"


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b', "query": "cat"}',
    b'{"image": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": {"m": {"n": {"o": '
    b'{"p": {"q": 1}}}}}}}}}}}}}}}}}}',
])
def test_deeply_nested_json_is_400(agent: Agent, body: bytes) -> None:
    with serving(agent) as client:
        response = client.post("/v1/segment", content=body, headers={"content-type": "application/json"})
        after = client.get("/healthz")
    assert "nested" in _error(response, 400, "bad_request")
    assert after.status_code == 200


def test_brackets_and_escapes_inside_strings_are_not_nesting(agent: Agent) -> None:
    query = 'the "cat" [{' * 40 + "\\" + '\\"}'
    body = json.dumps({"image": _b64(png()), "query": query}).encode()
    with serving(agent) as client:
        response = client.post("/v1/segment", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["query"] == query.strip()


def test_multipart_with_both_image_and_image_path_is_refused_like_json(agent: Agent, engine: FakeEngine,
                                                                       root: Path) -> None:
    with serving(agent, allowed_roots=(root,)) as client:
        form = client.post("/v1/segment", files={"image": ("x.png", png(), "image/png")},
                           data={"query": "cat", "image_path": "cat.png"})
        as_json = client.post("/v1/segment", json={"image": _b64(png()), "image_path": "cat.png", "query": "cat"})
    form_message = _error(form, 400, "bad_request")
    assert form_message == _error(as_json, 400, "bad_request")
    assert "image" in form_message and "image_path" in form_message
    assert engine.calls == []


@pytest.mark.parametrize("data", [b"hello world", b"\x89PNG\r\n\x1a\n" + b"x" * 40, b"GIF89a" + b"\x00" * 5])
def test_undecodable_image_message_leaks_no_object_repr(agent: Agent, data: bytes) -> None:
    with serving(agent) as client:
        upload = client.post("/v1/segment", files={"image": ("x.png", data, "image/png")}, data={"query": "cat"})
        inline = client.post("/v1/segment", json={"image": _b64(data), "query": "cat"})
    assert "cannot decode" in _error(upload, 422, "bad_image")
    for response in (upload, inline):
        message = _error(response, 422, "bad_image")
        assert "BytesIO" not in message and " at 0x" not in message and "<_io" not in message


# ------------------------------------------------------------------------------------ the OpenAI tool's words


async def test_python_tool_refusals_name_its_arguments(agent: Agent, root: Path) -> None:
    _, no_roots = as_openai_tool(agent)
    _, handler = as_openai_tool(agent, allowed_roots=[root], max_pixels=100)
    refusals = [
        await no_roots({"image": "cat.png", "query": "cat"}),
        await handler({"image": str(root.parent / "secret.png"), "query": "cat"}),
        await handler({"image": "http://127.0.0.1:9/a.png", "query": "cat"}),
        await handler({"image": _b64(png()), "query": "cat"}),
    ]
    messages = [answer.json["error"]["message"] for answer in refusals]
    assert "allowed_roots=" in messages[0] and "allowed_roots=" in messages[1]
    assert "allow_urls=True" in messages[2] and "max_pixels=" in messages[3]
    assert not any("--" in message for message in messages), messages
    with pytest.raises(ValueError, match="allowed_roots") as excinfo:
        as_openai_tool(agent, allowed_roots=[root / "missing"])
    assert "--allowed-root" not in str(excinfo.value)


# ------------------------------------------------------------------------------------ the API key


def test_http_api_requires_the_key(agent: Agent, engine: FakeEngine) -> None:
    segment = {"image": _b64(png()), "query": "cat"}
    with serving(agent, api_key=KEY) as client:
        health = client.get("/healthz")
        anonymous = client.get("/v1/info")
        wrong = client.post("/v1/segment", json=segment, headers={"Authorization": "Bearer not-the-key"})
        wrong_scheme = client.get("/v1/info", headers={"Authorization": f"Basic {KEY}"})
        prefix = client.get("/v1/info", headers={"X-API-Key": KEY[:-1]})
        refused_body = client.post("/v1/segment", content=b"[" * 1000, headers={"content-type": "application/json"})
        bearer = client.post("/v1/segment", json=segment, headers={"Authorization": f"Bearer {KEY}"})
        x_api_key = client.get("/v1/info", headers={"X-API-Key": KEY})
        lower_bearer = client.get("/v1/info", headers={"authorization": f"bearer {KEY}"})
        unknown_route = client.get("/nope")
    assert health.json() == {"status": "ok"}
    for response in (anonymous, wrong, wrong_scheme, prefix, refused_body, unknown_route):
        message = _error(response, 401, "unauthorized")
        assert "Authorization: Bearer" in message and "X-API-Key" in message
        assert KEY not in message and "not-the-key" not in message
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert bearer.status_code == 200 and bearer.json()["status"] == "answered"
    assert x_api_key.status_code == 200 and lower_bearer.status_code == 200
    assert len(engine.calls) == 1
    assert KEY not in json.dumps(x_api_key.json())


def test_without_a_key_the_loopback_api_stays_open(agent: Agent) -> None:
    with serving(agent) as client:
        assert client.get("/v1/info").status_code == 200


async def test_mcp_over_streamable_http_requires_the_key(agent: Agent) -> None:
    limits = ServeLimits()
    app = streamable_http_app(build_mcp_server(agent, limits), "127.0.0.1", limits, api_key=KEY)
    with ServerThread(app) as server:
        async with httpx2.AsyncClient(timeout=10) as raw:
            anonymous = await raw.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                       headers={"Accept": "application/json, text/event-stream"})
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {KEY}"})
        transport = streamable_http_client(f"{server.url}/mcp", http_client=http)
        async with http, Client(transport, read_timeout_seconds=30) as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool("segment_image", {"image": _b64(png()), "query": "cat"})
    message = _error(anonymous, 401, "unauthorized")
    assert KEY not in message
    assert [t.name for t in tools] == ["segment_image"]
    assert not result.is_error and json.loads(result.content[0].text)["status"] == "answered"  # type: ignore[union-attr]
