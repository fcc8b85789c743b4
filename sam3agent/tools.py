"""The agent's tools, each defined once: the paper's four, and two opt-in extras.

A tool is a name, a description and a pydantic model of its arguments. From that single
definition come both the text that describes the tool in the text-protocol system prompt
(:func:`tools_prompt_text`) and the OpenAI function schema of the native protocol
(:func:`openai_tools`), so the two cannot drift apart. What a tool *does* is a transition of
the agent state (see :mod:`sam3agent.agent`).

The four paper tools are always offered. The extras (:data:`EXTRA_TOOLS`: ``segment_like``,
segmentation by example, and ``segment_at``, segmentation at pixel coordinates) are offered
only when named in ``AgentConfig.tools``; their guidance and feedback texts are the sections of
``prompts/extra_tools.txt`` that each :class:`ToolSpec` names. With no extra tool on, every
rendering here is exactly the four paper tools'.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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


MAX_POINTS = 16
"""Most points one ``segment_at`` call may give."""


def _no_bool(value: object, what: str) -> object:
    """Refuse JSON true/false where a number is expected (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not true/false")
    return value


def _finite(values: Iterable[float], what: str) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must hold finite numbers")


class SegmentLikeArgs(_Args):
    """Arguments of ``segment_like`` (an extra tool)."""

    mask_id: int = Field(
        description="The number of a current mask (as shown on the image) that covers one whole example of "
                    "the objects to find.",
        examples=[2],
    )
    text_prompt: str | None = Field(
        None,
        description="A short noun phrase for the objects, e.g. 'cookie' (leave it out to search by the example "
                    "alone). With it, only objects that both look like the example and match the phrase are found.",
    )

    @field_validator("mask_id", mode="before")
    @classmethod
    def _mask_id_number(cls, value: object) -> object:
        return _no_bool(value, "mask_id")

    @field_validator("text_prompt")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text_prompt must not be empty; leave it out to search by the example alone")
        return value


class SegmentAtArgs(_Args):
    """Arguments of ``segment_at`` (an extra tool): pixel coordinates of the first image as it was sent.

    ``points`` are ``[x, y]`` pairs, ``box`` is ``[x1, y1, x2, y2]`` (left, top, right, bottom), x
    from the image's left edge and y from its top edge. Shape and order are checked here; whether
    they lie inside the image is checked by the transition, which knows the image's size.
    """

    points: list[list[float]] | None = Field(
        None,
        description="Points on the object, each [x, y] in pixels of the first image (x from its left edge, "
                    "y from its top edge); one point near the middle of the object is often enough.",
    )
    box: list[float] | None = Field(
        None,
        description="A box around the whole object, [x1, y1, x2, y2] in pixels of the first image: its left, "
                    "top, right and bottom edges.",
        examples=[[120, 80, 260, 230]],
    )

    @field_validator("points", mode="before")
    @classmethod
    def _points_shape(cls, value: object) -> object:
        if value is None:
            return value
        if not isinstance(value, list) or not value:
            raise ValueError("points must be a non-empty list of [x, y] pairs, e.g. [[120, 80]]")
        if len(value) > MAX_POINTS:
            raise ValueError(f"at most {MAX_POINTS} points can be given, got {len(value)}")
        for i, point in enumerate(value):
            if not isinstance(point, list) or len(point) != 2:
                got = f"{len(point)} numbers" if isinstance(point, list) else type(point).__name__
                raise ValueError(f"each point is [x, y], two numbers; point {i + 1} is {got}")
            for v in point:
                _no_bool(v, "a coordinate")
        return value

    @field_validator("box", mode="before")
    @classmethod
    def _box_shape(cls, value: object) -> object:
        if value is None:
            return value
        if not isinstance(value, list) or len(value) != 4:
            got = f"{len(value)} numbers" if isinstance(value, list) else type(value).__name__
            raise ValueError(f"box is [x1, y1, x2, y2], four numbers; got {got}")
        for v in value:
            _no_bool(v, "a coordinate")
        return value

    @model_validator(mode="after")
    def _some_place(self) -> SegmentAtArgs:
        if self.points is None and self.box is None:
            raise ValueError("give points on the object, a box around it, or both")
        for point in self.points or []:
            _finite(point, "points")
        if self.box is not None:
            _finite(self.box, "box")
            x1, y1, x2, y2 = self.box
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"box [x1, y1, x2, y2] needs x2 > x1 and y2 > y1, got {_numbers(self.box)}")
        return self


def _numbers(values: Iterable[float]) -> str:
    """``[1, 2.5]``: numbers as a model would write them."""
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it does, and the pydantic model of its arguments.

    Attributes:
        name: The function name the model calls.
        description: What the tool does, written for the model.
        args_model: The pydantic model validating the tool's ``parameters``.
        guide: For an extra tool, the section of ``prompts/extra_tools.txt`` that tells the model
            when the tool helps (added to the system prompt only while the tool is on); empty for
            the paper tools, whose guidance is part of ``guidelines.txt``.
        feedback: For an extra tool, the sections of ``prompts/extra_tools.txt`` its transition
            answers with (checked to exist when the tool is turned on, and counted in the prompt
            version); the paper tools' feedback is in ``feedback.txt``.
    """

    name: str
    description: str
    args_model: type[BaseModel]
    guide: str = ""
    feedback: tuple[str, ...] = ()

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments (an ``object`` schema without pydantic titles).

        An optional argument (``X | None = None``) is described as ``X``, not as "X or null": it
        is optional because it is not in ``required``.
        """
        schema = self.args_model.model_json_schema()
        props = {
            name: _without_null({key: value for key, value in prop.items() if key != "title"})
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


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    """``prop`` with an ``anyOf: [X, null]`` (and its ``default: null``) folded into ``X``."""
    options = prop.get("anyOf")
    if not isinstance(options, list):
        return prop
    kept = [o for o in options if o != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(options):
        return prop
    folded = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**kept[0], **folded}


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

SEGMENT_LIKE = ToolSpec(
    "segment_like",
    "Use one current mask as an example: the segmentation model finds every object in the original image "
    "that looks like the object in that mask, the example itself included. The new masks replace all "
    "current ones and are numbered 1, 2, ... by confidence, highest first; you get back the image with "
    "them drawn on it.",
    SegmentLikeArgs,
    guide="segment_like_guide",
    feedback=("like_found", "like_empty", "like_bad_id"),
)
SEGMENT_AT = ToolSpec(
    "segment_at",
    "Segment the one object at a place you point to in the original image: give points on it, a box "
    "around it, or both, in pixels of the first image as you see it. The new mask replaces all current "
    "ones and is numbered 1; you get back the image with it drawn on it.",
    SegmentAtArgs,
    guide="segment_at_guide",
    feedback=("at_found", "at_empty", "at_bad_coordinates"),
)

TOOLS: dict[str, ToolSpec] = {
    t.name: t for t in (SEGMENT_PHRASE, EXAMINE_EACH_MASK, SELECT_MASKS_AND_RETURN, REPORT_NO_MASK)
}
"""The paper's four tools, always offered."""

ExtraTool = Literal["segment_like", "segment_at"]
EXTRA_TOOLS: dict[str, ToolSpec] = {t.name: t for t in (SEGMENT_LIKE, SEGMENT_AT)}
"""The opt-in tools (``AgentConfig.tools``), in the order they are listed to the model."""


def canonical_extras(names: Iterable[str]) -> tuple[str, ...]:
    """Extra tool names, each once, in the order of :data:`EXTRA_TOOLS`.

    Raises:
        ValueError: A name is not an extra tool (the message lists them).
    """
    wanted = set(names)
    unknown = sorted(wanted - set(EXTRA_TOOLS))
    if unknown:
        paper = [n for n in unknown if n in TOOLS]
        why = f" ({', '.join(paper)} always offered)" if paper else ""
        raise ValueError(f"unknown extra tool(s) {', '.join(map(repr, unknown))}{why}; the extra tools are: "
                         f"{', '.join(EXTRA_TOOLS)}")
    return tuple(name for name in EXTRA_TOOLS if name in wanted)


def offered_tools(extra: Iterable[str] = ()) -> dict[str, ToolSpec]:
    """The tools offered to the model: the four paper tools, then the named extras.

    Raises:
        ValueError: For an unknown extra tool name.
    """
    return {**TOOLS, **{name: EXTRA_TOOLS[name] for name in canonical_extras(extra)}}


def tools_prompt_text(extra: tuple[str, ...] = ()) -> str:
    """The description of the offered tools for the text-protocol system prompt.

    Args:
        extra: Extra tool names (``AgentConfig.tools``); with none, exactly the paper tools' text.
    """
    return _tools_prompt_text(canonical_extras(extra))


@cache
def _tools_prompt_text(extra: tuple[str, ...]) -> str:
    return "\n".join(t.prompt_text() for t in offered_tools(extra).values())


@cache
def _openai_tools(extra: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    return tuple(t.openai_schema() for t in offered_tools(extra).values())


def openai_tools(extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The OpenAI ``tools`` list of the native protocol (a fresh copy; the schemas are built once).

    Args:
        extra: Extra tool names (``AgentConfig.tools``); with none, exactly the paper tools.
    """
    return copy.deepcopy(list(_openai_tools(canonical_extras(extra))))
