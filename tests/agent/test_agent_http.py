"""The agent over real HTTP: OpenAICompatibleLLM against the scripted OpenAI-compatible server."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from sam3agent import Agent, AgentConfig
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer

MAIN = [("segment_phrase", {"text_prompt": "dog"}), ("examine_each_mask", {}),
        ("select_masks_and_return", {"final_answer_masks": [2]})]


def _policy(protocol: str):  # type: ignore[no-untyped-def]
    turns = iter(MAIN)

    def reply(body: dict[str, Any]) -> str | dict[str, Any]:
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
        if "Candidate: mask" in text:
            return "<verdict>Reject</verdict>" if "Candidate: mask 2." in text else "<verdict>Accept</verdict>"
        name, params = next(turns)
        if protocol == "native":
            return {"content": "", "tool_calls": [{"name": name, "arguments": params}]}
        return f"<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"

    return reply


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_run_over_http(image, masks, engine, protocol) -> None:
    with ScriptedOpenAIServer(_policy(protocol)) as server:
        llm = OpenAICompatibleLLM(server.base_url, "scripted", timeout=10, max_retries=0)
        result = await Agent(llm, engine, AgentConfig(protocol=protocol)).arun(image, "the dog by the wall")
        bodies = list(server.requests)
    assert result.status == "answered"
    assert len(result.detections) == 1 and np.array_equal(result.detections.mask[0], masks[2])
    main = [b for b in bodies if b["messages"][0]["content"].startswith("You find things")]
    assert len(bodies) == 6 and len(main) == 3
    assert all(("tools" in b) == (protocol == "native") for b in main)
    assert not any("tools" in b for b in bodies if b not in main)
    for body in bodies:
        images = [p for m in body["messages"] if isinstance(m["content"], list)
                  for p in m["content"] if p.get("type") == "image_url"]
        assert 1 <= len(images) <= 3
        # the raw photo as JPEG, the pictures we draw (marks, close-ups) as PNG
        assert images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in images[1:])
        assert body["temperature"] == 0.0 and body["seed"] == 0
    assert result.totals.prompt_tokens > 0
