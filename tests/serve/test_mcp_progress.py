"""The MCP server reports one progress notification per agent event while ``segment_image`` runs."""

from __future__ import annotations

import base64
import json
import re

from mcp import Client
from mcp.types import TextContent
from serve_helpers import ServerThread, png

from sam3agent import Agent
from sam3agent.app.serve import ServeLimits, build_mcp_server
from sam3agent.app.serve.mcp_server import streamable_http_app

EXPECTED = [
    "run started: 'the cat' on a 64x48 image",
    "turn 1: asking the model to plan",
    "turn 1: the model answered in N s",
    "turn 1: segment_phrase(text_prompt='cat')",
    "turn 1: segment_phrase -> 1 current mask(s) for 'cat'",
    "turn 2: asking the model to plan",
    "turn 2: the model answered in N s",
    "turn 2: select_masks_and_return(final_answer_masks=[1])",
    "answered: 1 mask(s)",
]


class Progress:
    """A progress callback that records what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.received.append((progress, total, message))

    @property
    def messages(self) -> list[str | None]:
        """The messages, call durations replaced by ``N``."""
        return [None if m is None else re.sub(r"in \d+\.\d s$", "in N s", m) for _, _, m in self.received]


def _answer(result: object) -> dict:
    assert not result.is_error  # type: ignore[attr-defined]
    first = result.content[0]  # type: ignore[attr-defined]
    assert isinstance(first, TextContent)
    return json.loads(first.text)


async def test_progress_over_streamable_http(agent: Agent) -> None:
    limits = ServeLimits()
    image = f"data:image/png;base64,{base64.b64encode(png()).decode()}"
    progress = Progress()
    with ServerThread(streamable_http_app(build_mcp_server(agent, limits), "127.0.0.1", limits)) as http:
        async with Client(f"{http.url}/mcp", read_timeout_seconds=30) as client:
            tools = (await client.list_tools()).tools
            result = await client.call_tool("segment_image", {"image": image, "query": "the cat"},
                                            progress_callback=progress)
            quiet = await client.call_tool("segment_image", {"image": image, "query": "the cat"})
    assert set(tools[0].input_schema["properties"]) == {"image", "query"}  # the Context is not an argument
    assert _answer(result)["status"] == "answered" and _answer(quiet)["status"] == "answered"
    assert [p for p, _, _ in progress.received] == list(range(1, len(EXPECTED) + 1))
    assert all(total is None for _, total, _ in progress.received)
    assert progress.messages == EXPECTED


async def test_progress_in_process_and_refusals_report_nothing(agent: Agent) -> None:
    progress, none = Progress(), Progress()
    async with Client(build_mcp_server(agent, ServeLimits(max_pixels=4_000))) as client:
        ok = await client.call_tool("segment_image", {"image": base64.b64encode(png()).decode(), "query": "the cat"},
                                    progress_callback=progress)
        refused = await client.call_tool("segment_image", {"image": base64.b64encode(png(100, 100)).decode(),
                                                           "query": "cat"}, progress_callback=none)
    assert _answer(ok)["count"] == 1 and progress.messages == EXPECTED
    assert refused.is_error and "payload_too_large" in refused.content[0].text  # type: ignore[union-attr]
    assert none.received == []
