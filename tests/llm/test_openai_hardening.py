"""OpenAICompatibleLLM against hostile answers: 200 bodies it cannot parse, clients outliving their loop."""

from __future__ import annotations

import asyncio

import pytest

from sam3agent.llm.base import LLMBackendError, LLMRequest, Message, TextPart
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer

MALFORMED = {
    "truncated JSON": ('{"id": "chatcmpl-1", "object": "chat.completion", "choices": [', "application/json"),
    "HTML page": ("<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "JSON array": ("[1, 2, 3]", "application/json"),
    "null message": ('{"id": "x", "model": "m", "choices": [{"index": 0, "message": null}]}', "application/json"),
    "error object": ('{"error": {"message": "upstream overloaded"}}', "application/json"),
    "empty body": ("", "application/json"),
}


def _request() -> LLMRequest:
    return LLMRequest([Message.text("user", "hello")])


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_200_is_retried(kind: str) -> None:
    body, content_type = MALFORMED[kind]
    with ScriptedOpenAIServer(["fine"]) as server:
        server.malform_next(1, body, content_type)
        async with OpenAICompatibleLLM(server.base_url, "scripted", backoff_base=0.01) as llm:
            completion = await llm.complete(_request())
        assert server.call_count == 2
    assert completion.text == "fine" and completion.attempts == 2


@pytest.mark.parametrize("kind", ["truncated JSON", "HTML page"])
async def test_malformed_200_every_time_raises_backend_error_naming_the_endpoint(kind: str) -> None:
    body, content_type = MALFORMED[kind]
    with ScriptedOpenAIServer(["never sent"]) as server:
        server.malform_next(5, body, content_type)
        async with OpenAICompatibleLLM(server.base_url, "scripted", backoff_base=0.01, max_retries=2) as llm:
            with pytest.raises(LLMBackendError) as info:
                await llm.complete(_request())
        assert server.call_count == 3 and server.replies_used == 0
    error = info.value
    assert error.attempts == 3 and error.endpoint == llm.endpoint
    assert server.base_url in str(error) and "malformed response" in str(error)
    assert error.__cause__ is not None


def test_client_of_a_finished_loop_is_closed_with_it() -> None:
    """Each ``asyncio.run`` gets its own HTTP client, closed when that loop shuts down."""
    with ScriptedOpenAIServer(["one", "two"]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "scripted")
        clients = []

        async def call() -> str:
            completion = await llm.complete(_request())
            entry = llm._clients[asyncio.get_running_loop()]
            clients.append(getattr(entry, "client", entry))
            return completion.text

        assert [asyncio.run(call()), asyncio.run(call())] == ["one", "two"]
    first, second = clients
    assert first is not second
    assert first.is_closed() and second.is_closed()


async def test_lone_surrogates_from_the_server_become_replacement_characters() -> None:
    """A reply carrying ``\\ud800`` (a JSON escape of half a pair) must not break the next request."""
    reply = {"content": "a cat \ud800", "tool_calls": [{"name": "f", "arguments": '{"x": "\udc00"}'}]}
    with ScriptedOpenAIServer([reply, "ok"]) as server:
        async with OpenAICompatibleLLM(server.base_url, "scripted") as llm:
            first = await llm.complete(_request())
            assert first.text == "a cat \ufffd" and first.tool_calls[0].arguments == '{"x": "\ufffd"}'
            history = [Message.text("user", "hello"), Message(role="assistant", content=[TextPart(first.text)]),
                       Message.text("user", "again")]
            assert (await llm.complete(LLMRequest(history))).text == "ok"
