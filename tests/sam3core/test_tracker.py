"""Sam3Tracker on the tiny random SAM 3: trunk sharing, transformers as the oracle, prompts, loading.

Random weights give random masks: these tests check that the tracker computes what
``Sam3TrackerModel`` computes, that it reuses the engine's ViT trunk (one ViT pass per image for
both models), and how it checks prompts, never accuracy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from sam3core.engine import Sam3Engine
from sam3core.fake import FakeEngine
from sam3core.loading import Sam3LoadError
from sam3core.protocol import PointPromptEngine, SegmentEngine
from sam3core.testing import build_random_sam3_tracker, save_random_sam3_tracker
from sam3core.tracker import Sam3Tracker


def _image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tracker_dir(tiny_sam3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny tracker saved with save_pretrained, its ViT trunk taken from the tiny detector."""
    from transformers import Sam3Model

    detector = Sam3Model.from_pretrained(tiny_sam3_dir)
    return save_random_sam3_tracker(tmp_path_factory.mktemp("tiny-tracker"), detector=detector)


@pytest.fixture
def engine(tiny_sam3_dir: Path) -> Iterator[Sam3Engine]:
    engine = Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu")
    yield engine
    engine.close()


@pytest.fixture
def tracker(tracker_dir: Path, engine: Sam3Engine) -> Sam3Tracker:
    return Sam3Tracker.from_pretrained(tracker_dir, engine)


def _reference(model, pixels, **prompt):  # type: ignore[no-untyped-def]
    """transformers' own forward from pixels (its vision encoder: the shared trunk plus the tracker's neck)."""
    with torch.inference_mode():
        return model(pixel_values=pixels, **prompt)


def test_the_trunk_is_shared_and_runs_once_per_image(tracker: Sam3Tracker, engine: Sam3Engine) -> None:
    assert tracker.tracker_stats.shares_trunk
    assert tracker.model.vision_encoder.backbone is engine.model.vision_encoder.backbone  # one copy of the weights
    img = _image()
    engine.segment(img, "cat", score_threshold=0.0)
    assert engine.stats.vision_encoder_runs == 1
    first = tracker.segment_at(img, points=[[80, 60]])
    second = tracker.segment_at(img, box=[10, 10, 100, 90])
    assert engine.stats.vision_encoder_runs == 1  # the tracker read the trunk output the engine kept
    assert tracker.tracker_stats.feature_runs == 1 and tracker.tracker_stats.own_vit_runs == 0
    assert tracker.tracker_stats.forwards == 2 and tracker.tracker_stats.cache.hits == 1
    for found in (first, second):
        assert len(found) <= 1 and found.mask.shape[1:] == img.shape[:2]
    # the other way round: the tracker's encode fills the detector's cache too
    other = _image(seed=1)
    tracker.segment_at(other, points=[[5, 5]])
    engine.segment(other, "dog", score_threshold=0.0)
    assert engine.stats.vision_encoder_runs == 2


def test_matches_transformers_forward(tracker: Sam3Tracker, engine: Sam3Engine) -> None:
    """With the no-memory embedding zeroed, our features + forward equal Sam3TrackerModel.forward(pixel_values)."""
    model = tracker.model
    with torch.no_grad():
        model.no_memory_embedding.zero_()
    handle = tracker.prepare(_image(97, 203))
    pixels = engine.processor.image_processor(images=handle.image, return_tensors="pt").pixel_values
    points = torch.tensor([[[[40.0, 500.0], [300.0, 250.0]]]])
    labels = torch.tensor([[[1, 0]]])
    box = torch.tensor([[[100.0, 200.0, 700.0, 900.0]]])
    for prompt in ({"input_points": points[:, :, :1], "input_labels": labels[:, :, :1], "multimask_output": True},
                   {"input_points": points, "input_labels": labels, "multimask_output": False},
                   {"input_boxes": box, "multimask_output": False}):
        want = _reference(model, pixels, **prompt)
        embeddings = engine.run_on_worker(lambda: tracker.features(handle)).result()
        with torch.inference_mode():
            got = model(image_embeddings=embeddings, **prompt)
        torch.testing.assert_close(got.pred_masks, want.pred_masks, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.iou_scores, want.iou_scores, rtol=1e-4, atol=1e-4)


def test_segment_at_is_the_best_mask_at_full_size(tracker: Sam3Tracker, engine: Sam3Engine) -> None:
    """One point: three proposals, the highest predicted IoU wins; its logits upsampled and thresholded."""
    with torch.no_grad():  # transformers' pixel path puts this embedding elsewhere (see the module docstring)
        tracker.model.no_memory_embedding.zero_()
    img = _image(97, 203)
    handle = tracker.prepare(img)
    pixels = engine.processor.image_processor(images=handle.image, return_tensors="pt").pixel_values
    x, y = 50.0, 40.0
    scaled = torch.tensor([[[[x * 1008 / 203, y * 1008 / 97]]]])
    want = _reference(tracker.model, pixels, input_points=scaled, input_labels=torch.tensor([[[1]]]),
                      multimask_output=True)
    assert want.pred_masks.shape[2] == 3
    best = int(want.iou_scores[0, 0].argmax())
    logits = torch.nn.functional.interpolate(want.pred_masks[0, 0, best][None, None].float(), size=(97, 203),
                                             mode="bilinear", align_corners=False)[0, 0]
    expected = (logits > 0).numpy()
    assert expected.any() and not expected.all()  # something to compare (fixed seeds)
    found = tracker.segment_at(img, points=[[x, y]])
    np.testing.assert_array_equal(found.mask[0], expected)
    assert found.confidence[0] == pytest.approx(min(1.0, max(0.0, float(want.iou_scores[0, 0, best]))), abs=1e-5)
    assert list(found.data["phrase"]) == [""]
    assert found.data["predicted_xyxy"].shape == (1, 4)
    # a higher probability threshold can only shrink the mask
    strict = tracker.segment_at(img, points=[[x, y]], mask_threshold=0.9)
    assert len(strict) == 0 or (strict.mask[0] <= found.mask[0]).all()


def test_no_memory_embedding_goes_on_the_coarsest_level(tracker: Sam3Tracker, engine: Sam3Engine) -> None:
    handle = tracker.prepare(_image())
    embedding = tracker.model.no_memory_embedding.detach().clone()
    assert embedding.abs().sum() > 0  # the builder draws it at random
    with_memory = engine.run_on_worker(lambda: tracker.features(handle)).result()
    tracker.clear_cache()
    with torch.no_grad():
        tracker.model.no_memory_embedding.zero_()
    without = engine.run_on_worker(lambda: tracker.features(handle)).result()
    torch.testing.assert_close(with_memory[0], without[0])
    torch.testing.assert_close(with_memory[1], without[1])
    torch.testing.assert_close(with_memory[2] - without[2], embedding.reshape(1, -1, 1, 1).expand_as(without[2]))
    grid = tracker.model.prompt_encoder.image_embedding_size
    assert [tuple(t.shape[-2:]) for t in without] == [(4 * grid[0], 4 * grid[1]), (2 * grid[0], 2 * grid[1]), grid]


def test_a_different_trunk_is_not_shared(engine: Sam3Engine) -> None:
    own = build_random_sam3_tracker(seed=3)  # its own random ViT, not the detector's
    tracker = Sam3Tracker(own, engine)
    assert not tracker.tracker_stats.shares_trunk
    assert tracker.model.vision_encoder.backbone is not engine.model.vision_encoder.backbone
    assert engine.runner.trunks is None  # nothing kept for a tracker that cannot use it
    img = _image()
    tracker.segment_at(img, box=[0, 0, 50, 50])
    assert tracker.tracker_stats.own_vit_runs == 1
    with pytest.raises(ValueError, match="trunk differs"):
        Sam3Tracker(build_random_sam3_tracker(seed=3), engine, share_trunk=True)
    # the same weights, but told not to share
    same = Sam3Tracker(build_random_sam3_tracker(detector=engine.model), engine, share_trunk=False)
    assert not same.tracker_stats.shares_trunk


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "give points, a box, or both"),
    ({"points": [[10, 10, 3]]}, r"\(x, y\) pairs"),
    ({"points": [[170, 10]]}, "outside the 160x120 image"),
    ({"points": [[float("nan"), 10]]}, "NaN"),
    ({"points": [[10, 10]], "point_labels": [1, 1]}, "one label per point"),
    ({"points": [[10, 10]], "point_labels": [2]}, "1 .on the object. or 0"),
    ({"points": [[10, 10]], "point_labels": [0]}, "every point is labelled 0"),
    ({"box": [50, 10, 20, 90]}, "x2 <= x1"),
    ({"box": [10, 10, 20]}, "four numbers"),
    ({"box": [200, 10, 300, 90]}, "outside"),
    ({"box": [10, 10, 50, 50], "mask_threshold": 1.0}, "mask_threshold"),
])
def test_bad_prompts_are_refused_before_any_work(tracker: Sam3Tracker, engine: Sam3Engine, kwargs: dict,
                                                  message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tracker.segment_at(_image(), **kwargs)
    assert engine.stats.vision_encoder_runs == 0


def test_edges_are_inside_and_a_crossing_box_is_clipped(tracker: Sam3Tracker) -> None:
    img = _image()
    tracker.segment_at(img, points=[[0, 0], [160, 120]])
    tracker.segment_at(img, box=[-20, -20, 40, 40])  # clipped to [0, 0, 40, 40]


async def test_async_calls_share_the_worker(tracker: Sam3Tracker, engine: Sam3Engine) -> None:
    img = _image()
    handle = await asyncio.to_thread(tracker.prepare, img)
    phrase, at = await asyncio.gather(tracker.asegment(handle, "cat", score_threshold=0.0),
                                      tracker.asegment_at(handle, box=[20, 20, 120, 100]))
    assert engine.stats.vision_encoder_runs == 1
    assert len(at) <= 1 and len(phrase) >= 0


def test_protocols(tracker: Sam3Tracker, engine: Sam3Engine) -> None:
    assert isinstance(tracker, SegmentEngine) and isinstance(tracker, PointPromptEngine)
    assert isinstance(FakeEngine(), PointPromptEngine)
    assert isinstance(engine, SegmentEngine) and not isinstance(engine, PointPromptEngine)
    assert tracker.device == engine.device and tracker.stats is engine.stats and tracker.name == engine.name


def test_loading_refuses_a_detector_only_directory(tiny_sam3_dir: Path, engine: Sam3Engine, tmp_path: Path) -> None:
    with pytest.raises(Sam3LoadError, match="not SAM 3's tracker"):
        Sam3Tracker.from_pretrained(tiny_sam3_dir, engine)
    with pytest.raises(Sam3LoadError, match="not found"):
        Sam3Tracker.from_pretrained(tmp_path / "missing", engine)
