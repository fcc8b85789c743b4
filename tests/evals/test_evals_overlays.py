"""``--save-overlays`` pictures: which pixels carry which colour, left (ground truth) and right (prediction)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from evals import overlays as ov

BASE = (100, 100, 100)


def _blend(color: tuple[int, int, int], base: tuple[int, int, int] = BASE) -> np.ndarray:
    """A mask pixel: OPACITY of its colour over the image pixel."""
    return np.round(ov.OPACITY * np.asarray(color) + (1 - ov.OPACITY) * np.asarray(base))


def _halves(picture: Image.Image, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left picture, gap, right picture) as ``(H, W, 3)`` int arrays."""
    a = np.asarray(picture).astype(int)
    return a[:, :width], a[:, width:width + ov.GAP], a[:, width + ov.GAP:]


def test_mask_comparison_tints_target_ignore_and_prediction() -> None:
    image = Image.new("RGB", (20, 10), BASE)
    gt = np.zeros((10, 20), np.uint8)
    gt[2:5, 3:8] = 1
    gt[6:9, 10:15] = 255
    pred = np.zeros((10, 20), bool)
    pred[1:4, 4:9] = True
    picture = ov.mask_comparison(image, gt, pred)
    assert picture.size == (2 * 20 + ov.GAP, 10)
    left, gap, right = _halves(picture, 20)
    assert (gap == 255).all()
    assert np.abs(left[gt == 1] - _blend(ov.GT_COLOR)).max() <= 1
    assert np.abs(left[gt == 255] - _blend(ov.IGNORE_COLOR)).max() <= 1
    assert (left[gt == 0] == BASE).all()
    assert np.abs(right[pred] - _blend(ov.PRED_COLOR)).max() <= 1
    assert (right[~pred] == BASE).all()  # the ground truth does not show on the prediction side


def test_mask_comparison_of_empty_masks_is_the_image_twice() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    picture = ov.mask_comparison(Image.fromarray(pixels), np.zeros((8, 12), np.uint8), np.zeros((8, 12), bool))
    left, _, right = _halves(picture, 12)
    assert (left == pixels).all() and (right == pixels).all()


def test_box_comparison_outlines_ground_truth_over_crowd_and_the_prediction() -> None:
    image = Image.new("RGB", (80, 60), (0, 0, 0))
    gt, crowd, pred = [5, 5, 20, 10], [5, 5, 30, 20], [10, 30, 25, 15]
    left, _, right = _halves(ov.box_comparison(image, [gt], [crowd], [pred], [0.87]), 80)
    # 1-pixel outlines (min side 60 < 300) on the first and last pixel rows / columns a box covers
    for x, y in ((5, 5), (24, 5), (5, 14), (24, 14), (15, 14)):
        assert tuple(left[y, x]) == ov.GT_COLOR  # drawn after the crowd box, so on top where both are
    for x, y in ((34, 24), (34, 10), (20, 24)):
        assert tuple(left[y, x]) == ov.IGNORE_COLOR
    assert (left[6:14, 6:24] == 0).all() and (left[25, 5:36] == 0).all() and (left[5:25, 35] == 0).all()
    for x, y in ((10, 44), (34, 44), (34, 35), (20, 44)):
        assert tuple(right[y, x]) == ov.PRED_COLOR
    assert (right[31:44, 11:34] == 0).all() and (right[45:, :] == 0).all()
    assert (right[:, 36:] == 0).all() and not (right == ov.GT_COLOR).all(axis=2).any()


def test_box_comparison_writes_each_score_by_its_box() -> None:
    image = Image.new("RGB", (80, 60), (0, 0, 0))

    def right_side(score: float) -> np.ndarray:
        return _halves(ov.box_comparison(image, [], [], [[10, 30, 25, 15]], [score]), 80)[2]

    high, low = right_side(0.87), right_side(0.12)
    changed = np.argwhere((high != low).any(axis=2))
    assert changed.size  # the label text differs with the score ...
    assert changed[:, 0].max() < 30 and changed[:, 1].min() >= 10  # ... just above the box's top-left corner
    label = high[:30, 10:]
    assert (label == ov.PRED_COLOR).all(axis=2).sum() > 20  # on a red label
    assert (label.min(axis=2) > 200).any()  # in white


def test_box_comparison_without_boxes_is_the_image_twice() -> None:
    pixels = np.full((12, 16, 3), 70, np.uint8)
    left, _, right = _halves(ov.box_comparison(Image.fromarray(pixels), [], [], [], []), 16)
    assert (left == 70).all() and (right == 70).all()
