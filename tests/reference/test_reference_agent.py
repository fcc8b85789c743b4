"""Differential tests: our agent (paper preset) against Meta's reference SAM 3 Agent, on scripted runs.

Both sides get the same image, query, main-loop replies, per-mask verdicts and raw SAM 3 outputs
(masks, scores and predicted boxes in no particular order). Each parity trajectory must give the
same trace: the masks shown (and their numbering) after every segment call, the number of main and
verification calls, the images of every request, which earlier turns survive pruning, and the final
masks, scores and boxes. The ``DIFFERENCES`` below are deliberate: there the test asserts what each
side does instead (see ``test_documented_difference``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from meta_runner import RawOutput, Trace, run_meta
from our_runner import run_ours
from PIL import Image

from sam3agent.config import AgentConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

H, W = 60, 80
# (examine round from 1, mask number from 1) -> reject? (None: a reply without a readable verdict)
Reject = Callable[[int, int], bool | None]


# -- masks, raw outputs and scripts -------------------------------------------------------------


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A rectangular ``(H, W)`` bool mask covering rows ``y0:y1`` and columns ``x0:x1``."""
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def pixel(y: int, x: int) -> np.ndarray:
    """A one-pixel mask."""
    return rect(y, y + 1, x, x + 1)


def raw(*items: tuple[np.ndarray, float]) -> RawOutput:
    """A raw SAM 3 output in the given order; predicted boxes are the masks' boxes, nudged off-grid."""
    masks = np.stack([m for m, _ in items]) if items else np.zeros((0, H, W), bool)
    boxes = []
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        tight = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1] if len(rows) else [0, 0, 0, 0]
        boxes.append(np.asarray(tight, np.float64) + np.array([0.25, -0.5, 0.75, 0.4]) * ((i % 3) + 1) / 3)
    return RawOutput(masks, np.asarray([s for _, s in items], np.float64), np.asarray(boxes).reshape(-1, 4))


L_SHAPE = rect(30, 55, 40, 48) | rect(47, 55, 40, 75)
RAW: dict[str, RawOutput] = {
    "dog": raw((rect(25, 40, 5, 20), 0.8), (rect(5, 20, 5, 30), 0.9), (L_SHAPE, 0.85)),
    "cat": raw((rect(26, 39, 6, 19), 0.88)),
    "person": raw((rect(2, 12, 50, 60), 0.7), (rect(5, 20, 5, 30), 0.75)),
    # a small mask inside a big one scores higher: the big one goes, and a third survives
    "box": raw((rect(5, 55, 5, 75), 0.7), (rect(30, 40, 30, 40), 0.6), (rect(56, 60, 0, 4), 0.65),
               (rect(10, 20, 10, 20), 0.9)),
    # IoM exactly 0.3 (kept), 31/100 (dropped), 29/99 (kept); three tied scores, two overlapping
    "tile": raw((rect(40, 50, 63, 73), 0.7), (rect(0, 10, 7, 17), 0.8),
                (rect(20, 30, 7, 17) | pixel(20, 6), 0.82), (rect(40, 50, 7, 17) & ~pixel(40, 7), 0.7),
                (rect(0, 10, 0, 10), 0.9), (rect(40, 50, 60, 70), 0.7), (rect(20, 30, 0, 10), 0.85),
                (rect(40, 50, 0, 10), 0.75)),
    # empty (dropped), the last pixel (RLE of 4 chars: dropped, after it removed the big mask
    # holding it), the first pixel (5 chars: kept), a two-pixel mask
    "speck": raw((rect(0, 0, 0, 0), 0.95), (rect(40, 60, 60, 80), 0.6), (pixel(59, 79), 0.93),
                 (rect(20, 30, 20, 30), 0.8), (pixel(0, 0), 0.9), (rect(10, 12, 40, 41), 0.7)),
    # the whole image scores highest: it removes every other mask, then its 4-char RLE removes it
    "wall": raw((rect(10, 20, 10, 20), 0.8), (rect(0, H, 0, W), 0.9), (rect(30, 40, 50, 70), 0.7)),
    # the processor keeps scores strictly above 0.5
    "cup": raw((rect(0, 5, 0, 5), 0.5), (rect(10, 15, 0, 5), 0.49), (rect(20, 25, 0, 5), 0.51),
               (rect(30, 35, 0, 5), 0.500001), (rect(40, 45, 0, 5), 0.8)),
    "bead": raw(*[(rect(4 + 14 * (i // 4), 12 + 14 * (i // 4), 3 + 20 * (i % 4), 15 + 20 * (i % 4)),
                   0.55 + 0.031 * ((i * 5) % 12)) for i in range(12)]),
}


def _call(name: str, **params: object) -> str:
    return f"<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"


def seg(phrase: str) -> str:
    """A segment_phrase call."""
    return _call("segment_phrase", text_prompt=phrase)


def sel(*ids: int) -> str:
    """A select_masks_and_return call."""
    return _call("select_masks_and_return", final_answer_masks=list(ids))


EXAMINE, NO_MASK = _call("examine_each_mask"), _call("report_no_mask")
MALFORMED = '<tool>{name: "select_masks_and_return", parameters: {final_answer_masks: [1]}}</tool>'
MENTIONS_SEGMENT = "I will not call segment_phrase again; checking the masks instead.\n" + EXAMINE


def script(calls: tuple[str, ...]) -> list[str]:
    """The scripted main replies: each starts with a unique ``Step k.`` line, then reasoning and a call."""
    return [f"Step {k}.\nI compare the image with the query.\n{c}" for k, c in enumerate(calls, 1)]


def verifier(reject: Reject) -> Callable[[int], str]:
    """A fresh per-run verify reply; a new examine round starts whenever mask 1 is asked."""
    rounds = [0]

    def reply(mask_number: int) -> str:
        rounds[0] += mask_number == 1
        rejected = reject(rounds[0], mask_number)
        if rejected is None:
            return f"Mask {mask_number} is hard to judge."
        verdict = "Reject" if rejected else "Accept"
        return f"Mask {mask_number} looks {'wrong' if rejected else 'right'}.\n<verdict>{verdict}</verdict>"

    return reply


def never(_round: int, _mask: int) -> bool:
    return False


def always(_round: int, _mask: int) -> bool:
    return True


@dataclass(frozen=True)
class Case:
    """One scripted trajectory."""

    name: str
    calls: tuple[str, ...]
    reject: Reject = never
    query: str = "the dog"
    render: bool = False  # run the reference's own (slow) drawing too


CASES = [
    Case("report_first", (NO_MASK,)),
    Case("zero_then_report", (seg("unicorn"), NO_MASK)),
    Case("zero_then_found", (seg("unicorn"), seg("dog"), sel(1, 3))),
    Case("select_one", (seg("dog"), sel(2))),
    Case("select_all", (seg("dog"), sel(3, 1, 2))),
    Case("report_after_masks", (seg("dog"), NO_MASK)),
    Case("nested", (seg("box"), sel(1, 2, 3))),
    Case("iom_boundary_and_ties", (seg("tile"), sel(1, 2, 3, 4, 5, 6))),
    Case("empty_and_tiny", (seg("speck"), EXAMINE, sel(1, 2, 3)), render=True),
    Case("full_image_wipes_all", (seg("wall"), seg("dog"), sel(1))),
    Case("processor_threshold", (seg("cup"), sel(1, 2, 3))),
    Case("examine_accept_all", (seg("dog"), EXAMINE, sel(1, 2, 3))),
    Case("examine_reject_some", (seg("dog"), EXAMINE, sel(1, 2)), lambda r, k: k == 2),
    Case("examine_reject_all_then_segment", (seg("dog"), EXAMINE, seg("cat"), sel(1)), lambda r, k: r == 1),
    Case("examine_reject_all_then_report", (seg("dog"), EXAMINE, NO_MASK), always),
    Case("examine_twice", (seg("dog"), EXAMINE, EXAMINE, sel(1)), lambda r, k: (r, k) in {(1, 3), (2, 1)}),
    Case("examine_nested", (seg("box"), EXAMINE, sel(1, 2)), lambda r, k: k == 2),
    Case("examine_tiles", (seg("tile"), EXAMINE, sel(2, 3)), lambda r, k: k % 2 == 1, render=True),
    Case("examine_many", (seg("bead"), EXAMINE, sel(1, 2, 3, 4, 5, 6)), lambda r, k: k % 2 == 0),
    Case("repeated_phrase", (seg("dog"), seg("dog"), sel(1))),
    Case("repeated_earlier_phrase", (seg("cat"), seg("dog"), seg("cat"), sel(2))),
    Case("repeat_then_new_phrase", (seg("dog"), seg("cat"), seg("dog"), seg("person"), sel(2))),
    Case("three_segments", (seg("cat"), EXAMINE, seg("unicorn"), seg("dog"), sel(1, 2))),
    Case("three_segments_examined", (seg("cat"), EXAMINE, seg("person"), EXAMINE, seg("dog"), EXAMINE, sel(1)),
         lambda r, k: (r, k) in {(1, 1), (2, 2), (3, 3)}),
    Case("examine_then_segment_again", (seg("dog"), EXAMINE, seg("person"), EXAMINE, sel(1)),
         lambda r, k: k == 1),
]


# -- running and comparing ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 80x60 RGB scene with some structure, as a PNG file."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    img[..., 0] = (np.arange(W) * 3).astype(np.uint8)
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(img).save(path)
    return path


def run_both(image_path: Path, out_dir: Path, case: Case, raws: Mapping[str, RawOutput] = RAW,
             **ours: object) -> tuple[Trace, Trace]:
    """Run the reference and our agent on one case."""
    replies = script(case.calls)
    ref = run_meta(image_path, case.query, replies, verifier(case.reject), raws, out_dir, render=case.render)
    our = run_ours(image_path, case.query, replies, verifier(case.reject), raws, **ours)  # type: ignore[arg-type]
    return ref, our


def _masks_diff(what: str, ref: np.ndarray | None, our: np.ndarray | None) -> list[str]:
    if ref is None or our is None:
        return [] if ref is None and our is None else [f"{what}: reference {ref is not None}, ours {our is not None}"]
    if ref.shape != our.shape:
        return [f"{what}: reference has {len(ref)} masks {ref.shape}, ours {len(our)} {our.shape}"]
    bad = [i + 1 for i in range(len(ref)) if not np.array_equal(ref[i], our[i])]
    return [f"{what}: mask number(s) {bad} differ in pixels"] if bad else []


def differences(ref: Trace, our: Trace, *, main_only: slice | None = None) -> list[str]:
    """Every way two traces differ (empty when they agree); ``main_only`` compares just those main requests."""
    out: list[str] = []
    ref_main, our_main = ref.main[main_only or slice(None)], our.main[main_only or slice(None)]
    if len(ref_main) != len(our_main):
        out.append(f"main calls: reference {len(ref_main)}, ours {len(our_main)}")
    for i, (a, b) in enumerate(zip(ref_main, our_main, strict=False), 1):
        if a != b:
            out.append(f"main request {i}: reference {a}, ours {b}")
    if main_only is not None:
        return out
    if ref.error is not None or our.error is not None:
        out.insert(0, f"errors: reference {ref.error!r}, ours {our.error!r}")
    for what, a, b in (("verified mask numbers", ref.verify_masks, our.verify_masks),
                       ("images per verification", ref.verify_images, our.verify_images)):
        if a != b:
            out.append(f"{what}: reference {a}, ours {b}")
    if len(ref.shown) != len(our.shown):
        out.append(f"segment calls run: reference {len(ref.shown)}, ours {len(our.shown)}")
    for i, (a, b) in enumerate(zip(ref.shown, our.shown, strict=False), 1):
        out += _masks_diff(f"masks shown after segment call {i}", a, b)
    out += _masks_diff("final masks", ref.final_masks, our.final_masks)
    if ref.final_scores is not None and our.final_scores is not None and (
            ref.final_scores.shape != our.final_scores.shape
            or not np.allclose(ref.final_scores, our.final_scores, atol=1e-6)):
        out.append(f"final scores: reference {ref.final_scores}, ours {our.final_scores}")
    if ref.final_boxes is not None and (our.final_boxes is None or our.final_boxes.shape != ref.final_boxes.shape
                                        or not np.allclose(ref.final_boxes, our.final_boxes, atol=1e-3)):
        out.append(f"final predicted boxes: reference {ref.final_boxes.tolist()}, ours "
                   f"{None if our.final_boxes is None else our.final_boxes.tolist()}")
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_trajectory(case: Case, image_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The reference and our paper preset do the same thing on a scripted run."""
    ref, our = run_both(image_path, tmp_path_factory.mktemp("meta"), case)
    found = differences(ref, our)
    assert not found, "our agent differs from the reference:\n" + "\n".join(found)


# -- deliberate differences: the model's mistakes are fed back to it and cost a turn; a mistake never ends a run --


@dataclass(frozen=True)
class Difference:
    """A deliberate difference: up to ``agree`` main calls both sides match, then they part.

    Attributes:
        case: The script.
        agree: Main requests that must be identical on both sides.
        ref_error: What the reference raises (``None``: it ends normally after ``ref_calls``).
        ref_calls: Main calls the reference makes.
        our_calls: Main calls our agent makes.
        our_failure: The model mistake our agent counts, if any.
        ref_final: The reference's final masks as ``(segment call, mask numbers)`` of what it showed.
        our_final: Ours, likewise.
    """

    case: Case
    agree: int
    ref_error: type[BaseException] | None
    ref_calls: int
    our_calls: int
    our_failure: str | None
    ref_final: tuple[int, tuple[int, ...]] | None
    our_final: tuple[int, tuple[int, ...]]


DIFFERENCES = [
    # tolerant parser: the reference raises on malformed JSON; ours feeds the error back
    Difference(Case("malformed_reply", (seg("dog"), MALFORMED, sel(1))), 2, ValueError, 2, 3, "parse_error",
               None, (1, (1,))),
    # invalid / duplicate ids: the reference drops them silently and ends; ours asks again
    Difference(Case("invalid_ids", (seg("dog"), sel(2, 7), sel(2, 3))), 2, None, 2, 3, "bad_ids",
               (1, (2,)), (1, (2, 3))),
    Difference(Case("duplicate_ids", (seg("dog"), sel(1, 1), sel(1, 2))), 2, None, 2, 3, "bad_ids",
               (1, (1,)), (1, (1, 2))),
    # select with no current masks: the reference ends with an empty answer; ours says there are none
    Difference(Case("select_after_all_rejected", (seg("dog"), EXAMINE, sel(1), NO_MASK), always), 3, None, 3, 4,
               "no_masks", (1, ()), (1, ())),
    Difference(Case("select_after_zero_masks", (seg("unicorn"), sel(1), NO_MASK)), 2, None, 2, 3, "no_masks",
               (1, ()), (1, ())),
    # examine with no current masks / right after a refused phrase: the reference's IndexError
    Difference(Case("examine_zero_masks", (seg("unicorn"), EXAMINE, NO_MASK)), 2, IndexError, 2, 3, "no_masks",
               None, (1, ())),
    Difference(Case("examine_after_refused_phrase", (seg("dog"), seg("dog"), EXAMINE, sel(1))), 3, IndexError, 3, 4,
               "reused_phrase", None, (1, (1,))),
    # a verification reply without a readable verdict: the reference raises; ours keeps the mask
    Difference(Case("unreadable_verdict", (seg("dog"), EXAMINE, sel(2)), lambda r, k: None if k == 2 else False),
               2, ValueError, 2, 3, "unclear_verdict", None, (1, (2,))),
    # the first call must be segment_phrase or report_no_mask: the reference asserts
    Difference(Case("examine_first", (EXAMINE, seg("dog"), sel(1))), 1, AssertionError, 1, 3, "no_masks",
               None, (1, (1,))),
    # a third examine in one window: the reference's pruning asserts fewer than 10 messages
    Difference(Case("three_examines", (seg("dog"), EXAMINE, EXAMINE, EXAMINE, sel(1))), 4, AssertionError, 4, 5,
               None, None, (1, (1,))),
    # phrases are compared normalised (case, spaces): "Dog" after "dog" is refused; the reference runs it
    Difference(Case("case_variant_phrase", (seg("dog"), seg("Dog"), sel(1))), 2, None, 3, 3, "reused_phrase",
               (2, ()), (1, (1,))),
    # the reference restarts its window at any reply that mentions segment_phrase in front of a call
    Difference(Case("reasoning_mentions_segment", (seg("dog"), MENTIONS_SEGMENT, sel(1))), 2, None, 3, 3, None,
               (1, (1,)), (1, (1,))),
]


def _final(trace: Trace, spec: tuple[int, tuple[int, ...]]) -> np.ndarray:
    call, numbers = spec
    return trace.shown[call - 1][[n - 1 for n in numbers]]


@pytest.mark.parametrize("diff", DIFFERENCES, ids=[d.case.name for d in DIFFERENCES])
def test_documented_difference(diff: Difference, image_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where we deliberately differ, each side does what is documented, and both agree until then."""
    ref, our = run_both(image_path, tmp_path_factory.mktemp("meta"), diff.case)
    found = differences(ref, our, main_only=slice(0, diff.agree))
    assert not found, "the two sides differ before the documented difference:\n" + "\n".join(found)
    if diff.ref_error is None:
        assert ref.error is None, f"the reference raised {ref.error!r}"
        assert diff.ref_final is not None
        assert np.array_equal(ref.final_masks, _final(ref, diff.ref_final))
    else:
        assert isinstance(ref.error, diff.ref_error), f"the reference raised {ref.error!r}"
    assert len(ref.main) == diff.ref_calls
    assert our.error is None, f"our agent raised {our.error!r}"
    assert len(our.main) == diff.our_calls
    failures = {k: v for k, v in our.extra["failures"].items() if v}
    assert failures == ({diff.our_failure: 1} if diff.our_failure else {})
    assert np.array_equal(our.final_masks, _final(our, diff.our_final))
    if diff.case.name == "reasoning_mentions_segment":  # the only difference is what the last call sees
        assert ref.main[2].steps == (2,) and our.main[2].steps == (1, 2)


# -- the tiny real engine -----------------------------------------------------------------------


def test_real_engine_raw_masks(image_path: Path, tiny_engine, tmp_path_factory: pytest.TempPathFactory) -> None:  # type: ignore[no-untyped-def]
    """Raw masks of the tiny real SAM 3 (random weights): the reference vs our agent over that engine.

    The raw output is taken with the engine's duplicate removal off, no score floor and no cap. The
    random model's mask logits are all near 0, so at the usual 0.5 one big blob overlaps everything;
    a mask threshold just above it gives small, partly overlapping masks. The score threshold both
    sides use sits in the widest gap between the lower raw scores, so float32 rounding cannot decide
    it. Our side runs the real engine with the paper preset (and those two thresholds).
    """
    mask_threshold = 0.5001
    det = tiny_engine.segment(str(image_path), "dog", score_threshold=0.0, mask_threshold=mask_threshold,
                              max_masks=1000, dedup_iou=None)
    scores = np.asarray(det.confidence, np.float64)
    assert len(det) >= 10, f"the tiny model gave only {len(det)} masks"
    ranked = np.sort(scores)[::-1]
    k = 7 + int(np.argmax(ranked[7:-1] - ranked[8:]))
    assert ranked[k] - ranked[k + 1] > 1e-6, "no usable gap between the raw scores"
    threshold = float(np.float32((ranked[k] + ranked[k + 1]) / 2))
    unique = len(set(scores.tolist())) == len(scores)
    order = np.random.default_rng(1).permutation(len(det)) if unique else np.arange(len(det))
    raws = {"dog": RawOutput(det.mask[order], scores[order], np.asarray(det.data["predicted_xyxy"])[order])}
    probe = run_meta(image_path, "the dog", script((seg("dog"), NO_MASK)), verifier(never), raws,
                     tmp_path_factory.mktemp("meta"), score_threshold=threshold)
    shown = len(probe.shown[0])
    assert shown >= 3 and shown < k + 1, f"the reference showed {shown} of {k + 1} masks; pick another setting"
    case = Case("real", (seg("dog"), EXAMINE, sel(*range(1, shown))), lambda r, n: n == 2)
    replies = script(case.calls)
    ref = run_meta(image_path, case.query, replies, verifier(case.reject), raws, tmp_path_factory.mktemp("meta"),
                   score_threshold=threshold)
    config = AgentConfig.paper(score_threshold=threshold, mask_threshold=mask_threshold)
    our = run_ours(image_path, case.query, replies, verifier(case.reject), raws, engine=tiny_engine, config=config)
    found = differences(ref, our)
    assert not found, "our agent over the real engine differs from the reference:\n" + "\n".join(found)
