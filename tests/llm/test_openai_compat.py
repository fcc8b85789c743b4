"""OpenAICompatibleLLM over real HTTP against the scripted server: wire format, retries, errors."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from sam3agent.llm.base import Completion, LLMBackendError, LLMRequest, Message, SamplingConfig, TextPart, ToolCall
from sam3agent.llm.openai_compat import OpenAICompatibleLLM, SharedLimiter
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3agent.llm.wire import decode_data_url, tool_images_label

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "segment_phrase",
            "description": "Segment every instance of a short noun phrase.",
            "parameters": {
                "type": "object",
                "properties": {"text_prompt": {"type": "string"}},
                "required": ["text_prompt"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "report_no_mask",
            "description": "Nothing matches.",
            "parameters": {"type": "object"},
        },
    },
]
SAMPLING = SamplingConfig(temperature=0.2, top_p=0.9, max_tokens=321, seed=7)


def _llm(server: ScriptedOpenAIServer, **kwargs) -> OpenAICompatibleLLM:
    kwargs.setdefault("backoff_base", 0.01)
    kwargs.setdefault("api_key", "test-key")
    return OpenAICompatibleLLM(server.base_url, kwargs.pop("model", "scripted"), **kwargs)


async def _once(server: ScriptedOpenAIServer, **kwargs) -> Completion:
    """One text request through a fresh client, closed afterwards."""
    async with _llm(server, **kwargs) as llm:
        return await llm.complete(_text_request())


def _text_request() -> LLMRequest:
    return LLMRequest([Message.text("system", "Be brief."), Message.text("user", "hello")], sampling=SAMPLING)


async def test_native_tools_wire_format_and_chat_template(make_image, render_with_tiny_qwen) -> None:
    raw = make_image(label="raw", fmt="jpeg")
    marks = make_image(color=(0, 0, 255), label="marks")
    replies = [
        {
            "content": "I will segment.",
            "tool_calls": [{"name": "segment_phrase", "arguments": {"text_prompt": "car"}}],
        },
        {"tool_calls": [{"id": "x1", "name": "report_no_mask", "arguments": "{}"}]},
    ]
    with ScriptedOpenAIServer(replies) as server:
        llm = _llm(server, extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}})
        first = [
            Message.text("system", "You segment."),
            Message(role="user", content=[raw, TextPart("the car")]),
        ]
        c1 = await llm.complete(LLMRequest(first, sampling=SAMPLING, tools=TOOLS))
        assert c1.text == "I will segment."
        assert [(c.name, json.loads(c.arguments)) for c in c1.tool_calls] == [
            ("segment_phrase", {"text_prompt": "car"})
        ]
        assert c1.finish_reason == "tool_calls" and c1.attempts == 1 and c1.usage.prompt_tokens > 0

        second = [
            *first,
            Message(role="assistant", content=[TextPart(c1.text)], tool_calls=c1.tool_calls),
            Message(role="tool", content=[TextPart("3 masks"), marks], tool_call_id=c1.tool_calls[0].id),
        ]
        c2 = await llm.complete(LLMRequest(second, sampling=SAMPLING, tools=TOOLS))
        assert c2.tool_calls == [ToolCall("x1", "report_no_mask", "{}")] and c2.text == ""
        await llm.aclose()

    body1, body2 = server.requests
    for body in (body1, body2):
        assert body["model"] == "scripted"
        assert body["tools"] == TOOLS
        assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.2, 0.9, 321, 7)
        assert body["top_k"] == 20 and body["chat_template_kwargs"] == {"enable_thinking": False}
    image_url = body1["messages"][1]["content"][0]["image_url"]["url"]
    assert image_url.startswith("data:image/jpeg;base64,")
    assert decode_data_url(image_url) == (raw.data, "image/jpeg")
    msgs = body2["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "user"]
    call_id = c1.tool_calls[0].id
    assert msgs[2]["tool_calls"][0]["id"] == call_id
    assert msgs[2]["tool_calls"][0]["function"] == {
        "name": "segment_phrase",
        "arguments": c1.tool_calls[0].arguments,
    }
    assert msgs[3] == {"role": "tool", "tool_call_id": call_id, "content": "3 masks"}
    assert msgs[4]["content"][0] == {"type": "text", "text": tool_images_label(call_id)}
    assert decode_data_url(msgs[4]["content"][1]["image_url"]["url"]) == (marks.data, "image/png")
    for body in server.requests:
        rendered = render_with_tiny_qwen(body)
        assert rendered["input_ids"].shape[1] > 0


async def test_text_protocol_sends_no_tools(make_image, render_with_tiny_qwen) -> None:
    with ScriptedOpenAIServer(['<tool>{"name": "report_no_mask", "parameters": {}}</tool>']) as server:
        request = LLMRequest(
            [
                Message.text("system", "sys"),
                Message(role="user", content=[make_image(fmt="jpeg"), TextPart("q")]),
            ],
            sampling=SamplingConfig(seed=None),
        )
        async with _llm(server, image_format="png") as llm:
            completion = await llm.complete(request)
    assert completion.text.startswith("<tool>") and completion.tool_calls == []
    body = server.requests[0]
    assert "tools" not in body and "seed" not in body
    assert body["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    render_with_tiny_qwen(body)


async def test_api_key_defaults_to_empty_for_local_servers(monkeypatch) -> None:
    monkeypatch.delenv("SAM3AGENT_TEST_KEY", raising=False)
    with ScriptedOpenAIServer(["ok"]) as server:
        async with OpenAICompatibleLLM(server.base_url, "scripted", api_key_env="SAM3AGENT_TEST_KEY") as llm:
            await llm.complete(_text_request())
    assert server.request_headers[0]["authorization"] == "Bearer EMPTY"


async def test_500_then_success_is_retried() -> None:
    with ScriptedOpenAIServer(["fine"], retry_after=0.01) as server:
        server.fail_next(1, status=500)
        completion = await _once(server)
    assert completion.text == "fine" and completion.attempts == 2
    assert server.call_count == 2


async def test_timeout_is_retried() -> None:
    with ScriptedOpenAIServer(["late but fine"]) as server:
        server.stall_next(1, seconds=10.0)
        start = time.monotonic()
        completion = await _once(server, timeout=1.0)
        elapsed = time.monotonic() - start
    assert completion.text == "late but fine" and completion.attempts == 2
    assert elapsed < 5.0  # the stalled call was abandoned at the client's timeout


async def test_retries_spent_raise_backend_error() -> None:
    with ScriptedOpenAIServer(["never"], retry_after=0.01) as server:
        server.fail_next(5, status=503)
        with pytest.raises(LLMBackendError) as info:
            await _once(server, max_retries=2)
    assert info.value.attempts == 3 and server.call_count == 3
    assert server.base_url in str(info.value) and "503" in str(info.value)


async def test_http_retries_wait_the_client_backoff_or_the_servers_retry_after() -> None:
    """HTTP failures are the openai client's to retry: its backoff (0.5 s, then 1 s; less up to 25 %
    jitter), not ``backoff_base``, unless the server sends ``Retry-After-Ms``."""
    waits = {}
    for retry_after in (None, 0.01):
        with ScriptedOpenAIServer(["fine"], retry_after=retry_after) as server:
            server.fail_next(2, status=503)
            start = time.monotonic()
            completion = await _once(server, max_retries=2)
            waits[retry_after] = time.monotonic() - start
        assert completion.attempts == 3 and server.call_count == 3
    assert waits[None] >= 0.375 + 0.75 and waits[0.01] < 0.5


async def test_attempts_count_client_retries_before_an_error_it_does_not_retry() -> None:
    with ScriptedOpenAIServer(["secret"], api_key="right", retry_after=0.01) as server:
        server.fail_next(1, status=503)  # retried by the client, then the wrong key: 401, not retried
        with pytest.raises(LLMBackendError) as info:
            await _once(server, api_key="wrong", max_retries=3)
        assert server.call_count == 2
    assert info.value.attempts == 2 and "401" in str(info.value)


async def test_malformed_and_http_retries_share_one_budget() -> None:
    with ScriptedOpenAIServer(["never sent"], retry_after=0.01) as server:
        server.malform_next(1)
        server.fail_next(5, status=503)
        with pytest.raises(LLMBackendError) as info:
            await _once(server, max_retries=2)
        assert server.call_count == 3 and server.replies_used == 0
    assert info.value.attempts == 3 and "503" in str(info.value)


def test_retry_count_without_the_clients_header() -> None:
    """When the failed request carries no retry count, the client's rule decides: a failure it retries
    is only raised once the retries it was allowed are spent, any other at once."""
    from sam3agent.llm.openai_compat import _retries_taken

    def failure(status: int | None) -> Exception:
        error = Exception("failed")
        error.status_code = status  # type: ignore[attr-defined]
        return error

    assert _retries_taken(failure(503), 2) == 2 and _retries_taken(failure(None), 2) == 2
    assert _retries_taken(failure(401), 2) == 0


async def test_dead_endpoint_raises_backend_error_naming_it() -> None:
    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    llm = OpenAICompatibleLLM(base_url, "qwen", max_retries=2, backoff_base=0.01, timeout=2.0)
    with pytest.raises(LLMBackendError) as info:
        async with llm:
            await llm.complete(_text_request())
    assert info.value.attempts == 3
    assert info.value.endpoint == f"{base_url} (model qwen)"
    assert base_url in str(info.value) and "Connection" in str(info.value)


async def test_401_is_not_retried() -> None:
    with ScriptedOpenAIServer(["secret stuff"], api_key="right") as server:
        with pytest.raises(LLMBackendError) as info:
            await _once(server, api_key="wrong")
        assert server.call_count == 1
        ok = await _once(server, api_key="right")
    assert info.value.attempts == 1 and "401" in str(info.value) and "Incorrect API key" in str(info.value)
    assert ok.text == "secret stuff"


async def test_unknown_model_404_lists_served_models() -> None:
    with ScriptedOpenAIServer(["x"], models=["Qwen/Qwen2.5-VL-7B-Instruct"]) as server:
        with pytest.raises(LLMBackendError) as info:
            await _once(server, model="qwen-typo")
        assert server.call_count == 1
    message = str(info.value)
    assert "404" in message and "Qwen/Qwen2.5-VL-7B-Instruct" in message and info.value.attempts == 1


async def test_max_concurrency_caps_calls_in_flight() -> None:
    with ScriptedOpenAIServer(lambda body: "ok", latency=0.1) as server:
        llm_a = _llm(server, max_concurrency=2)
        llm_b = _llm(server, max_concurrency=2)  # same base_url: shares the process-wide limit
        async with llm_a, llm_b:
            results = await asyncio.gather(*[(llm_a if i % 2 else llm_b).complete(_text_request()) for i in range(8)])
    assert [r.text for r in results] == ["ok"] * 8
    assert server.max_in_flight == 2


async def test_explicit_limiter_object() -> None:
    with ScriptedOpenAIServer(lambda body: "ok", latency=0.05) as server:
        async with _llm(server, limiter=asyncio.Semaphore(1)) as llm:
            await asyncio.gather(*[llm.complete(_text_request()) for _ in range(4)])
    assert server.max_in_flight == 1


def test_shared_limiter_survives_fresh_event_loops() -> None:
    limiter = SharedLimiter(1)

    async def use() -> int:
        async def hold() -> None:
            async with limiter:
                await asyncio.sleep(0.01)

        await asyncio.gather(hold(), hold())
        return 1

    assert asyncio.run(use()) + asyncio.run(use()) == 2


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match="timeout"):
        OpenAICompatibleLLM("http://x/v1", "m", timeout=0)
    with pytest.raises(ValueError, match="either"):
        OpenAICompatibleLLM("http://x/v1", "m", max_concurrency=2, limiter=asyncio.Semaphore(2))


def test_one_instance_serves_several_event_loops() -> None:
    """A sync wrapper runs each job in a fresh loop (asyncio.run); the HTTP client must follow."""
    with ScriptedOpenAIServer(lambda body: "ok") as server:
        llm = _llm(server, max_concurrency=1)

        async def one() -> str:
            try:
                return (await llm.complete(_text_request())).text
            finally:
                await llm.aclose()

        texts = [asyncio.run(one()) for _ in range(3)]
    assert texts == ["ok"] * 3
