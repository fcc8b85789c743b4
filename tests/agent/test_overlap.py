"""Overlap removal of segment_phrase masks (greedy intersection over the smaller mask)."""

from __future__ import annotations

import numpy as np
import supervision as sv
from agent_helpers import H, W, rect, tool

from sam3agent import Agent, AgentConfig
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.overlap import overlap_keep, remove_overlaps, rle_chars
from sam3core.fake import FakeEngine


def _dets(masks: list[np.ndarray], scores: list[float]) -> sv.Detections:
    stack = np.stack(masks)
    return sv.Detections(xyxy=sv.mask_to_xyxy(stack).astype(np.float32), mask=stack,
                         confidence=np.asarray(scores, np.float32),
                         data={"phrase": np.array(["p"] * len(masks), dtype=object)})


def _brute_force(masks: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """The rule written out plainly: full-image intersections, float32 ratio, strict comparison."""
    kept: list[int] = []
    for i in sorted(range(len(masks)), key=lambda k: -scores[k]):
        ok = True
        for j in kept:
            inter = np.float32(np.logical_and(masks[i], masks[j]).sum())
            small = np.float32(max(1, min(masks[i].sum(), masks[j].sum())))
            ok &= bool(inter / small <= np.float32(threshold))
        if ok:
            kept.append(i)
    return kept


def test_nested_part_is_removed_but_iou_would_keep_it() -> None:
    whole, part = rect(0, 40, 0, 40), rect(0, 10, 0, 10)  # IoU 0.0625, IoM 1.0
    out = remove_overlaps(_dets([part, whole], [0.6, 0.9]), 0.3)
    assert len(out) == 1 and np.array_equal(out.mask[0], whole)


def test_threshold_is_strict_and_on_the_smaller_mask() -> None:
    a = rect(0, 10, 0, 10)                     # 100 px
    b = rect(0, 10, 7, 27)                     # 200 px, 30 px shared: IoM exactly 0.3 -> kept
    c = rect(0, 10, 6, 26)                     # 40 px shared with a: IoM 0.4 -> dropped
    assert len(remove_overlaps(_dets([a, b], [0.9, 0.8]), 0.3)) == 2
    assert len(remove_overlaps(_dets([a, c], [0.9, 0.8]), 0.3)) == 1


def test_score_order_with_stable_ties_and_aligned_data() -> None:
    masks = [rect(0, 5, 0, 5), rect(10, 15, 10, 15), rect(20, 25, 20, 25)]
    dets = _dets(masks, [0.7, 0.9, 0.7])
    dets.data["phrase"] = np.array(["a", "b", "c"], dtype=object)
    out = remove_overlaps(dets, 0.3)
    assert list(out.data["phrase"]) == ["b", "a", "c"]
    assert np.allclose(out.confidence, [0.9, 0.7, 0.7])


def test_matches_brute_force_on_random_overlapping_masks() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        n = int(rng.integers(2, 9))
        masks = []
        for _ in range(n):
            y0, x0 = rng.integers(0, H - 5), rng.integers(0, W - 5)
            masks.append(rect(y0, y0 + int(rng.integers(2, 30)), x0, x0 + int(rng.integers(2, 40))))
        scores = rng.choice([0.6, 0.7, 0.8, 0.9], size=n)  # many ties
        for threshold in (0.0, 0.3, 0.5, 1.0):
            got = overlap_keep(np.stack(masks), scores, threshold).tolist()
            assert got == _brute_force(np.stack(masks), scores, threshold)


def test_empty_masks_are_dropped_and_none_skips_only_the_overlap_step() -> None:
    empty = np.zeros((H, W), bool)
    a, b = rect(0, 20, 0, 20), rect(0, 10, 0, 10)
    out = remove_overlaps(_dets([a, b, empty], [0.9, 0.8, 0.95]), None)
    assert len(out) == 2  # the empty one is gone, the nested one stays without overlap removal


def test_short_rle_filter_drops_what_the_reference_drops() -> None:
    empty, full, box = np.zeros((H, W), bool), np.ones((H, W), bool), rect(0, 20, 0, 20)
    assert rle_chars(empty) <= 4 and rle_chars(full) <= 4 < rle_chars(box)  # 60x80: the full mask is "short"
    dets = _dets([full, box, empty], [0.9, 0.8, 0.95])
    assert len(remove_overlaps(dets, None, drop_short_rle=True)) == 1
    assert len(remove_overlaps(dets, None)) == 2  # by default only the empty mask goes


async def test_agent_applies_it_to_any_engine(image) -> None:
    whole, part, other = rect(0, 40, 0, 40), rect(0, 10, 0, 10), rect(45, 60, 50, 80)
    engine = FakeEngine({"cup": [whole, part, other]}, scores={"cup": [0.9, 0.8, 0.7]})
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="cup"),
                       tool("select_masks_and_return", final_answer_masks=[1, 2])])
    result = await Agent(llm, engine, AgentConfig()).arun(image, "the cups")
    assert result.status == "answered" and len(result.detections) == 2
    assert np.array_equal(result.detections.mask[1], other)
    off = ScriptedLLM([tool("segment_phrase", text_prompt="cup"),
                       tool("select_masks_and_return", final_answer_masks=[3])])
    kept = await Agent(off, engine, AgentConfig(overlap_iom=None)).arun(image, "the cups")
    assert np.array_equal(kept.detections.mask[0], other)  # all three were shown
