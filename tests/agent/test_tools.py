"""Each tool is one definition; the prompt text and the OpenAI schema both come from it."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from sam3agent.parsing import parse_text
from sam3agent.prompts import load_prompts
from sam3agent.tools import TOOLS, ToolSpec, openai_tools, tools_prompt_text


def test_four_tools_in_both_renderings() -> None:
    names = ["segment_phrase", "examine_each_mask", "select_masks_and_return", "report_no_mask"]
    assert list(TOOLS) == names
    assert [t["function"]["name"] for t in openai_tools()] == names
    text = tools_prompt_text()
    assert all(f"- {name}:" in text for name in names)


def test_prompt_text_and_schema_share_every_field() -> None:
    text = tools_prompt_text()
    for spec in openai_tools():
        fn = spec["function"]
        assert spec["type"] == "function"
        assert fn["description"] in text
        params = fn["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
        for prop, schema in params["properties"].items():
            assert f"Parameter {prop} (" in text
            assert schema["description"] in text
            assert "title" not in schema
        json.dumps(spec)  # JSON-safe


def test_a_changed_definition_changes_both() -> None:
    class Args(BaseModel):
        depth: int = Field(description="How deep to look.", examples=[3])

    spec = ToolSpec("probe", "Probe the image.", Args)
    schema = spec.openai_schema()["function"]
    assert schema["parameters"]["properties"]["depth"]["type"] == "integer"
    assert schema["parameters"]["required"] == ["depth"]
    text = spec.prompt_text()
    assert "Parameter depth (integer, required): How deep to look." in text
    assert '"parameters": {"depth": 3}' in text


def test_every_prompt_example_parses() -> None:
    for spec in TOOLS.values():
        example = spec.prompt_text().split("Example: ")[1]
        assert parse_text(example).name == spec.name


def test_text_system_prompt_embeds_the_tools_and_native_does_not() -> None:
    prompts = load_prompts()
    text, native = prompts.system("text"), prompts.system("native")
    assert tools_prompt_text() in text
    assert "segment_phrase: Run" not in native
    assert "$" not in text and "$" not in native
