"""SAM 3's predicted boxes in ``data["predicted_xyxy"]``, ``max_masks=None`` and ``dedup_iou`` on every engine.

Predicted boxes follow transformers' ``post_process_instance_segmentation``: continuous pixel
xyxy of the original image (x2/y2 are edges); ``xyxy`` stays supervision's inclusive mask box.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import supervision as sv
import torch

from sam3core.engine import Sam3Engine
from sam3core.fake import FakeEngine
from sam3core.image import prepare_image
from sam3core.postprocess import (
    PREDICTED_XYXY,
    detections_from_masks,
    empty_detections,
    mask_boxes_continuous,
    predicted_boxes,
    select_queries,
)
from sam3core.protocol import SegmentEngine


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _reference(engine: Sam3Engine, image: np.ndarray, phrase: str, threshold: float) -> dict[str, np.ndarray]:
    """transformers' own forward + post-processing, sorted by score (highest first), empty masks dropped."""
    h, w = image.shape[:2]
    proc, model = engine.processor, engine.model
    inputs = proc(images=prepare_image(image).image, text=phrase, return_tensors="pt")
    with torch.inference_mode():
        out = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
        ref = proc.post_process_instance_segmentation(out, threshold=threshold, mask_threshold=0.5,
                                                      target_sizes=[(h, w)])[0]
    order = torch.argsort(ref["scores"], descending=True, stable=True)
    masks = ref["masks"][order].bool().numpy()
    nonempty = masks.reshape(len(masks), -1).any(axis=1)
    return {"scores": ref["scores"][order].numpy()[nonempty], "boxes": ref["boxes"][order].numpy()[nonempty],
            "masks": masks[nonempty]}


@pytest.mark.parametrize(("h", "w"), [(120, 90), (97, 403)])
def test_engine_predicted_boxes_equal_transformers_post_processing(tiny_engine: Sam3Engine, h: int, w: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every returned detection carries the box transformers' post-processing gives its query.

    Compared with transformers' own text-only forward, so without Meta's extra prompt token.
    """
    monkeypatch.setattr(tiny_engine, "meta_text_prompts", False)  # the engine is shared by other tests
    image = _image(h, w)
    ref = _reference(tiny_engine, image, "tree", 0.2)
    det = tiny_engine.segment(image, "tree", score_threshold=0.2, max_masks=None, dedup_iou=None)
    assert len(det) == len(ref["scores"]) > 0
    boxes = det.data[PREDICTED_XYXY]
    assert boxes.shape == (len(det), 4) and boxes.dtype == np.float32
    np.testing.assert_allclose(det.confidence, ref["scores"], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(det.mask, ref["masks"])
    np.testing.assert_array_equal(boxes, ref["boxes"])  # the same float32 products
    # xyxy is still the inclusive box of each mask, not the predicted one
    np.testing.assert_array_equal(det.xyxy, sv.mask_to_xyxy(det.mask))
    # scaled by (W, H, W, H): the normalised model output times the original size
    assert not np.array_equal(boxes, det.xyxy)


def test_engine_predicted_boxes_follow_dedup_cap_and_batches(tiny_engine: Sam3Engine) -> None:
    """Duplicate suppression and the cap drop boxes with their masks; batched phrases keep theirs."""
    image = _image(150, 110, seed=3)
    every = tiny_engine.segment(image, "cat", score_threshold=0.0, max_masks=None, dedup_iou=None)
    by_score = {float(s): tuple(b) for s, b in zip(every.confidence, every.data[PREDICTED_XYXY], strict=True)}
    for kwargs in ({"max_masks": 3, "dedup_iou": None}, {"dedup_iou": 0.3}, {"dedup_iou": "default"}):
        det = tiny_engine.segment(image, "cat", score_threshold=0.0, **kwargs)
        assert det.data[PREDICTED_XYXY].shape == (len(det), 4)
        for s, b in zip(det.confidence, det.data[PREDICTED_XYXY], strict=True):
            assert by_score[float(s)] == tuple(b)
    batched = tiny_engine.segment(image, ["cat", "dog"], score_threshold=0.0, dedup_iou=None)
    for det in batched:
        assert det.data[PREDICTED_XYXY].shape == (len(det), 4)
    nothing = tiny_engine.segment(image, "cat", score_threshold=0.99)
    assert len(nothing) == 0 and nothing.data[PREDICTED_XYXY].shape == (0, 4)


def test_max_masks_none_keeps_every_query_above_threshold(tiny_engine: Sam3Engine) -> None:
    image = _image(100, 80, seed=4)
    uncapped = tiny_engine.segment(image, "bird", score_threshold=0.0, max_masks=None, dedup_iou=None)
    large = tiny_engine.segment(image, "bird", score_threshold=0.0, max_masks=10_000, dedup_iou=None)
    assert len(uncapped) == len(large) > 1
    np.testing.assert_array_equal(uncapped.confidence, large.confidence)
    one = asyncio.run(tiny_engine.asegment(image, "bird", score_threshold=0.0, max_masks=1, dedup_iou=None))
    assert len(one) == 1 and one.confidence[0] == uncapped.confidence[0]
    also = asyncio.run(tiny_engine.asegment(image, "bird", score_threshold=0.0, max_masks=None, dedup_iou=None))
    np.testing.assert_array_equal(also.data[PREDICTED_XYXY], uncapped.data[PREDICTED_XYXY])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_masks"):
            tiny_engine.segment(image, "bird", max_masks=bad)


def test_select_queries_without_cap() -> None:
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    masks = torch.full((4, 6, 6), 10.0)
    keep, _ = select_queries(logits, None, masks, score_threshold=0.0, mask_threshold=0.5, max_masks=None,
                             dedup_iou=None)
    assert keep.tolist() == [1, 3, 2, 0]
    keep, _ = select_queries(logits, None, masks, score_threshold=0.0, mask_threshold=0.5, max_masks=2,
                             dedup_iou=None)
    assert keep.tolist() == [1, 3]


def test_predicted_boxes_scale_normalised_xyxy_by_width_and_height() -> None:
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.5, 1.02], [-0.01, 0.5, 0.25, 0.75]])
    got = predicted_boxes(pred.to(torch.bfloat16), torch.tensor([2, 1]), (200, 400))
    assert got.dtype == np.float32 and got.shape == (2, 4)
    want = pred[[2, 1]].to(torch.bfloat16).float() * torch.tensor([400.0, 200.0, 400.0, 200.0])
    np.testing.assert_array_equal(got, want.numpy())  # not clipped: x1 < 0 and y2 > H survive
    assert got[0, 0] < 0 and got[1, 3] > 200
    assert predicted_boxes(pred, torch.tensor([], dtype=torch.long), (5, 5)).shape == (0, 4)


def test_detections_from_masks_keeps_boxes_aligned_through_sort_and_filter() -> None:
    masks = np.zeros((4, 10, 12), bool)
    masks[0, 1:3, 1:3] = True
    masks[2, 4:8, 2:9] = True  # masks[1] stays empty: dropped with its box
    masks[3, 0, 0] = True
    scores = np.array([0.6, 0.99, 0.9, 0.7])
    boxes = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]], np.float64) + 0.5
    det = detections_from_masks(masks, scores, "thing", boxes)
    np.testing.assert_allclose(det.confidence, [0.9, 0.7, 0.6])
    np.testing.assert_array_equal(det.data[PREDICTED_XYXY][:, 0], [2.5, 3.5, 0.5])
    assert det.data[PREDICTED_XYXY].dtype == np.float32
    np.testing.assert_array_equal(det.mask, masks[[2, 3, 0]])
    # supervision's indexing and merging keep the data rows with their detections
    np.testing.assert_array_equal(det[[2, 0]].data[PREDICTED_XYXY][:, 0], [0.5, 2.5])
    np.testing.assert_array_equal(det[np.array([False, True, True])].data[PREDICTED_XYXY][:, 0], [3.5, 0.5])
    np.testing.assert_array_equal(det[1:].data[PREDICTED_XYXY][:, 0], [3.5, 0.5])
    empty = empty_detections(10, 12)
    assert empty.data[PREDICTED_XYXY].shape == (0, 4) and len(empty[[]]) == 0
    merged = sv.Detections.merge([det, empty, det[[0]]])
    np.testing.assert_array_equal(merged.data[PREDICTED_XYXY][:, 0], [2.5, 3.5, 0.5, 2.5])
    # without boxes: no key (nothing to report), except on the empty result
    assert PREDICTED_XYXY not in detections_from_masks(masks, scores, "thing").data
    assert detections_from_masks(masks[[1]], scores[[1]], "x", boxes[[1]]).data[PREDICTED_XYXY].shape == (0, 4)
    with pytest.raises(ValueError, match="predicted_xyxy"):
        detections_from_masks(masks, scores, "thing", boxes[:3])


def test_mask_boxes_continuous_is_inclusive_plus_one() -> None:
    masks = np.zeros((2, 10, 12), bool)
    masks[0, 2:5, 3:9] = True  # rows 2..4, columns 3..8
    got = mask_boxes_continuous(masks)
    np.testing.assert_array_equal(got, [[3, 2, 9, 5], [0, 0, 0, 0]])
    assert got.dtype == np.float32 and mask_boxes_continuous(masks[:0]).shape == (0, 4)


def _square(h: int, w: int, y: slice, x: slice) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y, x] = True
    return m


def test_fake_engine_predicted_boxes_default_and_given() -> None:
    image = np.zeros((20, 30, 3), np.uint8)
    a, b = _square(20, 30, slice(2, 5), slice(3, 9)), _square(20, 30, slice(10, 20), slice(0, 30))
    given = [[1.5, 2.5, 9.0, 6.0], [0.0, 9.5, 30.5, 20.0]]
    engine = FakeEngine({"cup": [a, b], "mug": [a, b]}, {"cup": [0.6, 0.8], "mug": [0.6, 0.8]}, {"mug": given})
    cup = engine.segment(image, "cup")
    np.testing.assert_array_equal(cup.data[PREDICTED_XYXY], [[0, 10, 30, 20], [3, 2, 9, 5]])  # sorted by score
    np.testing.assert_array_equal(cup.xyxy, [[0, 10, 29, 19], [3, 2, 8, 4]])
    mug = engine.segment(image, "mug")
    np.testing.assert_array_equal(mug.data[PREDICTED_XYXY], np.asarray(given, np.float32)[[1, 0]])
    assert engine.segment(image, "tea").data[PREDICTED_XYXY].shape == (0, 4)
    with pytest.raises(ValueError, match="1 boxes for 2 masks"):
        FakeEngine({"cup": [a, b]}, boxes={"cup": [given[0]]}).segment(image, "cup")


def test_fake_engine_threshold_is_strict_like_the_real_engine() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    m = _square(8, 8, slice(0, 4), slice(0, 4))
    engine = FakeEngine({"x": [m, m, m]}, scores={"x": [0.5, 0.75, 0.3]})
    assert engine.segment(image, "x").confidence.tolist() == [0.75]  # 0.5 is not above 0.5
    assert engine.segment(image, "x", score_threshold=0.3).confidence.tolist() == [0.75, 0.5]
    # the ninth default score is exactly 0.5: dropped at the default threshold
    nine = FakeEngine({"x": [m] * 9})
    assert len(nine.segment(image, "x")) == 8


def test_fake_engine_accepts_dedup_iou_and_no_cap() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    m = _square(8, 8, slice(0, 4), slice(0, 4))
    engine = FakeEngine({"x": [m] * 5})
    assert len(engine.segment(image, "x", dedup_iou=0.5)) == 5  # no duplicate removal in the fake
    assert len(engine.segment(image, "x", dedup_iou=None, max_masks=None)) == 5
    assert len(engine.segment(image, "x", max_masks=2)) == 2
    got = asyncio.run(engine.asegment(image, ["x", "y"], dedup_iou=None, max_masks=None))
    assert [len(d) for d in got] == [5, 0]
    with pytest.raises(ValueError, match="max_masks"):
        engine.segment(image, "x", max_masks=0)


def test_both_engines_satisfy_the_protocol(tiny_engine: Sam3Engine) -> None:
    assert isinstance(tiny_engine, SegmentEngine) and isinstance(FakeEngine(), SegmentEngine)
