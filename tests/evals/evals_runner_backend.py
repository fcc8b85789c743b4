"""Test-only backends for ``--_fake-backend evals_runner_backend:FUNC``: a fake engine + a scripted policy.

The engine returns masks derived from the ground truth; the policy (a callable reply of
:class:`ScriptedLLM`) reads each request and answers by rules, so the expected scores can be
worked out by hand. Both are built from the command's own ``args`` (``--data`` / ``--gt``), so a
real ``python -m evals ... run`` subprocess can use them.

Environment knobs (read when the backend is built):

* ``EVALS_TEST_LATENCY``: seconds each LLM call sleeps (to kill a run mid-way);
* ``EVALS_TEST_FAIL``: ``|``-separated queries whose LLM calls raise ``LLMBackendError``
  (``*``: every query).

ReasonSeg plan (fixture queries): ``the red box`` segments ``target`` and selects every mask;
the long ``Which object ...`` query reports no mask at once; the ``café`` query first replies
without a tool call (``no_tool_call``), then segments ``target``; ``the tall sign`` first selects
an id out of range (``bad_ids``); ``the small square`` segments ``whole`` (the whole image).
Any other query (OmniLabel descriptions and categories) segments its own text, except texts with
``bicycle``, which segment ``whole`` (a false positive scored 0.95). ``found nothing`` is
answered with ``report_no_mask``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from evals.reasonseg import load_samples, rasterize_shapes
from sam3agent.config import AgentConfig
from sam3agent.llm.base import LLMBackendError, LLMRequest
from sam3agent.llm.scripted import ScriptedLLM
from sam3core.fake import FakeEngine
from sam3core.image import ImageHandle, prepare_image

WHOLE_SCORE = 0.95
REPLIES = 10_000
ENGINES: list[FakeEngine] = []
"""Every engine built in this process (tests inspect the last one's calls)."""

NO_MASK = "Which object in this picture would a child most likely want to play with?"
GARBAGE_FIRST = "Which part of the café’s terrace would you sit in to read?"
BAD_IDS_FIRST = "the tall sign"
WHOLE = ("the small square", "bicycle")


def tool(name: str, **params: object) -> str:
    """A text-protocol reply calling ``name``."""
    return f"<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"


def _query(request: LLMRequest) -> str:
    match = re.search(r"^Query: (.*)$", request.messages[1].plain_text, re.M)
    if match is None:
        raise AssertionError("the first user turn carries no 'Query:' line")
    return match.group(1)


def _first_phrase(query: str) -> str:
    if query == "the red box" or query in (GARBAGE_FIRST, BAD_IDS_FIRST):
        return "target"
    if any(w in query for w in WHOLE):
        return "whole"
    return query


def policy(request: LLMRequest) -> str:
    """Answer one main-loop request by the rules of the module docstring."""
    query = _query(request)
    failing = os.environ.get("EVALS_TEST_FAIL", "")
    if failing == "*" or query in failing.split("|"):
        raise LLMBackendError("test-hook", "injected failure")
    last = request.messages[-1].plain_text
    if len(request.messages) == 2:
        if query == NO_MASK:
            return tool("report_no_mask")
        if query == GARBAGE_FIRST:
            return "Let me look at the terrace first."
        return tool("segment_phrase", text_prompt=_first_phrase(query))
    if "could not be used" in last:
        return tool("segment_phrase", text_prompt=_first_phrase(query))
    if "found nothing" in last:
        return tool("report_no_mask")
    count = re.search(r"found (\d+) mask", last) or re.search(r"numbered 1 to (\d+)\.", last)
    if count is None:
        raise AssertionError(f"unexpected feedback: {last[:200]!r}")
    n = int(count.group(1))
    if query == BAD_IDS_FIRST and "was not accepted" not in last:
        return tool("select_masks_and_return", final_answer_masks=[n + 1])
    return tool("select_masks_and_return", final_answer_masks=list(range(1, n + 1)))


def _llm() -> ScriptedLLM:
    latency = float(os.environ.get("EVALS_TEST_LATENCY", "0") or 0)
    return ScriptedLLM([policy] * REPLIES, latency_s=latency, name="test-policy")


def _whole(handle: ImageHandle, phrase: str) -> list[np.ndarray]:
    return [np.ones((handle.height, handle.width), bool)]


def reasonseg(args: argparse.Namespace, config: AgentConfig) -> tuple[ScriptedLLM, FakeEngine]:
    """``target`` -> each target polygon of the image drawn alone; ``whole`` -> the whole image."""
    objects: dict[str, list[np.ndarray]] = {}
    for s in load_samples(args.data):
        kept = [sh for sh in s.shapes if sh.label.lower() != "flag" and "ignore" not in sh.label.lower()]
        objects[prepare_image(s.image_path).digest] = [rasterize_shapes([sh], s.height, s.width) == 1 for sh in kept]

    def target(handle: ImageHandle, phrase: str) -> list[np.ndarray]:
        return objects[handle.digest]

    engine = FakeEngine({"target": target, "whole": _whole}, scores={"whole": [WHOLE_SCORE]})
    ENGINES.append(engine)
    return _llm(), engine


def omnilabel(args: argparse.Namespace, config: AgentConfig) -> tuple[ScriptedLLM, FakeEngine]:
    """A description's (or category's) text -> one mask filling each non-crowd GT box of the pair."""
    data: dict[str, Any] = json.loads(Path(args.gt).read_text(encoding="utf-8"))
    image_of: dict[str, int] = {}
    for img in data["images"]:
        path = Path(args.images) / img["file_name"]
        if path.is_file():
            image_of[prepare_image(path).digest] = img["id"]
    description_of = {d["text"].lower(): d["id"] for d in data["descriptions"]}

    def boxes(handle: ImageHandle, phrase: str) -> list[np.ndarray]:
        image_id, description_id = image_of[handle.digest], description_of[phrase.lower()]
        out = []
        for a in data["annotations"]:
            if a["image_id"] == image_id and description_id in a["description_ids"] and not a["iscrowd"]:
                x, y, w, h = (int(v) for v in a["bbox"])
                m = np.zeros((handle.height, handle.width), bool)
                m[y : y + h, x : x + w] = True
                out.append(m)
        return out

    masks: dict[str, Any] = {text: boxes for text in description_of}
    masks["whole"] = _whole
    engine = FakeEngine(masks, scores={"whole": [WHOLE_SCORE]})
    ENGINES.append(engine)
    return _llm(), engine
