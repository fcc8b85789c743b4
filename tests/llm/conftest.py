"""Fixtures for the LLM backend tests: small encoded images and the tiny random Qwen2.5-VL."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sam3agent.llm.base import ImagePart

MakeImage = Callable[..., ImagePart]


def _make_image(
    width: int = 64,
    height: int = 48,
    color: tuple[int, int, int] = (200, 40, 40),
    fmt: str = "png",
    label: str = "",
) -> ImagePart:
    img = Image.new("RGB", (width, height), color)
    for x in range(0, width, 8):  # a little structure so JPEG and PNG bytes differ per colour
        img.putpixel((x, x % height), (x % 256, 255 - x % 256, 0))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG" if fmt == "jpeg" else "PNG")
    return ImagePart(buffer.getvalue(), f"image/{fmt}", width, height, label)


@pytest.fixture
def make_image() -> MakeImage:
    """``make_image(width, height, color, fmt, label) -> ImagePart`` (fmt ``png`` or ``jpeg``)."""
    return _make_image


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2.5-VL (model + processor) saved with save_pretrained, once per session."""
    from sam3agent.llm.tiny_qwen import save_tiny_qwen25vl

    return save_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen25vl"))


@pytest.fixture(scope="session")
def tiny_qwen_processor(tiny_qwen_dir: Path) -> Any:
    """The tiny model's processor, loaded through AutoProcessor (offline)."""
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_qwen_dir)


@pytest.fixture(scope="session")
def render_with_tiny_qwen(tiny_qwen_processor: Any) -> Callable[[dict[str, Any]], Any]:
    """``render(body) -> BatchFeature``: a chat-completions body rendered the way a server would.

    The OpenAI JSON is converted back to HF chat messages (images decoded from their data URLs) and
    tokenized through the tiny Qwen2.5-VL processor's chat template, tools included; checks that every
    image became one vision block of image tokens.
    """
    from sam3agent.llm.wire import openai_to_hf_messages

    processor = tiny_qwen_processor

    def render(body: dict[str, Any]) -> Any:
        messages = openai_to_hf_messages(body["messages"])
        n_images = sum(
            1 for m in messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image"
        )
        out = processor.apply_chat_template(
            messages,
            tools=body.get("tools"),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        ids = out["input_ids"][0].tolist()
        vision_start = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
        assert ids.count(vision_start) == n_images
        assert (0 if n_images == 0 else out["image_grid_thw"].shape[0]) == n_images
        return out

    return render
