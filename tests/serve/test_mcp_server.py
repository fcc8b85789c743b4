"""The MCP server through the ``mcp`` package's own client: stdio (a subprocess) and streamable HTTP."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path

from mcp import Client, StdioServerParameters, stdio_client
from mcp.types import ImageContent, TextContent
from PIL import Image
from serve_helpers import ServerThread, expected_area, png

from sam3agent import Agent
from sam3agent.app.serve import ServeLimits, build_mcp_server
from sam3agent.app.serve.mcp_server import streamable_http_app
from sam3core.fake import FakeEngine

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _answer(result: object) -> tuple[dict, Image.Image]:
    content = result.content  # type: ignore[attr-defined]
    assert [type(c) for c in content] == [TextContent, ImageContent]
    text, image = content
    assert image.mime_type == "image/png"
    return json.loads(text.text), Image.open(io.BytesIO(base64.b64decode(image.data)))


def _error(result: object) -> dict:
    assert result.is_error  # type: ignore[attr-defined]
    content = result.content  # type: ignore[attr-defined]
    assert len(content) == 1 and isinstance(content[0], TextContent)
    return json.loads(content[0].text)


async def test_stdio_server_in_a_subprocess(root: Path, tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sam3agent.serve", "mcp", "--_test-backend", "serve_helpers:build_backend",
              "--allowed-root", str(root), "--log-level", "warning"],
        env={"PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]), "HF_HUB_OFFLINE": "1"},
        cwd=str(tmp_path),
    )
    log = tmp_path / "server.log"
    with log.open("w") as errlog:  # the server's stderr (logs), shown when the test fails
        async with Client(stdio_client(params, errlog=errlog), read_timeout_seconds=60) as client:
            tools = (await client.list_tools()).tools
            ok = await client.call_tool("segment_image", {"image": "cat.png", "query": "the cat"})
            inline = await client.call_tool("segment_image", {"image": base64.b64encode(png(80, 40)).decode(),
                                                              "query": "cat"})
            traversal = await client.call_tool("segment_image", {"image": "../secret.png", "query": "cat"})
            symlink = await client.call_tool("segment_image", {"image": "link.png", "query": "cat"})
            no_query = await client.call_tool("segment_image", {"image": "cat.png", "query": ""})
    assert [t.name for t in tools] == ["segment_image"], log.read_text()
    schema = tools[0].input_schema
    assert set(schema["required"]) == {"image", "query"}
    assert "data URL" in schema["properties"]["image"]["description"]
    assert str(root.resolve()) in (tools[0].description or "")

    answer, overlay = _answer(ok)
    assert not ok.is_error and answer["status"] == "answered" and answer["count"] == 1
    assert answer["masks"][0]["area"] == expected_area() and "rle" in answer["masks"][0]
    assert overlay.size == (64, 48)
    assert ok.structured_content == answer
    inline_answer, inline_overlay = _answer(inline)
    assert inline_answer["image"] == {"width": 80, "height": 40} and inline_overlay.size == (80, 40)
    assert _error(traversal)["error"]["type"] == "forbidden"
    assert "outside" in _error(symlink)["error"]["message"]
    assert _error(no_query)["error"]["type"] == "bad_request"


async def test_streamable_http(agent: Agent, engine: FakeEngine) -> None:
    limits = ServeLimits(max_pixels=5_000)
    with ServerThread(streamable_http_app(build_mcp_server(agent, limits), "127.0.0.1", limits)) as http:
        async with Client(f"{http.url}/mcp", read_timeout_seconds=30) as client:
            tools = (await client.list_tools()).tools
            data = base64.b64encode(png()).decode()
            ok = await client.call_tool("segment_image", {"image": f"data:image/png;base64,{data}", "query": "cat"})
            path = await client.call_tool("segment_image", {"image": "cat.png", "query": "cat"})
            url = await client.call_tool("segment_image", {"image": "http://127.0.0.1:9/a.png", "query": "cat"})
            big = await client.call_tool("segment_image", {"image": base64.b64encode(png(100, 100)).decode(),
                                                           "query": "cat"})
    assert [t.name for t in tools] == ["segment_image"]
    answer, overlay = _answer(ok)
    assert answer["status"] == "answered" and overlay.size == (64, 48)
    assert "--allowed-root" in _error(path)["error"]["message"]
    assert "--allow-urls" in _error(url)["error"]["message"]
    assert _error(big)["error"]["type"] == "payload_too_large"
    assert len(engine.calls) == 1


async def test_streamable_http_takes_images_over_the_sdk_default_body_limit(agent: Agent) -> None:
    limits = ServeLimits()
    data = base64.b64encode(png(1300, 1300, noise=True)).decode()
    assert len(data) > 6 * 2**20  # the SDK's own request body limit is 4 MB
    with ServerThread(streamable_http_app(build_mcp_server(agent, limits), "127.0.0.1", limits)) as http:
        async with Client(f"{http.url}/mcp", read_timeout_seconds=30) as client:
            result = await client.call_tool("segment_image", {"image": data, "query": "cat"})
    answer, overlay = _answer(result)
    assert answer["status"] == "answered" and overlay.size == (1300, 1300)
