"""The segment request body: one pydantic model for JSON and forms, every refusal a 400 naming the field."""

from __future__ import annotations

import json

import pytest

from sam3agent.app.serve import ServeError
from sam3agent.app.serve.request_body import (
    BOTH_IMAGES,
    NO_IMAGE,
    SegmentRequest,
    parse_flag,
    parse_form_fields,
    parse_json_body,
)


def _refusal(body: object) -> str:
    with pytest.raises(ServeError) as info:
        parse_json_body(json.dumps(body).encode())
    assert info.value.status == 400 and info.value.kind == "bad_request"
    return info.value.message


def test_json_fields() -> None:
    parsed = parse_json_body(b'{"image": "aGk=", "query": "the cat", "overlay": true}')
    assert parsed == SegmentRequest(image="aGk=", query="the cat", overlay=True)
    assert parse_json_body(b'{"image_path": "a.png"}').image_path == "a.png"  # the query is checked later


def test_json_refusals_name_the_field() -> None:
    assert _refusal({"image": "x", "colour": 1, "size": 2}).startswith("unknown field(s) ['colour', 'size']")
    # Strict types: no "yes" for a boolean, no number for a string
    assert _refusal({"image": "x", "overlay": "yes"}).startswith("overlay: Input should be a valid boolean")
    assert _refusal({"image": 5}).startswith("image: Input should be a valid string")
    assert _refusal({"image": "x", "query": ["cat"]}).startswith("query: ")
    assert _refusal({"image_path": ""}).startswith("image_path: ")
    assert _refusal({"image": "x", "image_path": "a.png"}) == BOTH_IMAGES
    assert _refusal({"query": "cat"}) == NO_IMAGE
    assert "must be an object" in _refusal(["image"])


def test_form_fields_share_the_model() -> None:
    parsed = parse_form_fields({"query": "cat", "overlay": " Yes "}, upload=True)
    assert parsed.overlay is True and parsed.image is None and parsed.query == "cat"
    assert parse_form_fields({"image": "aGk=", "overlay": ""}, upload=False).overlay is False
    with pytest.raises(ServeError, match="not both"):
        parse_form_fields({"image_path": "a.png"}, upload=True)
    with pytest.raises(ServeError, match="image is required"):
        parse_form_fields({"query": "cat", "other": "ignored"}, upload=False)
    with pytest.raises(ServeError, match="overlay must be 1/true or 0/false, got 'maybe'"):
        parse_form_fields({"overlay": "maybe"}, upload=True)


@pytest.mark.parametrize(("text", "expected"), [(None, False), ("1", True), ("ON", True), ("no", False), (" ", False)])
def test_flags(text: str | None, expected: bool) -> None:
    assert parse_flag(text, "steps") is expected
