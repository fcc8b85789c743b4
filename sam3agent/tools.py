"""The agent's four tools, each defined once.

A tool is a name, a description and a pydantic model of its arguments. From that single
definition come both the text that describes the tool in the text-protocol system prompt
(:func:`tools_prompt_text`) and the OpenAI function schema of the native protocol
(:func:`openai_tools`), so the two cannot drift apart. What a tool *does* is a transition of
the agent state (see :mod:`sam3agent.agent`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SegmentPhraseArgs(_Args):
    """Arguments of ``segment_phrase``."""

    text_prompt: str = Field(
        description="A short noun phrase naming the whole target object, e.g. 'dog' or 'red car'.",
        examples=["person"],
    )

    @field_validator("text_prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text_prompt must not be empty")
        return value


class ExamineEachMaskArgs(_Args):
    """``examine_each_mask`` takes no arguments."""


class SelectMasksArgs(_Args):
    """Arguments of ``select_masks_and_return``."""

    final_answer_masks: list[int] = Field(
        description="The numbers (as shown on the image, starting at 1) of the masks that form the answer.",
        examples=[[1, 3]],
    )

    @field_validator("final_answer_masks", mode="before")
    @classmethod
    def _wrap_single(cls, value: object) -> object:
        # Models often write a lone number for a one-mask answer; accept it as a list of one.
        items = [value] if isinstance(value, (int, str)) else value
        if isinstance(items, list) and any(isinstance(v, bool) for v in items):
            raise ValueError("mask numbers must be integers, not true/false")
        return items


class ReportNoMaskArgs(_Args):
    """``report_no_mask`` takes no arguments."""


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it does, and the pydantic model of its arguments.

    Attributes:
        name: The function name the model calls.
        description: What the tool does, written for the model.
        args_model: The pydantic model validating the tool's ``parameters``.
    """

    name: str
    description: str
    args_model: type[BaseModel]

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments (an ``object`` schema without pydantic titles)."""
        schema = self.args_model.model_json_schema()
        props = {
            name: {key: value for key, value in prop.items() if key != "title"}
            for name, prop in schema.get("properties", {}).items()
        }
        return {
            "type": "object",
            "properties": props,
            "required": list(schema.get("required", [])),
            "additionalProperties": False,
        }

    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI Chat Completions ``tools`` entry of this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters_schema(),
            },
        }

    def example_call(self) -> dict[str, Any]:
        """An example ``{"name": ..., "parameters": ...}`` call built from the schema's examples."""
        props = self.parameters_schema()["properties"]
        params = {k: v["examples"][0] for k, v in props.items() if v.get("examples")}
        return {"name": self.name, "parameters": params}

    def prompt_text(self) -> str:
        """The description of this tool for the text-protocol system prompt."""
        schema = self.parameters_schema()
        lines = [f"- {self.name}: {self.description}"]
        if not schema["properties"]:
            lines.append("  Parameters: none (pass an empty object).")
        for prop, spec in schema["properties"].items():
            required = "required" if prop in schema["required"] else "optional"
            kind = _type_name(spec)
            lines.append(f"  Parameter {prop} ({kind}, {required}): {spec.get('description', '')}")
        lines.append(f"  Example: <tool>{json.dumps(self.example_call())}</tool>")
        return "\n".join(lines)


def _type_name(spec: dict[str, Any]) -> str:
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type_name(spec.get('items', {}))}"
    return str(kind)


SEGMENT_PHRASE = ToolSpec(
    "segment_phrase",
    "Run the segmentation model on the original image with one short noun phrase. Every instance it "
    "finds becomes a mask; the new masks replace all current ones and are numbered 1, 2, ... by "
    "confidence, highest first. You get back the image with the numbered masks drawn on it. "
    "A phrase can be used only once.",
    SegmentPhraseArgs,
)
EXAMINE_EACH_MASK = ToolSpec(
    "examine_each_mask",
    "Check every current mask on its own against the query (the original image, the mask alone, "
    "and a close-up). Masks judged wrong are removed; the rest are renumbered and shown again.",
    ExamineEachMaskArgs,
)
SELECT_MASKS_AND_RETURN = ToolSpec(
    "select_masks_and_return",
    "Give the final answer: the numbers of the current masks that together are exactly what the "
    "query asks for. This ends the task.",
    SelectMasksArgs,
)
REPORT_NO_MASK = ToolSpec(
    "report_no_mask",
    "Give the final answer that nothing in the image matches the query. This ends the task.",
    ReportNoMaskArgs,
)

TOOLS: dict[str, ToolSpec] = {
    t.name: t for t in (SEGMENT_PHRASE, EXAMINE_EACH_MASK, SELECT_MASKS_AND_RETURN, REPORT_NO_MASK)
}


@cache
def tools_prompt_text() -> str:
    """The description of all tools for the text-protocol system prompt (computed once)."""
    return "\n".join(t.prompt_text() for t in TOOLS.values())


@cache
def _openai_tools() -> tuple[dict[str, Any], ...]:
    return tuple(t.openai_schema() for t in TOOLS.values())


def openai_tools() -> list[dict[str, Any]]:
    """The OpenAI ``tools`` list of the native protocol (a fresh copy; the schemas are built once)."""
    return copy.deepcopy(list(_openai_tools()))
