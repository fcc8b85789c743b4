"""CachingLLM: record then replay, key determinism, JSONL robustness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sam3agent.llm.base import (
    Completion,
    ImagePart,
    LLMBackendError,
    LLMRequest,
    Message,
    SamplingConfig,
    TextPart,
    ToolCall,
    Usage,
)
from sam3agent.llm.caching import CacheMissError, CachingLLM, request_key

REPO = Path(__file__).resolve().parents[2]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]


class CountingLLM:
    """Answers with a numbered completion and counts its calls."""

    def __init__(self, model: str = "counting-model") -> None:
        self.model = model
        self.calls = 0

    @property
    def name(self) -> str:
        return f"counting:{self.model}"

    async def complete(self, request: LLMRequest) -> Completion:
        self.calls += 1
        return Completion(
            text=f"reply {self.calls} to {request.messages[-1].plain_text}",
            tool_calls=[ToolCall(f"id{self.calls}", "f", json.dumps({"n": self.calls}))],
            usage=Usage(10 * self.calls, self.calls),
            attempts=1 + self.calls % 2,
            model=self.model,
            finish_reason="stop",
        )


def _fixed_image(label: str = "raw") -> ImagePart:
    return ImagePart(b"\x89PNG fake bytes for hashing", "image/png", 4, 3, label)


def _request(
    text: str = "find the dog",
    *,
    label: str = "raw",
    tools: list | None = None,
    seed: int | None = 0,
    data: bytes | None = None,
) -> LLMRequest:
    image = _fixed_image(label) if data is None else ImagePart(data, "image/png", 4, 3, label)
    return LLMRequest(
        messages=[
            Message.text("system", "sys"),
            Message(role="user", content=[image, TextPart(text)]),
            Message(role="assistant", content=[], tool_calls=[ToolCall("c1", "f", "{}")]),
            Message(role="tool", content=[TextPart("ok")], tool_call_id="c1"),
        ],
        sampling=SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=64, seed=seed),
        tools=tools,
    )


async def test_record_then_replay_is_identical_without_calling_inner(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.jsonl"
    requests = [_request("a"), _request("b", tools=TOOLS), _request("a"), _request("c")]
    inner = CountingLLM()
    recorder = CachingLLM(inner, path, prompt_version="p1")
    recorded = [await recorder.complete(r) for r in requests]
    assert inner.calls == 4 and len(path.read_text().splitlines()) == 4

    replay_inner = CountingLLM()
    replayer = CachingLLM(replay_inner, path, mode="replay", prompt_version="p1")
    replayed = [await replayer.complete(r) for r in requests]
    assert replayed == recorded and replay_inner.calls == 0 and replayer.hits == 4

    # offline: no backend at all, the model named explicitly
    offline = CachingLLM(None, path, mode="replay", prompt_version="p1", model="counting-model")
    assert [await offline.complete(r) for r in requests] == recorded


async def test_auto_mode_hits_and_records_misses(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    inner = CountingLLM()
    first = await CachingLLM(inner, path).complete(_request())
    again = CachingLLM(inner, path)
    assert await again.complete(_request()) == first and inner.calls == 1
    await again.complete(_request("new"))
    assert inner.calls == 2 and again.misses == 1 and len(again) == 2


async def test_replay_miss_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    await CachingLLM(CountingLLM(), path, prompt_version="p1").complete(_request())
    replayer = CachingLLM(CountingLLM(), path, mode="replay", prompt_version="p2")
    with pytest.raises(CacheMissError) as info:
        await replayer.complete(_request())
    assert isinstance(info.value, LLMBackendError)
    message = str(info.value)
    assert str(path) in message and "'p2'" in message and "mode='auto'" in message and "ok" in message


async def test_record_mode_always_calls_inner(tmp_path: Path) -> None:
    inner = CountingLLM()
    cache = CachingLLM(inner, tmp_path / "c.jsonl", mode="record")
    await cache.complete(_request())
    await cache.complete(_request())
    assert inner.calls == 2 and len(cache) == 2


def test_key_covers_what_the_model_sees_and_nothing_else() -> None:
    base = request_key(_request(), model="m", prompt_version="v")
    assert request_key(_request(label="another label"), model="m", prompt_version="v") == base
    changed = [
        request_key(_request("other text"), model="m", prompt_version="v"),
        request_key(_request(data=b"other bytes"), model="m", prompt_version="v"),
        request_key(_request(tools=TOOLS), model="m", prompt_version="v"),
        request_key(_request(seed=1), model="m", prompt_version="v"),
        request_key(_request(), model="m2", prompt_version="v"),
        request_key(_request(), model="m", prompt_version="v2"),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    reordered_tools = [
        {"function": {"parameters": {"properties": {}, "type": "object"}, "name": "f"}, "type": "function"}
    ]
    assert request_key(_request(tools=reordered_tools), model="m", prompt_version="v") == changed[2]


KEY_SCRIPT = """
from sam3agent.llm.base import ImagePart, LLMRequest, Message, SamplingConfig, TextPart
from sam3agent.llm.caching import request_key
tools = [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": [1, 2]}}}]
request = LLMRequest(
    [
        Message.text("system", "sys é"),
        Message(role="user", content=[ImagePart(b"xyz", "image/png", 1, 1), TextPart("q")]),
    ],
    sampling=SamplingConfig(temperature=0.5, seed=3), tools=tools,
)
print(request_key(request, model="qwen", prompt_version="v1"))
"""

#: The key of KEY_SCRIPT's request. If this changes, recordings made before no longer replay: bump
#: sam3agent.llm.caching.KEY_VERSION and update this value together.
EXPECTED_KEY = "314c649954fe8e1f3746864fa808853d202fc963114a38556588047e674515cf"


def test_key_is_stable_across_processes() -> None:
    namespace: dict = {}
    exec(KEY_SCRIPT.replace("print(", "key = ("), namespace)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", KEY_SCRIPT], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == namespace["key"] == EXPECTED_KEY


async def test_torn_last_line_is_tolerated_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    inner = CountingLLM()
    good = await CachingLLM(inner, path).complete(_request("a"))
    with path.open("a") as f:
        f.write('{"key": "abc", "completion": {"te')  # an interrupted append
    cache = CachingLLM(inner, path)
    assert await cache.complete(_request("a")) == good
    await cache.complete(_request("b"))
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert len(CachingLLM(None, path, mode="replay", model=inner.model)) == 2


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    path.write_text('not json\n{"key": "k", "completion": {"text": "t"}}\n')
    with pytest.raises(ValueError, match=r"cache.jsonl:1"):
        CachingLLM(None, path, mode="replay", model="m")


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="inner backend"):
        CachingLLM(None, "x.jsonl", mode="auto")
    with pytest.raises(ValueError, match="model="):
        CachingLLM(None, "x.jsonl", mode="replay")
