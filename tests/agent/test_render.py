"""Tests for sam3agent.render: label placement, Set-of-Marks renders, zoom pairs, mask PNGs, encoding."""

from __future__ import annotations

import io
import itertools

import cv2
import numpy as np
import pytest
import supervision as sv
from PIL import Image

from sam3agent import render
from sam3agent.llm.base import ImagePart
from sam3agent.render import (
    PALETTE,
    encode_image,
    label_anchor,
    label_layout,
    mask_png,
    render_marks,
    render_overlay,
    render_single,
    render_zoom_pair,
)

# ----------------------------------------------------------------------------------------------
# Fixtures and helpers
# ----------------------------------------------------------------------------------------------


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (uint8, (H, W, 3)); no pixel is pure black or white."""
    rng = np.random.default_rng(seed)
    img = rng.integers(30, 225, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 2)


def _dets(masks: list[np.ndarray] | np.ndarray, xyxy: np.ndarray | None = None) -> sv.Detections:
    masks = np.asarray(masks, dtype=bool)
    boxes = sv.mask_to_xyxy(masks).astype(np.float32) if xyxy is None else xyxy.astype(np.float32)
    return sv.Detections(xyxy=boxes, mask=masks, confidence=np.linspace(0.9, 0.5, len(masks)))


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _ring(h: int, w: int, cx: float, cy: float, r_out: float, r_in: float) -> np.ndarray:
    return _disk(h, w, cx, cy, r_out) & ~_disk(h, w, cx, cy, r_in)


def _u_shape(h: int, w: int, x0: int, y0: int, size: int, thick: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0 : y0 + size, x0 : x0 + thick] = True
    m[y0 : y0 + size, x0 + size - thick : x0 + size] = True
    m[y0 + size - thick : y0 + size, x0 : x0 + size] = True
    return m


def _l_shape(h: int, w: int, x0: int, y0: int, size: int, thick: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0 : y0 + size, x0 : x0 + thick] = True
    m[y0 + size - thick : y0 + size, x0 : x0 + size] = True
    return m


def _rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _shapes(h: int = 240, w: int = 320) -> dict[str, np.ndarray]:
    """Named masks that a centroid would miss (ring, U, L) or that are barely there."""
    one = np.zeros((h, w), bool)
    one[101, 57] = True
    diagonal = np.zeros((h, w), bool)
    idx = np.arange(40, 200)
    diagonal[idx, idx] = True
    return {
        "ring": _ring(h, w, 160, 120, 100, 85),
        "u": _u_shape(h, w, 60, 30, 180, 14),
        "l": _l_shape(h, w, 40, 20, 190, 10),
        "thin_h": _rect(h, w, 10, 200, 300, 201),
        "thin_v": _rect(h, w, 5, 0, 7, 240),
        "diagonal": diagonal,
        "one_pixel": one,
        "corner_pixel": _rect(h, w, 0, 0, 1, 1),
        "full": np.ones((h, w), bool),
    }


def _dist(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance to the nearest background pixel, the border counting as background."""
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def _blobs(h: int, w: int, n: int, seed: int) -> list[np.ndarray]:
    """Random overlapping blobs (thresholded smooth noise), each non-empty."""
    rng = np.random.default_rng(seed)
    masks = []
    while len(masks) < n:
        cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        r = rng.uniform(0.05, 0.18) * min(h, w)
        noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), r / 3)
        yy, xx = np.mgrid[:h, :w]
        field = 1 - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / r + 8 * noise
        m = field > 0
        if m.any():
            masks.append(m)
    return masks


def _rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


# ----------------------------------------------------------------------------------------------
# label_anchor
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(_shapes()))
def test_label_anchor_is_deepest_pixel_inside_mask(name: str) -> None:
    mask = _shapes()[name]
    x, y = label_anchor(mask)
    assert mask[y, x], f"{name}: anchor {(x, y)} outside the mask"
    dist = _dist(mask)
    assert dist[y, x] == pytest.approx(dist.max(), abs=1e-4)


def test_label_anchor_centroid_outside_but_anchor_inside() -> None:
    mask = _shapes()["ring"]
    ys, xs = np.nonzero(mask)
    assert not mask[round(ys.mean()), round(xs.mean())]  # the centroid is in the hole
    x, y = label_anchor(mask)
    assert mask[y, x]


def test_label_anchor_border_counts_as_outside() -> None:
    x, y = label_anchor(np.ones((51, 81), bool))
    assert (x, y) == (40, 25)


def test_label_anchor_plateau_tie_goes_to_the_middle() -> None:
    mask = _rect(60, 200, 20, 10, 181, 19)  # a bar: the whole middle row is equally deep
    x, y = label_anchor(mask)
    assert (x, y) == (100, 14)


def test_label_anchor_is_deterministic_and_dtype_agnostic() -> None:
    mask = _shapes()["u"]
    assert label_anchor(mask) == label_anchor(mask.copy()) == label_anchor(mask.astype(np.uint8))


def test_label_anchor_rejects_empty_and_wrong_shape() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        label_anchor(np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="H, W"):
        label_anchor(np.ones((2, 10, 10), bool))


# ----------------------------------------------------------------------------------------------
# render_marks: labels inside masks, colours, no mutation
# ----------------------------------------------------------------------------------------------


def _assert_label_drawn(out: np.ndarray, mark: render.MarkLabel) -> None:
    """The box's corners show the mask colour and the box holds black or white text."""
    x0, y0, x1, y1 = mark.box
    for cx, cy in [(x0, y0), (x1 - 1, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)]:
        assert tuple(out[cy, cx]) == mark.color, f"label {mark.text}: corner {(cx, cy)}"
    box = out[y0:y1, x0:x1].reshape(-1, 3).astype(int)
    ink = np.abs(box - np.array(mark.color)).sum(axis=1) > 150  # anti-aliased black or white text
    assert ink.sum() >= 5, f"label {mark.text}: no text drawn"


@pytest.mark.parametrize("name", [n for n in _shapes() if n != "full"])
def test_single_shape_label_centre_inside_mask(name: str) -> None:
    mask = _shapes()[name]
    h, w = mask.shape
    dets = _dets([mask])
    out = _rgb(render_marks(_image(h, w), dets))
    (mark,) = label_layout(dets, h, w)
    x, y = mark.anchor
    assert mask[y, x]
    # Renders place labels on a block-averaged mask when it is large: near the deepest point.
    dist = _dist(mask)
    assert dist[y, x] >= 0.75 * dist.max()
    if max(h, w) <= 128:
        assert (x, y) == label_anchor(mask)
    x0, y0, x1, y1 = mark.box
    inside_image = x0 > 0 and x1 < w and y0 > 0 and y1 < h
    if inside_image:  # not pushed in from the image border: centred on the anchor
        assert abs((x0 + x1) / 2 - x) <= 1 and abs((y0 + y1) / 2 - y) <= 1
        assert mask[(y0 + y1) // 2, (x0 + x1) // 2] or mask[y, x]
    _assert_label_drawn(out, mark)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_mask_every_label_inside_its_mask(seed: int) -> None:
    h, w = 480, 640
    masks = _blobs(h, w, 6, seed)
    masks.append(_ring(h, w, 320, 240, 200, 175))
    masks.append(_u_shape(h, w, 30, 300, 150, 12))
    dets = _dets(masks)
    out = _rgb(render_marks(_image(h, w, seed), dets))
    marks = label_layout(dets, h, w)
    assert sorted(m.index for m in marks) == list(range(len(masks)))
    for mark in marks:
        x, y = mark.anchor
        assert masks[mark.index][y, x], f"label {mark.text} at {(x, y)} is outside its mask"
        x0, y0, x1, y1 = mark.box
        assert x0 <= x < x1 and y0 <= y < y1
        assert mark.text == str(mark.index + 1)
        assert mark.color == PALETTE.by_idx(mark.index).as_rgb()
    # The last-drawn label is on top of everything: its box reads back exactly.
    _assert_label_drawn(out, marks[-1])


def test_labels_drawn_separate_masks_read_back() -> None:
    h, w = 300, 500
    masks = [_rect(h, w, 20 + 80 * i, 40, 80 + 80 * i, 260) for i in range(6)]
    dets = _dets(masks)
    out = _rgb(render_marks(_image(h, w), dets, labels=[7, 3, 12, 1, 2, 99]))
    marks = {m.index: m for m in label_layout(dets, h, w, labels=[7, 3, 12, 1, 2, 99])}
    assert [marks[i].text for i in range(6)] == ["7", "3", "12", "1", "2", "99"]
    for i, mark in marks.items():
        assert masks[i][mark.anchor[1], mark.anchor[0]]
        _assert_label_drawn(out, mark)


def test_label_anchor_avoids_a_smaller_mask_drawn_on_top() -> None:
    h, w = 200, 200
    big = _disk(h, w, 100, 100, 90)
    small = _disk(h, w, 100, 100, 40)  # sits over big's deepest point
    dets = _dets([big, small])
    marks = {m.index: m for m in label_layout(dets, h, w)}
    bx, by = marks[0].anchor
    assert big[by, bx] and not small[by, bx]
    sx, sy = marks[1].anchor
    assert small[sy, sx]


def test_fill_and_outline_stay_inside_masks() -> None:
    h, w = 177, 301
    masks = _blobs(h, w, 4, seed=5)
    dets = _dets(masks)
    raw = _image(h, w)
    out = _rgb(render_marks(raw, dets))
    changed = np.any(out != raw, axis=2)
    union = np.any(masks, axis=0)
    boxes = np.zeros((h, w), bool)
    for m in label_layout(dets, h, w):
        x0, y0, x1, y1 = m.box
        boxes[y0:y1, x0:x1] = True
    assert not np.any(changed & ~union & ~boxes)
    assert changed[union & ~boxes].mean() > 0.99


def test_colours_distinct_by_index() -> None:
    colours = np.array([c.as_rgb() for c in PALETTE.colors], dtype=np.uint8)
    assert len(colours) >= 12
    lab = cv2.cvtColor(colours[None], cv2.COLOR_RGB2LAB)[0].astype(float)
    for a, b in itertools.combinations(range(len(colours)), 2):
        assert np.linalg.norm(lab[a] - lab[b]) >= (40 if max(a, b) < 8 else 20), (a, b)
    h, w = 120, 12 * 40
    masks = [_rect(h, w, 40 * i + 2, 10, 40 * i + 38, 110) for i in range(12)]
    dets = _dets(masks)
    out = _rgb(render_marks(np.full((h, w, 3), 128, np.uint8), dets))
    fills = {tuple(out[100, 40 * i + 20]) for i in range(12)}  # below the labels
    assert len(fills) == 12


def test_render_does_not_mutate_numpy_input() -> None:
    raw = _image(177, 301)
    before = raw.copy()
    dets = _dets(_blobs(177, 301, 3, seed=1))
    out = render_marks(raw, dets)
    np.testing.assert_array_equal(raw, before)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (301, 177)
    assert not np.shares_memory(np.asarray(out), raw)
    for fn in (render_single, render_zoom_pair):
        fn(raw, dets, 1)
        np.testing.assert_array_equal(raw, before)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_render_does_not_mutate_pil_input(mode: str) -> None:
    pil = Image.fromarray(_image(177, 301)).convert(mode)
    before = pil.tobytes()
    dets = _dets(_blobs(177, 301, 3, seed=2))
    for out in (render_marks(pil, dets), render_single(pil, dets, 0), render_overlay(pil, dets)):
        assert out is not pil and out.mode == "RGB" and out.size == (301, 177)
    render_zoom_pair(pil, dets, 2)
    assert pil.tobytes() == before and pil.mode == mode


def test_zero_detections_return_a_copy() -> None:
    raw = _image(50, 70)
    for dets in (_dets(np.zeros((0, 50, 70), bool)), sv.Detections.empty()):
        out = render_marks(raw, dets)
        np.testing.assert_array_equal(_rgb(out), raw)
        assert not np.shares_memory(np.asarray(out), raw)
    pil = Image.fromarray(raw)
    out = render_marks(pil, sv.Detections.empty())
    assert out is not pil and out.tobytes() == pil.tobytes()


def test_grayscale_and_rgba_arrays_accepted() -> None:
    mask = _rect(40, 60, 10, 10, 50, 30)
    gray = np.full((40, 60), 100, np.uint8)
    rgba = np.dstack([_image(40, 60), np.full((40, 60), 7, np.uint8)])
    for img in (gray, gray[:, :, None], rgba):
        out = render_marks(img, _dets([mask]))
        assert out.size == (60, 40) and out.mode == "RGB"


def test_bad_inputs_raise_clear_errors() -> None:
    raw = _image(40, 60)
    with pytest.raises(ValueError, match="shape"):
        render_marks(raw, _dets([np.ones((41, 60), bool)]))
    with pytest.raises(ValueError, match="labels"):
        render_marks(raw, _dets([np.ones((40, 60), bool)]), labels=[1, 2])
    with pytest.raises(ValueError, match="uint8"):
        render_marks(raw.astype(np.float32), _dets([np.ones((40, 60), bool)]))
    with pytest.raises(ValueError, match="no masks"):
        render_marks(raw, sv.Detections(xyxy=np.array([[1, 1, 5, 5]], np.float32)))
    with pytest.raises(IndexError):
        render_single(raw, _dets([np.ones((40, 60), bool)]), 1)
    with pytest.raises(IndexError):
        render_zoom_pair(raw, _dets([np.ones((40, 60), bool)]), -1)


def test_wrong_xyxy_hint_does_not_lose_mask_pixels() -> None:
    h, w = 120, 160
    masks = _blobs(h, w, 3, seed=3)
    raw = _image(h, w)
    good = _rgb(render_marks(raw, _dets(masks)))
    wrong = _rgb(render_marks(raw, _dets(masks, xyxy=np.array([[0, 0, 3, 3]] * 3))))
    np.testing.assert_array_equal(good, wrong)


def test_compact_masks_render_like_dense_ones() -> None:
    h, w = 177, 301
    dense = _dets(_blobs(h, w, 4, seed=4))
    compact = sv.Detections(
        xyxy=dense.xyxy,
        mask=sv.CompactMask.from_dense(dense.mask, dense.xyxy, image_shape=(h, w)),
        confidence=dense.confidence,
    )
    raw = _image(h, w)
    np.testing.assert_array_equal(_rgb(render_marks(raw, dense)), _rgb(render_marks(raw, compact)))
    assert np.array_equal(np.asarray(mask_png(dense, h, w)), np.asarray(mask_png(compact, h, w)))
    for i in range(4):
        np.testing.assert_array_equal(_rgb(render_single(raw, dense, i)), _rgb(render_single(raw, compact, i)))
        np.testing.assert_array_equal(_rgb(render_zoom_pair(raw, dense, i)), _rgb(render_zoom_pair(raw, compact, i)))


def test_render_overlay_matches_marks() -> None:
    h, w = 177, 301
    dets = _dets(_blobs(h, w, 3, seed=6))
    raw = _image(h, w)
    np.testing.assert_array_equal(_rgb(render_overlay(raw, dets)), _rgb(render_marks(raw, dets)))


def test_label_size_scales_with_image() -> None:
    def box_height(side: int) -> int:
        mask = np.zeros((side, side), np.uint8)
        cv2.circle(mask, (side // 2, side // 2), side // 3, 1, thickness=-1)
        (mark,) = label_layout(_dets([mask.astype(bool)]), side, side)
        return mark.box[3] - mark.box[1]

    tiny, mid, big = box_height(200), box_height(1000), box_height(3000)
    assert tiny >= 16  # still readable on a small image
    assert 2.5 <= big / mid <= 3.5  # proportional to the image side above ~500 px


# ----------------------------------------------------------------------------------------------
# render_single
# ----------------------------------------------------------------------------------------------


def test_render_single_draws_only_that_mask() -> None:
    h, w = 177, 301
    masks = [_rect(h, w, 10, 10, 90, 90), _ring(h, w, 170, 90, 60, 40), _l_shape(h, w, 240, 20, 55, 12)]
    dets = _dets(masks)
    raw = _image(h, w)
    for index in range(3):
        out = _rgb(render_single(raw, dets, index))
        changed = np.any(out != raw, axis=2)
        (mark,) = label_layout(dets[index : index + 1], h, w)
        allowed = masks[index].copy()
        x0, y0, x1, y1 = mark.box
        allowed[y0:y1, x0:x1] = True
        assert not np.any(changed & ~allowed), f"mask {index}: pixels outside it changed"
        for other in set(range(3)) - {index}:
            untouched = masks[other] & ~allowed
            np.testing.assert_array_equal(out[untouched], raw[untouched])
        assert changed[masks[index]].mean() > 0.9
        # Same colour as in the full Set-of-Marks render.
        assert tuple(out[y0, x0]) == PALETTE.by_idx(index).as_rgb()


def test_render_single_label_default_and_custom() -> None:
    h, w = 100, 100
    dets = _dets([_rect(h, w, 5, 5, 45, 45), _rect(h, w, 50, 50, 95, 95)])
    raw = _image(h, w)
    default = _rgb(render_single(raw, dets, 1))
    custom = _rgb(render_single(raw, dets, 1, label=7))
    assert not np.array_equal(default, custom)  # "2" vs "7"
    assert np.array_equal(custom, _rgb(render_single(raw, dets, 1, label=7)))


# ----------------------------------------------------------------------------------------------
# render_zoom_pair
# ----------------------------------------------------------------------------------------------


def _split_pair(pair: Image.Image, panel_h: int) -> tuple[np.ndarray, np.ndarray, int]:
    arr = _rgb(pair)
    assert arr.shape[0] == panel_h
    total = arr.shape[1]
    # The gap is a band of pure white columns in the middle.
    white_cols = np.all(arr == 255, axis=(0, 2))
    gap = int(white_cols.sum())
    panel_w = (total - gap) // 2
    assert 2 * panel_w + gap == total
    assert white_cols[panel_w : panel_w + gap].all()
    return arr[:, :panel_w], arr[:, panel_w + gap :], gap


def test_zoom_pair_left_differs_from_right_exactly_on_the_mask() -> None:
    h, w = 177, 301
    mask = _u_shape(h, w, 100, 50, 60, 10)  # 60x60 box -> 96x96 region: no resizing
    raw = _image(h, w)
    pair = render_zoom_pair(raw, _dets([mask]), 0, min_side=96, max_side=768)
    assert pair.mode == "RGB"
    left, right, gap = _split_pair(pair, pair.size[1])
    assert left.shape == right.shape and 1 <= gap <= 20
    assert left.shape[:2] == (96, 96)
    diff = np.any(left != right, axis=2)
    ys, xs = np.nonzero(diff)
    oy, ox = 50 - ys.min(), 100 - xs.min()  # where the region starts in the image
    assert oy >= 0 and ox >= 0
    np.testing.assert_array_equal(diff, mask[oy : oy + 96, ox : ox + 96])
    np.testing.assert_array_equal(right, raw[oy : oy + 96, ox : ox + 96])  # right is the bare crop


def test_zoom_pair_tiny_mask_is_upscaled() -> None:
    h, w = 301, 177
    mask = np.zeros((h, w), bool)
    mask[150:153, 80:82] = True
    pair = render_zoom_pair(_image(h, w), _dets([mask]), 0, min_side=96)
    left, right, _ = _split_pair(pair, pair.size[1])
    assert min(left.shape[:2]) >= 96
    diff = np.any(left != right, axis=2)
    assert 0 < diff.sum() < diff.size / 4
    ys, xs = np.nonzero(diff)
    assert ys.mean() == pytest.approx(left.shape[0] / 2, abs=left.shape[0] / 6)
    assert xs.mean() == pytest.approx(left.shape[1] / 2, abs=left.shape[1] / 6)


def test_zoom_pair_large_mask_is_downscaled_and_contained() -> None:
    h, w = 1200, 1600
    mask = _disk(h, w, 800, 600, 500)
    pair = render_zoom_pair(_image(h, w), _dets([mask]), 0, max_side=400)
    left, right, _ = _split_pair(pair, pair.size[1])
    assert max(left.shape[:2]) == 400
    diff = np.any(left != right, axis=2)
    ys, xs = np.nonzero(diff)
    assert ys.min() > 0 and xs.min() > 0 and ys.max() < left.shape[0] - 1 and xs.max() < left.shape[1] - 1


def test_zoom_pair_mask_at_border_and_thin_mask() -> None:
    h, w = 177, 301
    raw = _image(h, w)
    corner = _rect(h, w, 0, 0, 20, 15)
    thin = _rect(h, w, 10, 100, 290, 102)
    pair = render_zoom_pair(raw, _dets([corner, thin]), 0)
    left, _, _ = _split_pair(pair, pair.size[1])
    assert min(left.shape[:2]) >= 96
    pair = render_zoom_pair(raw, _dets([corner, thin]), 1)
    left, _right, _ = _split_pair(pair, pair.size[1])
    assert left.shape[1] / left.shape[0] <= 2.1  # square-ish, not a 280x2 strip


# ----------------------------------------------------------------------------------------------
# mask_png
# ----------------------------------------------------------------------------------------------


def test_mask_png_ids_and_overlap_rule() -> None:
    h, w = 177, 301
    a = _rect(h, w, 10, 10, 100, 100)
    b = _rect(h, w, 50, 50, 200, 150)  # overlaps a
    c = _rect(h, w, 250, 20, 290, 60)
    png = mask_png(_dets([a, b, c]), h, w)
    assert png.mode == "L" and png.size == (w, h)
    ids = np.asarray(png)
    assert set(np.unique(ids)) == {0, 1, 2, 3}
    assert np.all(ids[a] == 1)  # the earlier (higher-score) detection keeps overlap pixels
    assert np.all(ids[b & ~a] == 2)
    assert np.all(ids[c] == 3)
    assert np.all(ids[~(a | b | c)] == 0)
    buf = io.BytesIO()
    png.save(buf, format="PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(buf.getvalue()))), ids)


def test_mask_png_sixteen_bit_for_many_detections() -> None:
    h, w = 20, 20
    masks = np.zeros((300, h, w), bool)
    for i in range(300):
        masks[i, (i // w) % h, i % w] = True
    ids = mask_png(_dets(masks), h, w)
    assert ids.mode == "I;16"
    arr = np.asarray(ids)
    assert arr.max() == 300 and arr[299 // w % h, 299 % w] == 300
    assert mask_png(_dets(masks[:255]), h, w).mode == "L"


def test_mask_png_empty_and_mismatch() -> None:
    assert not np.asarray(mask_png(sv.Detections.empty(), 5, 7)).any()
    with pytest.raises(ValueError):
        mask_png(_dets([np.ones((5, 7), bool)]), 7, 5)


# ----------------------------------------------------------------------------------------------
# encode_image
# ----------------------------------------------------------------------------------------------


SIZES = [(1024, 1024), (301, 177), (177, 301), (640, 480), (1920, 1080), (4000, 3000), (28, 28), (3000, 90)]


@pytest.mark.parametrize("patch", [28, 32])
@pytest.mark.parametrize(("width", "height"), SIZES)
def test_encode_image_fits_patch_grid_and_budget(width: int, height: int, patch: int) -> None:
    min_pixels, max_pixels = 256 * patch * patch, 1280 * patch * patch
    img = Image.new("RGB", (width, height), (10, 200, 30))
    part = encode_image(img, patch=patch, min_pixels=min_pixels, max_pixels=max_pixels, label="raw")
    assert isinstance(part, ImagePart) and part.label == "raw" and part.mime == "image/jpeg"
    w, h = part.width, part.height
    assert w % patch == 0 and h % patch == 0
    assert min_pixels <= w * h <= max_pixels
    # Aspect kept: one scale s puts both sides within a patch of the exact scaled size.
    lo = max((w - patch) / width, (h - patch) / height)
    hi = min((w + patch) / width, (h + patch) / height)
    assert lo <= hi, f"{width}x{height} -> {w}x{h} distorts the aspect"
    floored = max(patch, width // patch * patch) * max(patch, height // patch * patch)
    if min_pixels <= floored and width * height <= max_pixels:
        # in budget: each side rounded to the nearest multiple (smart_resize), at most half a patch up
        assert w <= max(width, patch) + patch // 2 and h <= max(height, patch) + patch // 2
    if width * height < min_pixels:
        # Upsampled only as much as min_pixels needs (less than one extra patch per side).
        s = (min_pixels / (width * height)) ** 0.5
        assert w < width * s + patch and h < height * s + patch
    decoded = Image.open(io.BytesIO(part.data))
    assert decoded.format == "JPEG" and decoded.size == (w, h) and decoded.mode == "RGB"


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_encode_image_png_and_modes(mode: str) -> None:
    img = Image.fromarray(_image(177, 301)).convert(mode)
    before = img.tobytes()
    part = encode_image(img, fmt="png")
    assert part.mime == "image/png"
    decoded = Image.open(io.BytesIO(part.data))
    assert decoded.format == "PNG" and decoded.size == (part.width, part.height) and decoded.mode == "RGB"
    assert img.tobytes() == before


def test_encode_image_keeps_content() -> None:
    raw = _image(588, 392)  # already multiples of 28 and in budget: no resize
    part = encode_image(Image.fromarray(raw), fmt="png")
    assert (part.width, part.height) == (392, 588)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(part.data))), raw)
    jpeg = encode_image(Image.fromarray(raw), quality=95)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg.data))).astype(int)
    assert np.abs(decoded - raw).mean() < 6


def test_encode_image_bad_arguments() -> None:
    img = Image.new("RGB", (64, 64))
    with pytest.raises(ValueError, match="fmt"):
        encode_image(img, fmt="gif")
    with pytest.raises(ValueError, match="budget"):
        encode_image(img, min_pixels=10_000, max_pixels=1_000)
    assert encode_image(img, fmt="JPG").mime == "image/jpeg"


# ----------------------------------------------------------------------------------------------
# Odd sizes end to end
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(177, 301), (301, 177), (1, 1), (3, 500)])
def test_odd_sizes_end_to_end(h: int, w: int) -> None:
    raw = _image(h, w)
    mask = np.zeros((h, w), bool)
    mask[h // 2, w // 2] = True
    mask[: max(1, h // 3), : max(1, w // 3)] = True
    dets = _dets([mask])
    for out in (render_marks(raw, dets), render_single(raw, dets, 0), render_overlay(raw, dets)):
        assert out.size == (w, h)
    (mark,) = label_layout(dets, h, w)
    assert mask[mark.anchor[1], mark.anchor[0]]
    x0, y0, x1, y1 = mark.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    pair = render_zoom_pair(raw, dets, 0)
    assert pair.size[1] >= 1 and pair.size[0] > 2 * pair.size[1] // 4
    assert mask_png(dets, h, w).size == (w, h)
    part = encode_image(render_marks(raw, dets))
    assert part.width % 28 == 0 and part.height % 28 == 0
