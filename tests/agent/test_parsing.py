"""The tolerant tool-call parser and the verdict reader."""

from __future__ import annotations

import pytest

from sam3agent.llm.base import Completion, ToolCall
from sam3agent.parsing import ParseError, parse_completion, parse_native, parse_text, parse_verdict
from sam3agent.tools import SegmentPhraseArgs, SelectMasksArgs

SELECT = '<tool>{"name": "select_masks_and_return", "parameters": {"final_answer_masks": %s}}</tool>'
SEG = '{"name": "segment_phrase", "parameters": {"text_prompt": "dog"}}'


@pytest.mark.parametrize(
    "reply",
    [
        f"<tool>{SEG}</tool>",
        f"I should look for dogs.\n<tool>{SEG}</tool>\n",
        f"<think>maybe <tool>{{bad}}</tool> hmm</think>\n<tool>{SEG}</tool>",
        f"reasoning the template opened</think><tool>{SEG}</tool>",
        f"<tool>\n```json\n{SEG}\n```\n</tool>",
        f"<tool>{SEG}}}}}</tool>",
        f"<tool>{SEG}",
        f"<tool>{SEG[:-1]}</tool>",
        f"<tool_call>{SEG}</tool_call>",
        '<tool>{"name": "segment_phrase", "arguments": {"text_prompt": "dog"}}</tool>',
        '<tool>{"name": "segment_phrase", "parameters": "{\\"text_prompt\\": \\"dog\\"}"}</tool>',
        f"<TOOL> {SEG} </TOOL>",
    ],
)
def test_text_tolerated_forms(reply: str) -> None:
    call = parse_text(reply)
    assert call.name == "segment_phrase"
    assert isinstance(call.args, SegmentPhraseArgs) and call.args.text_prompt == "dog"
    assert call.notes == ()


def test_several_calls_first_taken_and_noted() -> None:
    reply = f'<tool>{SEG}</tool> and <tool>{{"name": "report_no_mask", "parameters": {{}}}}</tool>'
    call = parse_text(reply)
    assert call.name == "segment_phrase"
    assert len(call.notes) == 1
    assert "2 tool calls" in call.notes[0] and "first (segment_phrase)" in call.notes[0]


def test_no_arg_tool_without_parameters() -> None:
    assert parse_text('<tool>{"name": "examine_each_mask"}</tool>').name == "examine_each_mask"


def test_select_accepts_a_lone_number() -> None:
    call = parse_text(SELECT % "2")
    assert isinstance(call.args, SelectMasksArgs) and call.args.final_answer_masks == [2]


@pytest.mark.parametrize(
    ("reply", "kind", "needle"),
    [
        ("I am not sure what to do.", "no_tool_call", "no tool call"),
        ("", "no_tool_call", "no tool call"),
        (f"<think><tool>{SEG}</tool></think>done", "no_tool_call", "inside the <think>"),
        (SEG, "no_tool_call", "missing its <tool> tags"),
        ("<tool>segment dog</tool>", "parse_error", "no JSON object"),
        ("<tool>{'name': 'segment_phrase'}</tool>", "parse_error", "double quotes"),
        ('<tool>{"parameters": {}}</tool>', "parse_error", '"name"'),
        ('<tool>{"name": "segment", "parameters": {}}</tool>', "unknown_tool",
         "segment_phrase, examine_each_mask"),
        ('<tool>{"name": "segment_phrase", "parameters": {}}</tool>', "invalid_arguments",
         "missing parameter"),
        ('<tool>{"name": "segment_phrase", "parameters": {"text_prompt": "  "}}</tool>', "invalid_arguments",
         "must not be empty"),
        ('<tool>{"name": "segment_phrase", "parameters": {"text_prompt": "a", "n": 2}}</tool>',
         "invalid_arguments", "unexpected parameter 'n'"),
        (SELECT % '["x"]', "invalid_arguments", "final_answer_masks.0"),
        (SELECT % "[true]", "invalid_arguments", "not true/false"),
        ('<tool>{"name": "report_no_mask", "parameters": [1]}</tool>', "invalid_arguments", "JSON object"),
    ],
)
def test_text_failures_are_typed_and_precise(reply: str, kind: str, needle: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_text(reply)
    assert info.value.kind == kind
    assert needle in info.value.detail


def test_truncated_reply_says_so() -> None:
    with pytest.raises(ParseError) as info:
        parse_completion(Completion(text="Let me think about this at length", finish_reason="length"), "text")
    assert "cut off" in info.value.detail
    with pytest.raises(ParseError) as info:
        parse_text('<tool>{"name": "segment_phrase", "parameters": {"text_prompt": "do', truncated=True)
    assert info.value.kind == "parse_error" and "cut off" in info.value.detail


def test_native_first_call_taken_with_id() -> None:
    completion = Completion(text="", tool_calls=[
        ToolCall("a", "segment_phrase", '{"text_prompt": "cat"}'), ToolCall("b", "report_no_mask", "{}")])
    call = parse_native(completion)
    assert (call.name, call.call_id) == ("segment_phrase", "a")
    assert call.notes and "2 tool calls" in call.notes[0]


def test_native_empty_arguments_mean_none() -> None:
    call = parse_native(Completion(text="", tool_calls=[ToolCall("a", "examine_each_mask", "")]))
    assert call.name == "examine_each_mask"


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (ToolCall("x1", "segment_phrase", '{"text_prompt": '), "parse_error"),
        (ToolCall("x1", "nope", "{}"), "unknown_tool"),
        (ToolCall("x1", "select_masks_and_return", '{"ids": [1]}'), "invalid_arguments"),
    ],
)
def test_native_failures_carry_the_call_id(call: ToolCall, kind: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_native(Completion(text="", tool_calls=[call]))
    assert info.value.kind == kind and info.value.call_id == "x1"


def test_native_falls_back_to_text_blocks() -> None:
    call = parse_completion(Completion(text=f"<tool>{SEG}</tool>"), "native")
    assert call.name == "segment_phrase" and call.call_id is None
    with pytest.raises(ParseError) as info:
        parse_completion(Completion(text="no call here"), "native")
    assert info.value.kind == "no_tool_call" and info.value.call_id is None


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("<verdict>Accept</verdict>", "accept"),
        ("It is the dog.\n<verdict> **Reject** </verdict>", "reject"),
        ("<VERDICT>accepted</VERDICT>", "accept"),
        ("I'll answer <verdict>Accept</verdict> or <verdict>Reject</verdict>", "unclear"),
        ("<think><verdict>Accept</verdict></think>\nReject", "reject"),
        ("The mask covers the cat.\n**Accept**", "accept"),
        ("Verdict: Rejected.", "reject"),
        ("Final answer - accept", "accept"),
        ("I would not accept this mask", "unclear"),
        ("", "unclear"),
    ],
)
def test_parse_verdict(reply: str, verdict: str) -> None:
    assert parse_verdict(reply) == verdict
