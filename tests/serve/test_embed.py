"""``as_openai_tool``: the function schema and the handler (answers, overlays, error answers)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from PIL import Image
from serve_helpers import PolicyLLM, expected_area, png

import sam3agent
from sam3agent import Agent, as_openai_tool
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3core.fake import FakeEngine


def test_exported_from_the_package() -> None:
    assert sam3agent.as_openai_tool is as_openai_tool


def test_schema(agent: Agent, root: Path) -> None:
    schema, _ = as_openai_tool(agent, allowed_roots=[root])
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "segment_image"
    params = function["parameters"]
    assert params["required"] == ["image", "query"] and params["additionalProperties"] is False
    assert set(params["properties"]) == {"image", "query"}
    assert all(p["type"] == "string" and p["description"] for p in params["properties"].values())
    assert str(root.resolve()) in function["description"]
    json.dumps(schema)
    assert "rle" in function["description"] and "overlay image" in function["description"]
    bare, _ = as_openai_tool(agent, overlay=False, include_rle=False)
    assert "File paths are not available" in bare["function"]["description"]
    assert "rle" not in bare["function"]["description"] and "is shown" not in bare["function"]["description"]


async def test_handler_answers_with_overlay(agent: Agent, root: Path) -> None:
    _, handler = as_openai_tool(agent, allowed_roots=[root])
    answer = await handler({"image": "cat.png", "query": "the cat"})
    assert answer.ok and answer.json["status"] == "answered" and answer.json["count"] == 1
    mask = answer.json["masks"][0]
    assert mask["area"] == expected_area() and mask["box_xyxy"] == [16.0, 12.0, 47.0, 35.0]
    assert "rle" in mask and mask["rle"]["size"] == [48, 64]
    assert isinstance(answer.overlay, Image.Image) and answer.overlay.size == (64, 48)
    assert json.loads(answer.text) == answer.json
    png_bytes = answer.overlay_png()
    assert png_bytes is not None and png_bytes.startswith(b"\x89PNG")
    url = answer.overlay_data_url()
    assert url is not None and base64.b64decode(url.split(",", 1)[1]) == png_bytes
    assert answer.result is not None and answer.result.status == "answered"


async def test_handler_takes_a_json_string_and_base64(agent: Agent) -> None:
    _, handler = as_openai_tool(agent, overlay=False, include_rle=False)
    data = base64.b64encode(png()).decode()
    answer = await handler(json.dumps({"image": f"data:image/png;base64,{data}", "query": "cat"}))
    assert answer.ok and answer.json["count"] == 1 and "rle" not in answer.json["masks"][0]
    assert answer.overlay is None and answer.overlay_data_url() is None


@pytest.mark.parametrize(("arguments", "kind", "needle"), [
    ("{not json", "bad_request", "not valid JSON"),
    ("[1, 2]", "bad_request", "JSON object"),
    ({"image": "cat.png"}, "bad_request", "query"),
    ({"image": "cat.png", "query": "cat", "extra": 1}, "bad_request", "extra"),
    ({"image": "cat.png", "query": "   "}, "bad_request", "query"),
    ({"image": "../secret.png", "query": "cat"}, "forbidden", "'..'"),
    ({"image": "link.png", "query": "cat"}, "forbidden", "outside"),
    ({"image": "missing.png", "query": "cat"}, "not_found", "missing.png"),
    ({"image": "data:image/png;base64,AAAA", "query": "cat"}, "bad_image", "decode"),
    ({"image": "https://example.org/cat.png", "query": "cat"}, "forbidden", "URLs are disabled"),
])
async def test_bad_arguments_become_error_answers(agent: Agent, root: Path, arguments: object, kind: str,
                                                  needle: str) -> None:
    _, handler = as_openai_tool(agent, allowed_roots=[root])
    answer = await handler(arguments)  # type: ignore[arg-type]
    assert not answer.ok and answer.overlay is None and answer.result is None
    assert answer.json["status"] == "error" and answer.json["error"]["type"] == kind
    assert needle in answer.json["error"]["message"]
    json.loads(answer.text)


async def test_backend_failure_and_timeout_become_error_answers(root: Path) -> None:
    with ScriptedOpenAIServer(["unused"]) as server:
        server.fail_next(3, status=500)
        llm = OpenAICompatibleLLM(server.base_url, "scripted", timeout=5, max_retries=0)
        _, handler = as_openai_tool(Agent(llm, FakeEngine()), allowed_roots=[root])
        answer = await handler({"image": "cat.png", "query": "cat"})
    assert answer.json["error"]["type"] == "llm_backend_error"
    assert server.base_url in answer.json["error"]["message"]
    _, slow = as_openai_tool(Agent(PolicyLLM(latency_s=5), FakeEngine()), allowed_roots=[root], timeout_s=0.2)
    answer = await slow({"image": "cat.png", "query": "cat"})
    assert answer.json["error"]["type"] == "timeout"


def test_bad_root_is_refused_at_construction(agent: Agent, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed root"):
        as_openai_tool(agent, allowed_roots=[tmp_path / "missing"])
