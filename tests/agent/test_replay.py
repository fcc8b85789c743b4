"""Runs are deterministic, so CachingLLM recordings of agent runs replay exactly."""

from __future__ import annotations

import json
from pathlib import Path

from agent_helpers import tool, verdict_by_mask

from sam3agent import Agent, AgentConfig
from sam3agent.llm.caching import CachingLLM
from sam3agent.llm.scripted import ScriptedLLM


def _script() -> ScriptedLLM:
    return ScriptedLLM(
        [tool("segment_phrase", text_prompt="dog"), tool("examine_each_mask"),
         tool("select_masks_and_return", final_answer_masks=[1, 2])],
        verify_replies=verdict_by_mask(rejected=[3]),
    )


async def test_recorded_run_replays_exactly(image, engine, tmp_path: Path) -> None:
    version = AgentConfig().prompt_version
    path = tmp_path / "cache.jsonl"
    recorded = await Agent(CachingLLM(_script(), path, mode="record", prompt_version=version),
                           engine).arun(image, "the dogs")
    replayer = CachingLLM(None, path, mode="replay", prompt_version=version, model="scripted")
    replayed = await Agent(replayer, engine).arun(image, "the dogs")
    assert replayer.hits == 6 and replayer.misses == 0
    strip = ("wall_seconds", "llm_seconds", "sam_seconds", "render_seconds", "seconds", "llm")

    def timeless(obj: object) -> object:
        if isinstance(obj, dict):
            return {k: timeless(v) for k, v in obj.items() if k not in strip}
        if isinstance(obj, list):
            return [timeless(v) for v in obj]
        return obj

    assert json.dumps(timeless(recorded.to_dict())) == json.dumps(timeless(replayed.to_dict()))
