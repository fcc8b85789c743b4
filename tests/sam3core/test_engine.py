"""Sam3Engine on the tiny random model loaded through from_pretrained.

Random weights give random masks: these tests check plumbing, shapes, caching, determinism and
concurrency, never accuracy. ``score_threshold=0.0`` keeps every query so there is something to
compare (the tiny model's scores sit around 0.25).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from sam3core.engine import Sam3Engine
from sam3core.image import prepare_image
from sam3core.postprocess import select_queries, upsample_masks

ALL = {"score_threshold": 0.0}


def _image(h: int = 301, w: int = 177, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def _same(a: sv.Detections, b: sv.Detections) -> None:
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    assert list(a.data["phrase"]) == list(b.data["phrase"])


def test_masks_at_original_resolution_sorted_and_nonempty(tiny_engine: Sam3Engine) -> None:
    for h, w in [(301, 177), (97, 403)]:
        det = tiny_engine.segment(_image(h, w), "red car", **ALL)
        assert isinstance(det, sv.Detections)
        assert len(det) > 0
        assert det.mask.shape == (len(det), h, w) and det.mask.dtype == bool
        assert det.mask.reshape(len(det), -1).any(axis=1).all()
        assert (np.diff(det.confidence) <= 0).all()
        assert set(det.data["phrase"]) == {"red car"}
        np.testing.assert_array_equal(det.xyxy, sv.mask_to_xyxy(det.mask))


def test_threshold_and_max_masks(tiny_engine: Sam3Engine) -> None:
    img = _image()
    every = tiny_engine.segment(img, "cat", score_threshold=0.0, dedup_iou=None)
    top3 = tiny_engine.segment(img, "cat", score_threshold=0.0, max_masks=3, dedup_iou=None)
    np.testing.assert_array_equal(top3.confidence, every.confidence[:3])
    cut = float(every.confidence[len(every) // 2])
    above = tiny_engine.segment(img, "cat", score_threshold=cut, dedup_iou=None)
    assert (above.confidence > cut).all()
    assert len(above) == int((every.confidence > cut).sum())
    assert len(tiny_engine.segment(img, "cat", score_threshold=0.99)) == 0


def test_cached_equals_uncached_bit_identical(fresh_engine: Sam3Engine) -> None:
    """The engine's cached path equals a plain uncached transformers forward, bit for bit.

    With ``meta_text_prompts`` off: transformers' forward leaves out the token Meta's geometry
    encoder adds to text-only prompts (tests/sam3core_parity covers the token).
    """
    fresh_engine.meta_text_prompts = False
    img = _image()
    handle = prepare_image(img)
    first = fresh_engine.segment(handle, "dog", **ALL, dedup_iou=None)
    again = fresh_engine.segment(handle, "dog", **ALL, dedup_iou=None)  # image + text from cache
    _same(first, again)
    assert fresh_engine.stats.vision_encoder_runs == 1
    assert fresh_engine.stats.text_cache.hits >= 1

    proc, model = fresh_engine.processor, fresh_engine.model
    inputs = proc(images=handle.image, text="dog", return_tensors="pt")
    with torch.inference_mode():
        out = model(pixel_values=inputs.pixel_values, input_ids=inputs.input_ids,
                    attention_mask=inputs.attention_mask)
        keep, scores = select_queries(out.pred_logits[0], out.presence_logits[0], out.pred_masks[0],
                                      score_threshold=0.0, mask_threshold=0.5, max_masks=100, dedup_iou=None)
        masks = upsample_masks(out.pred_masks[0][keep], (handle.height, handle.width), 0.5)
    nonempty = masks.reshape(len(masks), -1).any(axis=1)
    np.testing.assert_array_equal(first.confidence, scores.numpy()[nonempty])
    np.testing.assert_array_equal(first.mask, masks[nonempty])


def test_postprocess_matches_transformers_reference(tiny_engine: Sam3Engine) -> None:
    """Our select+upsample gives transformers' post_process_instance_segmentation result."""
    handle = prepare_image(_image(120, 90))
    proc, model = tiny_engine.processor, tiny_engine.model
    inputs = proc(images=handle.image, text="tree", return_tensors="pt")
    with torch.inference_mode():
        out = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
        ref = proc.post_process_instance_segmentation(out, threshold=0.2, mask_threshold=0.5,
                                                      target_sizes=[(120, 90)])[0]
        keep, scores = select_queries(out.pred_logits[0], out.presence_logits[0], out.pred_masks[0],
                                      score_threshold=0.2, mask_threshold=0.5, max_masks=1000, dedup_iou=None)
        masks = upsample_masks(out.pred_masks[0][keep], (120, 90), 0.5)
    order = torch.argsort(ref["scores"], descending=True, stable=True)
    ref_masks = ref["masks"][order].bool().numpy()
    ref_nonempty = ref_masks.reshape(len(ref_masks), -1).any(axis=1)
    np.testing.assert_allclose(scores.numpy(), ref["scores"][order].numpy()[ref_nonempty], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(masks, ref_masks[ref_nonempty])


def test_batched_phrases_match_one_by_one(fresh_engine: Sam3Engine) -> None:
    handle = prepare_image(_image())
    phrases = ["cat", "a small dog", "tree"]
    batched = fresh_engine.segment(handle, phrases, **ALL, dedup_iou=None)
    assert fresh_engine.stats.forwards == 1 and fresh_engine.stats.vision_encoder_runs == 1
    for phrase, det in zip(phrases, batched, strict=True):
        single = fresh_engine.segment(handle, phrase, **ALL, dedup_iou=None)
        assert list(det.data["phrase"]) == [phrase] * len(det)
        # batch shape changes float reduction order: compare raw scores within a tolerance, and
        # masks except pixels whose probability sits at the threshold
        assert abs(len(single) - len(det)) <= 1
        n = min(len(single), len(det))
        np.testing.assert_allclose(np.sort(single.confidence)[-n:], np.sort(det.confidence)[-n:], atol=1e-5)
        agree = (single.mask[:n] == det.mask[:n]).mean()
        assert agree > 0.999
    assert fresh_engine.stats.vision_encoder_runs == 1


def test_encoder_runs_once_for_many_phrases_and_again_after_eviction(tiny_sam3_dir: Path) -> None:
    # a budget that holds exactly one tiny image's features (~14 MB)
    with Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", cache_bytes=20 * 1024**2) as engine:
        a, b = prepare_image(_image(seed=1)), prepare_image(_image(seed=2))
        for phrase in ["cat", "dog", "bird", "car"]:
            engine.segment(a, phrase)
        assert engine.stats.vision_encoder_runs == 1
        assert engine.stats.image_cache.hits == 3
        engine.segment(b, "cat")  # evicts a
        assert engine.stats.image_cache.evictions == 1
        engine.segment(a, "cat")  # a again: encoded again
        assert engine.stats.vision_encoder_runs == 3
        assert engine.stats.image_cache.bytes <= 20 * 1024**2


def test_position_encodings_shared_across_images(fresh_engine: Sam3Engine) -> None:
    model, proc = fresh_engine.model, fresh_engine.processor
    with torch.inference_mode():
        pos = [model.get_vision_features(pixel_values=proc.image_processor(images=_image(seed=s),
                                         return_tensors="pt").pixel_values).fpn_position_encoding
               for s in (3, 4)]
    for p, q in zip(*pos, strict=True):
        assert torch.equal(p, q)


def _close(a: sv.Detections, b: sv.Detections) -> None:
    """Equal up to float reduction order (batch shape): scores within 1e-5, masks but threshold pixels."""
    assert abs(len(a) - len(b)) <= 1
    n = min(len(a), len(b))
    np.testing.assert_allclose(np.sort(a.confidence)[-n:], np.sort(b.confidence)[-n:], atol=1e-5)
    assert (a.mask[:n] == b.mask[:n]).mean() > 0.999


def _concurrent(engine: Sam3Engine, img: np.ndarray, phrases: list[str]) -> tuple[dict, list]:
    results: dict[str, sv.Detections] = {}

    def call(p: str) -> None:
        results[p] = engine.segment(img, p, **ALL)

    threads = [threading.Thread(target=call, args=(p,)) for p in phrases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def many() -> list[sv.Detections]:
        return list(await asyncio.gather(*(engine.asegment(img, p, **ALL) for p in phrases)))

    return results, asyncio.run(many())


@pytest.mark.parametrize("max_batch", [1, 8])
def test_concurrent_threads_and_tasks_equal_serial(tiny_sam3_dir: Path, max_batch: int) -> None:
    """Threads and asyncio tasks at once give what serial calls give: bit-identical without
    cross-request batching, within the batching tolerance with it."""
    img = _image(seed=5)
    phrases = [f"thing {i}" for i in range(6)]
    with Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", max_batch=max_batch,
                                    batch_window_ms=20) as engine:
        threaded, tasks = _concurrent(engine, img, phrases)
        # overlapping requests for one new image encoded it once
        assert engine.stats.vision_encoder_runs == 1
        for p, det in zip(phrases, tasks, strict=True):
            serial = engine.segment(img, p, **ALL)
            for got in (threaded[p], det):
                if max_batch == 1:
                    _same(got, serial)
                else:
                    _close(got, serial)
        assert engine.stats.vision_encoder_runs == 1
        if max_batch == 1:
            assert engine.stats.batched_requests == 0 and engine.stats.forwards == 3 * len(phrases)
        else:
            assert engine.stats.batched_requests > 0 and engine.stats.forwards < 3 * len(phrases)


def test_cross_request_batching_different_images(tiny_sam3_dir: Path) -> None:
    """Requests on different images share one forward; each equals its unbatched result."""
    images = [prepare_image(_image(seed=s)) for s in (11, 12, 13)]
    with Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", max_batch=1) as solo:
        alone = [solo.segment(h, "cat", **ALL) for h in images]
    with Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", max_batch=8, batch_window_ms=50) as engine:
        for h in images:
            engine.encode(h)

        async def together() -> list[sv.Detections]:
            return list(await asyncio.gather(*(engine.asegment(h, "cat", **ALL) for h in images)))

        batched = asyncio.run(together())
        assert engine.stats.largest_batch == 3 and engine.stats.batched_requests == 3
    for a, b in zip(alone, batched, strict=True):
        _close(a, b)


def test_max_batch_caps_a_forward(tiny_sam3_dir: Path) -> None:
    with Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", max_batch=2) as engine:
        dets = engine.segment(_image(), ["a", "b", "c", "d", "e"], **ALL)
        assert len(dets) == 5 and [d.data["phrase"][0] for d in dets] == ["a", "b", "c", "d", "e"]
        assert engine.stats.largest_batch <= 2 and engine.stats.forwards == 3


def test_async_new_image_overlap_encodes_once(fresh_engine: Sam3Engine) -> None:
    img = _image(seed=6)

    async def many() -> None:
        await asyncio.gather(*(fresh_engine.asegment(img, f"p{i}") for i in range(5)))

    asyncio.run(many())
    assert fresh_engine.stats.vision_encoder_runs == 1


def test_text_cache_keeps_attention_mask(fresh_engine: Sam3Engine) -> None:
    img = prepare_image(_image(seed=7))
    short, long = "cat", "a very long description of a striped cat"
    fresh_engine.segment(img, short, **ALL)
    fresh_engine.segment(img, long, **ALL)  # both phrases now cached with their own masks
    cached = fresh_engine.segment(img, [short, long], **ALL, dedup_iou=None)
    fresh_engine.clear_cache()
    uncached = fresh_engine.segment(img, [short, long], **ALL, dedup_iou=None)
    for a, b in zip(cached, uncached, strict=True):
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)


def test_exemplar_boxes(tiny_engine: Sam3Engine) -> None:
    img = _image()
    plain = tiny_engine.segment(img, "cat", **ALL, dedup_iou=None)
    boxed = tiny_engine.segment(img, "cat", boxes=[[10, 20, 90, 150]], box_labels=[1], **ALL, dedup_iou=None)
    neg = tiny_engine.segment(img, "cat", boxes=[[10, 20, 90, 150], [100, 100, 170, 290]], box_labels=[1, 0],
                              **ALL, dedup_iou=None)
    only = tiny_engine.segment(img, None, boxes=[[10, 20, 90, 150]], **ALL)
    assert boxed.mask.shape[1:] == (301, 177) and only.mask.shape[1:] == (301, 177)
    assert not np.array_equal(plain.confidence, boxed.confidence)
    assert not np.array_equal(boxed.confidence, neg.confidence)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"phrases": ""}, "empty phrase"),
        ({"phrases": "   "}, "empty phrase"),
        ({"phrases": []}, "no phrases"),
        ({"phrases": None}, "no exemplar boxes"),
        ({"phrases": [3]}, "must be strings"),
        ({"phrases": "cat", "boxes": [[10, 10, 5, 50]]}, "x2 <= x1"),
        ({"phrases": "cat", "boxes": [[1, 2, 3]]}, "x1, y1, x2, y2"),
        ({"phrases": "cat", "boxes": [[500, 500, 600, 600]]}, "outside"),
        ({"phrases": "cat", "boxes": [[1, 2, 30, 40]], "box_labels": [1, 0]}, "one label per box"),
        ({"phrases": "cat", "boxes": [[1, 2, 30, 40]], "box_labels": [2]}, "positive"),
        ({"phrases": ["a", "b"], "boxes": [[1, 2, 30, 40]]}, "single phrase"),
        ({"phrases": "cat", "score_threshold": 1.5}, "score_threshold"),
        ({"phrases": "cat", "max_masks": 0}, "max_masks"),
    ],
)
def test_bad_arguments(tiny_engine: Sam3Engine, kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        tiny_engine.segment(_image(), **kwargs)


def test_bad_image_raises_value_error(tiny_engine: Sam3Engine) -> None:
    with pytest.raises(ValueError, match="zero size"):
        tiny_engine.segment(np.zeros((0, 0, 3), np.uint8), "cat")


def test_long_phrase_truncated_with_warning(tiny_engine: Sam3Engine, caplog: pytest.LogCaptureFixture) -> None:
    phrase = "a " + "very " * 40 + "long cat"
    with caplog.at_level(logging.WARNING, logger="sam3core.engine"):
        det = tiny_engine.segment(_image(), phrase, **ALL)
    assert "truncated" in caplog.text
    assert det.mask.shape[1:] == (301, 177)


def test_upsampling_is_chunked_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 12 MP image with 20 masks never materialises more than one chunk of float masks."""
    import torch.nn.functional as F

    biggest: list[int] = []
    real = F.interpolate

    def spy(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        out = real(x, *args, **kwargs)
        biggest.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(F, "interpolate", spy)
    logits = torch.randn(20, 288, 288)
    chunk = 200 * 1024**2
    masks = upsample_masks(logits, (3000, 4000), 0.5, chunk_bytes=chunk)
    assert masks.shape == (20, 3000, 4000) and masks.dtype == bool
    assert max(biggest) <= chunk and len(biggest) == 5  # 48 MB of float per mask: 4 masks a chunk
    # same answer as one unchunked pass on a small size
    small = upsample_masks(logits[:5], (61, 83), 0.5, chunk_bytes=61 * 83 * 4)
    full = upsample_masks(logits[:5], (61, 83), 0.5)
    np.testing.assert_array_equal(small, full)


def test_duplicate_suppression() -> None:
    masks = torch.full((3, 8, 8), -10.0)
    masks[0, :4] = 10.0
    masks[1, :4] = 10.0
    masks[1, 4, 0] = 10.0  # near-duplicate of 0
    masks[2, 5:] = 10.0
    logits = torch.tensor([2.0, 3.0, 1.0])
    keep, scores = select_queries(logits, None, masks, score_threshold=0.0, mask_threshold=0.5, max_masks=10,
                                  dedup_iou=0.7)
    assert keep.tolist() == [1, 2]  # the higher-scoring duplicate survives
    np.testing.assert_allclose(scores.numpy(), torch.sigmoid(torch.tensor([3.0, 1.0])).numpy())
    keep, _ = select_queries(logits, None, masks, score_threshold=0.0, mask_threshold=0.5, max_masks=10,
                             dedup_iou=None)
    assert keep.tolist() == [1, 0, 2]
