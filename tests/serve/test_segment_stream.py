"""``POST /v1/segment/stream`` over real HTTP: uvicorn on 127.0.0.1 in a thread, httpx reading the SSE body."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import numpy as np
import pytest
from PIL import Image
from serve_helpers import PolicyLLM, ServerThread, error_message, expected_area, png, tool_reply

from sam3agent import Agent
from sam3agent.app.serve import ServeLimits, create_app, sse
from sam3agent.llm.base import Completion, LLMRequest
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3core.fake import FakeEngine

KEY = "stream-test-key-0123456789"


@contextmanager
def serving(agent: Agent, api_key: str | None = None, **limits: Any) -> Iterator[httpx2.Client]:
    """A client of the API served for ``agent`` with the given limits."""
    app = create_app(agent, ServeLimits(**limits), api_key=api_key)
    with ServerThread(app) as server, httpx2.Client(base_url=server.url, timeout=30) as client:
        yield client


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def parse_sse(lines: Iterator[str]) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The ``(event, data)`` messages of an SSE body, and how many comment lines it had."""
    messages: list[tuple[str, dict[str, Any]]] = []
    event, data, comments = None, [], 0
    for line in lines:
        if not line:
            if event is not None or data:
                assert event is not None and len(data) == 1, (event, data)
                messages.append((event, json.loads(data[0])))
            event, data = None, []
        elif line.startswith(":"):
            comments += 1
        elif line.startswith("event: "):
            event = line.removeprefix("event: ")
        else:
            assert line.startswith("data: "), line
            data.append(line.removeprefix("data: "))
    assert event is None and not data, "the stream ended inside a message"
    return messages, comments


def stream(client: httpx2.Client, url: str = "/v1/segment/stream", **kwargs: Any) -> tuple[
        httpx2.Response, list[tuple[str, dict[str, Any]]], int]:
    """POST and read the whole event stream."""
    with client.stream("POST", url, **kwargs) as response:
        assert response.status_code == 200, response.read()
        messages, comments = parse_sse(response.iter_lines())
    return response, messages, comments


def _png(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_events_then_the_result_of_post_segment(agent: Agent) -> None:
    body = {"image": f"data:image/png;base64,{_b64(png())}", "query": "the cat", "overlay": True}
    with serving(agent) as client:
        response, messages, _ = stream(client, json=body)
        plain = client.post("/v1/segment", json=body).json()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    names = [name for name, _ in messages]
    assert names == ["run_started", "model_call_started", "model_call_finished", "tool_call", "masks_found",
                     "model_call_started", "model_call_finished", "tool_call", "answer", "result"]
    events = [data for _, data in messages[:-1]]
    assert [e["type"] for e in events] == names[:-1] and [e["seq"] for e in events] == list(range(1, 10))
    assert events[0]["query"] == "the cat" and events[0]["image"] == {"width": 64, "height": 48}
    assert events[3]["arguments"] == {"text_prompt": "cat"} and events[3]["turn"] == 1
    found = events[4]
    assert found["phrase"] == "cat" and [m["id"] for m in found["masks"]] == [1]
    assert found["masks"][0]["box_xyxy"] == [16.0, 12.0, 47.0, 35.0] and found["image"].startswith("data:image/")
    assert events[-1] == {"type": "answer", "seq": 9, "t": events[-1]["t"], "status": "answered",
                          "final_text": events[-3]["reply"], "count": 1, "reason": "selected mask(s) 1"}
    result = messages[-1][1]
    mask = np.asarray(_png(result.pop("mask_png")))
    assert mask.shape == (48, 64) and set(np.unique(mask)) == {0, 255}
    assert int(np.count_nonzero(mask == 255)) == expected_area() and mask[24, 32] == 255 and mask[0, 0] == 0
    assert _png(result["overlay_png"]).size == (64, 48) and result["overlay_png"] == plain["overlay_png"]
    assert result.pop("totals").keys() == plain.pop("totals").keys()
    assert result == plain  # everything else is the /v1/segment answer


def test_multipart_with_steps(agent: Agent) -> None:
    with serving(agent) as client:
        _, messages, _ = stream(client, url="/v1/segment/stream?steps=1",
                                files={"image": ("cat.png", png(), "image/png")}, data={"query": "the cat"})
    assert messages[3][1]["arguments"]["text_prompt"] == "cat"
    result = messages[-1][1]
    assert messages[-1][0] == "result" and len(result["steps"]) == 2 and "overlay_png" not in result
    assert result["image"]["source"] == "cat.png"


def test_refusals_before_the_stream_are_post_segment_s_errors(agent: Agent, engine: FakeEngine) -> None:
    requests: list[dict[str, Any]] = [
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        {"json": {"image": _b64(png())}},
        {"json": {"image": _b64(png()), "query": "  "}},
        {"json": {"image": _b64(png()), "query": "cat", "colour": "red"}},
        {"json": {"image": "@@@", "query": "cat"}},
        {"json": {"image": _b64(png(200, 100)), "query": "cat"}},
    ]
    expected = [(400, "bad_request"), (415, "unsupported_media_type"), (400, "bad_request"), (400, "bad_request"),
                (400, "bad_request"), (422, "bad_image"), (413, "payload_too_large")]
    with serving(agent, max_pixels=10_000) as client:
        for kwargs, (status, kind) in zip(requests, expected, strict=True):
            streamed = client.post("/v1/segment/stream", **kwargs)
            plain = client.post("/v1/segment", **kwargs)
            assert error_message(streamed, status, kind) == error_message(plain, status, kind)
        method = client.get("/v1/segment/stream")
    error_message(method, 405, "method_not_allowed")
    assert engine.calls == []


def test_the_api_key_is_required(agent: Agent) -> None:
    body = {"image": _b64(png()), "query": "cat"}
    with serving(agent, api_key=KEY) as client:
        refused = client.post("/v1/segment/stream", json=body)
        _, messages, _ = stream(client, json=body, headers={"Authorization": f"Bearer {KEY}"})
    error_message(refused, 401, "unauthorized")
    assert messages[-1][0] == "result" and messages[-1][1]["status"] == "answered"


def test_backend_failure_is_an_error_event_classified_502() -> None:
    with ScriptedOpenAIServer(["unused"]) as llm_server:
        llm_server.fail_next(5, status=500, message="model crashed")
        llm = OpenAICompatibleLLM(llm_server.base_url, "scripted", timeout=5, max_retries=0)
        with serving(Agent(llm, FakeEngine())) as client:
            _, messages, _ = stream(client, json={"image": _b64(png()), "query": "cat"})
    assert [name for name, _ in messages] == ["run_started", "model_call_started", "error"]
    error = messages[-1][1]
    assert set(error) == {"error", "status"} and error["status"] == 502
    assert error["error"]["type"] == "llm_backend_error" and llm_server.base_url in error["error"]["message"]


def test_request_timeout_is_an_error_event_classified_504() -> None:
    agent = Agent(PolicyLLM(latency_s=10), FakeEngine())
    with serving(agent, request_timeout_s=0.3) as client:
        response, messages, _ = stream(client, json={"image": _b64(png()), "query": "cat"})
    assert response.elapsed.total_seconds() < 5
    assert [name for name, _ in messages] == ["run_started", "model_call_started", "error"]
    error = messages[-1][1]
    assert error["status"] == 504 and error["error"]["type"] == "timeout"
    assert "0.3 s" in error["error"]["message"] and "--request-timeout" in error["error"]["message"]


def test_keep_alive_comments_while_the_model_thinks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.05)
    with serving(Agent(PolicyLLM(latency_s=0.4), FakeEngine({"cat": lambda h, p: []}))) as client:
        _, messages, comments = stream(client, json={"image": _b64(png()), "query": "cat"})
    assert comments >= 4 and messages[-1][0] == "result"


class BlockingLLM:
    """Segments at once, then blocks until cancelled; ``cancelled`` is set (from the server's thread) then."""

    name = "blocking"

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = threading.Event()

    async def complete(self, request: LLMRequest) -> Completion:
        self.calls += 1
        if self.calls == 1:
            return Completion(text=tool_reply("segment_phrase", text_prompt="cat"))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


def test_a_client_that_disconnects_cancels_its_run(engine: FakeEngine) -> None:
    llm = BlockingLLM()
    seen: list[str] = []
    with serving(Agent(llm, engine)) as client:
        with client.stream("POST", "/v1/segment/stream", json={"image": _b64(png()), "query": "cat"}) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
                if seen.count("model_call_started") == 2 or len(seen) > 8:
                    break  # the second model call is blocking now
        assert llm.cancelled.wait(10), "the run went on after the client left"
        assert client.get("/healthz").status_code == 200
    assert seen[-2:] == ["masks_found", "model_call_started"] and llm.calls == 2
