"""Our building blocks against Meta's reference helpers, on seeded random inputs.

* overlap removal: ``sam3agent.overlap.remove_overlaps`` (with the short-RLE rule on, as in the paper
  preset) vs the reference's post-processing of SAM 3 output in ``client_sam3.call_sam_service``
  (``remove_overlapping_masks``, then the score sort and the RLE-length filter that follow it there);
* the verifier's zoom geometry: ``sam3agent.render.zoom_geometry`` vs the boxes the reference's
  ``render_zoom_in`` crops by (recorded by wrapping ``PIL.Image.Image.crop`` during a call);
* pruning: our main-loop requests vs what the reference's ``_prune_messages_for_next_round`` leaves,
  on random scripts run through both agents.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from unittest import mock

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import supervision as sv
from meta_runner import run_meta
from our_runner import run_ours
from PIL import Image
from sam3.agent import agent_core
from sam3.agent.helpers import zoom_in
from sam3.agent.helpers.mask_overlap_removal import remove_overlapping_masks
from test_reference_agent import EXAMINE, NO_MASK, RAW, differences, script, seg, sel, verifier

from sam3agent.overlap import remove_overlaps
from sam3agent.render import zoom_geometry

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


# -- random masks -------------------------------------------------------------------------------


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random ``(H, W)`` bool mask: a rectangle, a blob, a pixel, a band, the whole image or nothing."""
    kind = rng.choice(["rect", "rect", "blob", "pixel", "band", "full", "empty"], p=[.3, .2, .25, .1, .07, .03, .05])
    mask = np.zeros((height, width), bool)
    if kind in ("rect", "band"):
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        y1 = int(rng.integers(y0 + 1, height + 1)) if kind == "rect" else height
        x1 = int(rng.integers(x0 + 1, width + 1))
        mask[y0:y1, x0:x1] = True
    elif kind == "blob":
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(1, height / 2), rng.uniform(1, width / 2)
        yy, xx = np.mgrid[:height, :width]
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 + rng.uniform(0, 0.6, (height, width)) < 1.0
    elif kind == "pixel":
        mask[int(rng.integers(0, height)), int(rng.integers(0, width))] = True
    elif kind == "full":
        mask[:] = True
    return mask


def random_detections(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(masks, scores)``: 0-9 masks, some duplicated or nested, scores often tied (float32 values)."""
    n = int(rng.integers(0, 10))
    masks = [random_mask(rng, height, width) for _ in range(n)]
    for i in range(1, n):
        if rng.random() < 0.15:
            masks[i] = masks[int(rng.integers(0, i))].copy()  # an exact duplicate
        elif rng.random() < 0.15:
            masks[i] = masks[int(rng.integers(0, i))] & random_mask(rng, height, width)  # nested
    pool = np.float32([0.6, 0.7, 0.8, 0.9])
    scores = np.where(rng.random(n) < 0.5, rng.choice(pool, n), rng.uniform(0.5, 1.0, n).astype(np.float32))
    stack = np.stack(masks) if masks else np.zeros((0, height, width), bool)
    return stack, scores.astype(np.float32).astype(np.float64)


def rle(mask: np.ndarray) -> str:
    """The COCO RLE ``counts`` string of a mask."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


def reference_keep(masks: np.ndarray, scores: np.ndarray, iom: float) -> list[int]:
    """Indices the reference's SAM 3 post-processing keeps, in its shown order.

    ``remove_overlapping_masks`` (Meta's), then, as ``call_sam_service`` does next: a stable sort by
    score, highest first, and dropping RLE strings of 4 characters or fewer. Each mask's input
    index rides along as its box, so duplicates stay distinguishable.
    """
    height, width = masks.shape[1:]
    sample = {"orig_img_h": height, "orig_img_w": width, "pred_masks": [rle(m) for m in masks],
              "pred_scores": [float(s) for s in scores], "pred_boxes": [[float(i), 0, 0, 0] for i in range(len(masks))]}
    out = remove_overlapping_masks(sample, iom_thresh=iom)
    order = sorted(range(len(out["pred_scores"])), key=lambda i: out["pred_scores"][i], reverse=True)
    return [int(out["pred_boxes"][i][0]) for i in order if len(out["pred_masks"][i]) > 4]


@pytest.mark.parametrize("iom", [0.3, 0.0, 0.5, 1.0])
def test_overlap_removal_matches_reference(iom: float) -> None:
    """Same survivors in the same order, on random masks with ties, duplicates, nesting and empties."""
    rng = np.random.default_rng(round(iom * 10))
    removed = 0
    for trial in range(60):
        height, width = int(rng.integers(4, 40)), int(rng.integers(4, 40))
        masks, scores = random_detections(rng, height, width)
        det = sv.Detections(xyxy=np.zeros((len(masks), 4), np.float32), mask=masks, confidence=scores,
                            data={"index": np.arange(len(masks))})
        ours = [int(i) for i in remove_overlaps(det, iom, drop_short_rle=True).data["index"]]
        assert ours == reference_keep(masks, scores, iom), f"trial {trial}: {len(masks)} masks, scores {scores}"
        removed += len(masks) - len(ours)
    assert removed >= 10, f"only {removed} masks were removed: the random masks are too easy"


# -- zoom geometry ------------------------------------------------------------------------------


class _Enough(Exception):
    """Raised from the wrapped crop once the reference has cropped by both boxes."""


@contextmanager
def recorded_crops() -> Iterator[list[tuple[float, ...]]]:
    """Record the boxes of every ``PIL.Image.Image.crop``; stop the caller at the third one.

    ``render_zoom_in`` crops three times: the mask's box (to pick a colour), the context box and the
    zoom box; figure drawing (irrelevant here) is replaced by mocks.
    """
    boxes: list[tuple[float, ...]] = []
    original = Image.Image.crop

    def crop(self: Image.Image, box: tuple[float, ...] | None = None) -> Image.Image:
        boxes.append(tuple(float(v) for v in box) if box is not None else ())
        if len(boxes) == 3:
            raise _Enough
        return original(self, box)

    figure = mock.MagicMock()
    with mock.patch.object(Image.Image, "crop", crop), \
            mock.patch.object(zoom_in.plt, "subplots", return_value=(figure, (mock.MagicMock(), mock.MagicMock()))):
        yield boxes


def test_zoom_geometry_matches_reference() -> None:
    """The zoom and context boxes of random masks (large, tiny, at borders, full width) equal the reference's."""
    rng = np.random.default_rng(7)
    checked, kinds = 0, {"zoom grown": 0, "context grown": 0, "clamped to the image": 0, "shifted at a border": 0}
    while checked < 100:
        height, width = int(rng.integers(8, 300)), int(rng.integers(8, 300))
        mask = random_mask(rng, height, width)
        if not mask.any():
            continue  # neither side zooms into an empty mask
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        data = {"labels": [{"noun_phrase": "m"}], "segmentation": {"counts": counts["counts"], "size": [height, width]}}
        with recorded_crops() as boxes, pytest.raises(_Enough):
            zoom_in.render_zoom_in(data, image)
        _, (cx0, cy0, cx1, cy1), (zx0, zy0, zx1, zy1) = boxes
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        box = (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
        zoom, context = zoom_geometry(box, float(mask.sum()), height, width)

        def xyxy(b: tuple[float, float, float, float]) -> tuple[float, ...]:
            return (b[0], b[1], b[0] + b[2], b[1] + b[3])

        where = f"mask box {box}, area {int(mask.sum())}, image {height}x{width}"
        assert xyxy(zoom) == pytest.approx((zx0, zy0, zx1, zy1), abs=1e-9), f"zoom box differs: {where}"
        assert xyxy(context) == pytest.approx((cx0, cy0, cx1, cy1), abs=1e-9), f"context box differs: {where}"
        checked += 1
        base = min(box[2] + max(0.2 * box[2], 16), width)
        kinds["zoom grown"] += zoom[2] > base
        kinds["context grown"] += context[2] > zoom[2]
        kinds["clamped to the image"] += context[2] == width or context[3] == height
        kinds["shifted at a border"] += min(context[0], context[1]) == 0 or context[0] + context[2] == width
    assert min(kinds.values()) >= 5, f"the random masks missed a case: {kinds}"


# -- pruning on random scripts ------------------------------------------------------------------

#: Masks each phrase shows (after overlap removal), and phrases that show none.
SHOWN = {"dog": 3, "cat": 1, "person": 2, "box": 3, "unicorn": 0, "wall": 0}


def random_script(rng: np.random.Generator) -> tuple[list[str], set[tuple[int, int]]]:
    """A random script within the reference's limits, and the ``(round, mask)`` pairs it rejects.

    Limits kept: the first call segments or reports; no examine without current masks or right after
    a refused phrase; at most two examines per window; the end selects valid ids (or reports).
    """
    rejected = {(r, k) for r in range(1, 8) for k in range(1, 4) if rng.random() < 0.3}
    calls, used, count, rounds, since, refused = [], set(), 0, 0, 0, False
    for _ in range(int(rng.integers(1, 7))):
        options = ["segment", "segment", "repeat"] if used else ["segment"]
        if count and since < 2 and not refused:
            options += ["examine", "examine"]
        choice = rng.choice(options)
        if choice == "examine":
            rounds += 1
            count -= sum((rounds, k) in rejected for k in range(1, count + 1))
            calls.append(EXAMINE)
            since += 1
            continue
        phrase = str(rng.choice(sorted(used) if choice == "repeat" else sorted(SHOWN)))
        refused = phrase in used
        if not refused:
            count = SHOWN[phrase]
        used.add(phrase)
        calls.append(seg(phrase))
        since = 0
    if count:
        ids = sorted(rng.choice(np.arange(1, count + 1), int(rng.integers(1, count + 1)), replace=False).tolist())
        calls.append(sel(*ids))
    else:
        calls.append(NO_MASK)
    return calls, rejected


SCRIPTS = [random_script(np.random.default_rng(100 + i)) for i in range(10)]


def test_pruning_matches_reference(tmp_path_factory: pytest.TempPathFactory) -> None:
    """On random scripts, every main request keeps the same turns and images as the reference's pruning."""
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
    prune = agent_core._prune_messages_for_next_round
    for trial, (calls, rejected) in enumerate(SCRIPTS):
        pruned: list[int] = []

        def spy(*args: object, _pruned: list[int] = pruned, **kwargs: object) -> list[dict]:
            out = prune(*args, **kwargs)
            _pruned.append(len(out))
            return out

        replies = script(tuple(calls))
        with mock.patch.object(agent_core, "_prune_messages_for_next_round", spy), redirect_stdout(io.StringIO()):
            ref = run_meta(path, "the dog", replies, verifier(lambda r, k, x=rejected: (r, k) in x), RAW,
                           tmp_path_factory.mktemp("meta"), render=False)
        our = run_ours(path, "the dog", replies, verifier(lambda r, k, x=rejected: (r, k) in x), RAW)
        assert [len(r.roles) for r in ref.main[1:]] == pruned  # each later request is the pruner's output
        found = differences(ref, our)
        assert not found, f"trial {trial}, script {calls}:\n" + "\n".join(found)


def test_pruning_sample_is_random_enough() -> None:
    """The random scripts reach the interesting states: repeats, examines, three or more segments."""
    scripts = [calls for calls, _ in SCRIPTS]
    joined = ["\n".join(s) for s in scripts]
    assert sum(EXAMINE in s for s in joined) >= 3
    assert any(len([c for c in s if "segment_phrase" in c]) >= 3 for s in scripts)
    assert any(len({c for c in s if "segment_phrase" in c}) < len([c for c in s if "segment_phrase" in c])
               for s in scripts)

