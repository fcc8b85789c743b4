"""Message conversion to OpenAI JSON and HF chat messages, and the OpenAI ordering rules."""

from __future__ import annotations

import base64

import pytest

from sam3agent.llm.base import Message, TextPart, ToolCall
from sam3agent.llm.wire import (
    TOOL_IMAGES_MOVED,
    decode_data_url,
    image_data_url,
    openai_to_hf_messages,
    split_tool_images,
    to_hf_messages,
    to_openai_messages,
    tool_images_label,
    validate_openai_messages,
)


def _native_conversation(make_image) -> list[Message]:
    raw = make_image(label="raw image")
    marks = make_image(color=(0, 90, 200), label="marks 1-2")
    zoom = make_image(color=(10, 200, 10), fmt="jpeg", label="zoom")
    return [
        Message.text("system", "You segment things."),
        Message(role="user", content=[raw, TextPart("the red car")]),
        Message(
            role="assistant",
            content=[TextPart("Let me look.")],
            tool_calls=[
                ToolCall("call_a", "segment_phrase", '{"text_prompt": "car"}'),
                ToolCall("call_b", "examine_each_mask", "{}"),
            ],
        ),
        Message(role="tool", content=[TextPart("2 masks"), marks], tool_call_id="call_a"),
        Message(role="tool", content=[zoom], tool_call_id="call_b"),
        Message.text("user", "Go on."),
    ]


def test_split_tool_images_moves_images_after_the_tool_run(make_image) -> None:
    messages = _native_conversation(make_image)
    out = split_tool_images(messages)
    assert [m.role for m in out] == ["system", "user", "assistant", "tool", "tool", "user", "user"]
    assert out[3].plain_text == "2 masks" and not out[3].images
    assert out[4].plain_text == TOOL_IMAGES_MOVED and not out[4].images
    moved = out[5]
    assert [p.text if isinstance(p, TextPart) else p.label for p in moved.content] == [
        tool_images_label("call_a"),
        "marks 1-2",
        tool_images_label("call_b"),
        "zoom",
    ]
    assert out[0] is messages[0] and out[6] is messages[5]
    assert len(messages[3].images) == 1  # input untouched


def test_to_openai_messages_wire_format(make_image) -> None:
    messages = _native_conversation(make_image)
    wire = to_openai_messages(messages)
    assert wire[0] == {"role": "system", "content": "You segment things."}
    image_part = wire[1]["content"][0]
    assert image_part["type"] == "image_url"
    data, mime = decode_data_url(image_part["image_url"]["url"])
    assert (data, mime) == (messages[1].images[0].data, "image/png")
    assert wire[2]["tool_calls"][0] == {
        "id": "call_a",
        "type": "function",
        "function": {"name": "segment_phrase", "arguments": '{"text_prompt": "car"}'},
    }
    assert wire[3] == {"role": "tool", "tool_call_id": "call_a", "content": "2 masks"}
    assert wire[5]["role"] == "user"
    assert wire[5]["content"][3]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert validate_openai_messages(wire) == []


def test_image_format_reencodes(make_image) -> None:
    jpeg = make_image(fmt="jpeg")
    assert image_data_url(jpeg, "auto").startswith("data:image/jpeg;base64,")
    png_url = image_data_url(jpeg, "png")
    data, mime = decode_data_url(png_url)
    assert mime == "image/png" and data.startswith(b"\x89PNG")
    same = image_data_url(jpeg, "jpeg")
    assert base64.b64decode(same.split(",", 1)[1]) == jpeg.data


def test_bad_messages_are_our_bugs(make_image) -> None:
    with pytest.raises(ValueError, match="tool_call_id"):
        to_openai_messages([Message.text("tool", "x")])
    with pytest.raises(ValueError, match="assistant"):
        to_openai_messages([Message(role="assistant", content=[make_image()])])


def test_validate_catches_what_openai_rejects() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    unanswered = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "user", "content": "next"},
    ]
    assert any("not answered" in p for p in validate_openai_messages(unanswered))
    orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "zz", "content": "r"}]
    assert any("no pending tool call" in p for p in validate_openai_messages(orphan))
    image_in_tool = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {
            "role": "tool",
            "tool_call_id": "c1",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
        },
    ]
    assert any("only allowed in user" in p for p in validate_openai_messages(image_in_tool))
    assert validate_openai_messages([]) == ["'messages' must be a non-empty list"]


def test_hf_messages_from_both_paths_agree(make_image) -> None:
    messages = _native_conversation(make_image)
    direct = to_hf_messages(messages)
    via_wire = openai_to_hf_messages(to_openai_messages(messages))
    assert [m["role"] for m in direct] == [m["role"] for m in via_wire]
    assert direct[2]["tool_calls"][0]["function"]["arguments"] == {"text_prompt": "car"}
    assert via_wire[2]["tool_calls"] == direct[2]["tool_calls"]
    kinds = [[p["type"] for p in m["content"]] if isinstance(m["content"], list) else "str" for m in direct]
    kinds_wire = [[p["type"] for p in m["content"]] if isinstance(m["content"], list) else "str" for m in via_wire]
    assert kinds[1] == kinds_wire[1] == ["image", "text"]
    assert direct[5]["content"][1]["image"].size == (64, 48)
