"""TransformersLLM driven by the tiny random Qwen2.5-VL, and its load errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sam3agent.llm.base import LLMBackendError, LLMRequest, Message, SamplingConfig, TextPart, ToolCall
from sam3agent.llm.transformers_local import ModelLoadError, TransformersLLM

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "segment_phrase",
            "parameters": {"type": "object", "properties": {"text_prompt": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def tiny_llm(tiny_qwen_dir: Path):
    llm = TransformersLLM.from_pretrained(str(tiny_qwen_dir), device="cpu")
    yield llm
    llm.close()


def _image_request(make_image, max_tokens: int = 12, **sampling) -> LLMRequest:
    return LLMRequest(
        [
            Message.text("system", "You segment things."),
            Message(role="user", content=[make_image(width=120, height=90, fmt="jpeg"), TextPart("the red car")]),
        ],
        sampling=SamplingConfig(max_tokens=max_tokens, **sampling),
    )


async def test_image_request_produces_text(tiny_llm: TransformersLLM, make_image) -> None:
    completion = await tiny_llm.complete(_image_request(make_image))
    assert isinstance(completion.text, str)
    assert completion.usage.prompt_tokens > 10 and 1 <= completion.usage.completion_tokens <= 12
    assert completion.finish_reason in ("stop", "length") and completion.model == tiny_llm.model_id
    again = await tiny_llm.complete(_image_request(make_image))
    assert again.text == completion.text  # temperature 0: greedy, deterministic


async def test_sampling_with_seed_is_reproducible(tiny_llm: TransformersLLM, make_image) -> None:
    request = _image_request(make_image, temperature=1.0, top_p=0.95, seed=5)
    first, second = await asyncio.gather(tiny_llm.complete(request), tiny_llm.complete(request))
    assert first.text == second.text


async def test_native_tools_and_tool_history_render(tiny_llm: TransformersLLM, make_image) -> None:
    request = _image_request(make_image, max_tokens=4)
    request.tools = TOOLS
    request.messages += [
        Message(
            role="assistant",
            content=[],
            tool_calls=[ToolCall("c1", "segment_phrase", '{"text_prompt": "car"}')],
        ),
        Message(role="tool", content=[TextPart("2 masks"), make_image(color=(0, 0, 255))], tool_call_id="c1"),
    ]
    completion = await tiny_llm.complete(request)
    assert completion.usage.completion_tokens <= 4


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    llm = TransformersLLM(str(tmp_path / "no-such-model"), device="cpu")
    with pytest.raises(ModelLoadError) as info:
        await llm.complete(LLMRequest([Message.text("user", "hi")]))
    assert isinstance(info.value, LLMBackendError)
    assert "does not exist" in str(info.value) and "huggingface-cli login" in str(info.value)
    llm.close()


def test_directory_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        TransformersLLM.from_pretrained(str(tmp_path), device="cpu")
    assert "local directory" in str(info.value) and str(tmp_path) in str(info.value)


def test_unreachable_hub_id_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        TransformersLLM.from_pretrained("sam3agent-tests/not-a-model", device="cpu", local_files_only=True)
    assert "huggingface-cli login" in str(info.value)


def test_unusable_dtype_is_a_load_error(tiny_qwen_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"unknown dtype 'float8'.*'auto'"):
        TransformersLLM.from_pretrained(str(tiny_qwen_dir), device="cpu", dtype="float8")


def test_home_relative_directory_loads(tiny_qwen_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``~/...`` is expanded before ``from_pretrained`` (which would read it as a hub id)."""
    monkeypatch.setenv("HOME", str(tiny_qwen_dir.parent))
    llm = TransformersLLM.from_pretrained(f"~/{tiny_qwen_dir.name}", device="cpu", dtype="auto")
    assert llm.hf_model is not None and llm.processor is not None


def test_tiny_builder_is_deterministic(tmp_path: Path, tiny_qwen_dir: Path) -> None:
    from sam3agent.llm.tiny_qwen import save_tiny_qwen25vl

    other = save_tiny_qwen25vl(tmp_path / "again")
    assert (other / "model.safetensors").read_bytes() == (tiny_qwen_dir / "model.safetensors").read_bytes()
