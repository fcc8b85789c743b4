"""The two mask binarisation orders: transformers' (sigmoid, then upsample) and Meta's (upsample, then sigmoid)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam3core.engine import Sam3Engine
from sam3core.image import prepare_image
from sam3core.postprocess import select_queries, upsample_masks

# one row from a strong negative to a weak positive logit: the orders cross 0.5 at different places
CRAFTED = torch.tensor([[[-4.0, 1.0], [-4.0, 1.0]], [[2.0, -3.0], [0.5, -6.0]]])


def _by_hand(logits: torch.Tensor, size: tuple[int, int], threshold: float) -> dict[str, np.ndarray]:
    up = dict(mode="bilinear", align_corners=False)
    return {"probabilities": (F.interpolate(logits.sigmoid()[None], size=size, **up)[0] > threshold).numpy(),
            "logits": (F.interpolate(logits[None], size=size, **up)[0].sigmoid() > threshold).numpy()}


def test_orders_differ_at_borders_of_a_crafted_logit_map() -> None:
    size = (6, 40)
    expected = _by_hand(CRAFTED, size, 0.5)
    probs = upsample_masks(CRAFTED, size, 0.5, order="probabilities")
    logits = upsample_masks(CRAFTED, size, 0.5, order="logits")
    np.testing.assert_array_equal(probs, expected["probabilities"])
    np.testing.assert_array_equal(logits, expected["logits"])
    # a [-4, 1] row: bilinear probabilities pass 0.5 from 68% of the way to the positive end, logits only
    # from 80%: the transformers order keeps a border band the Meta order drops
    row_p, row_l = probs[0, 0], logits[0, 0]
    assert row_l.sum() < row_p.sum() and (row_l <= row_p).all()
    assert int(np.argmax(row_p)) < int(np.argmax(row_l))
    assert (probs != logits).sum() >= 4
    assert probs.any(axis=(1, 2)).all() and logits.any(axis=(1, 2)).all()


def test_default_order_is_transformers_and_unknown_order_raises() -> None:
    np.testing.assert_array_equal(upsample_masks(CRAFTED, (6, 40), 0.5),
                                  upsample_masks(CRAFTED, (6, 40), 0.5, order="probabilities"))
    with pytest.raises(ValueError, match="logits"):
        upsample_masks(CRAFTED, (6, 40), 0.5, order="meta")  # type: ignore[arg-type]


def test_chunked_logits_order_equals_one_pass() -> None:
    logits = torch.randn(7, 12, 12, generator=torch.Generator().manual_seed(0)) * 3
    one = upsample_masks(logits, (37, 53), 0.6, order="logits")
    chunked = upsample_masks(logits, (37, 53), 0.6, order="logits", chunk_bytes=37 * 53 * 4 * 2)
    np.testing.assert_array_equal(one, chunked)
    np.testing.assert_array_equal(one, _by_hand(logits, (37, 53), 0.6)["logits"])


def _raw(engine: Sam3Engine, image: np.ndarray, phrase: str) -> dict[str, np.ndarray]:
    """Both orders applied by hand to the tiny model's own outputs (as the engine's forward gives them)."""
    handle = prepare_image(image)
    inputs = engine.processor(images=handle.image, text=phrase, return_tensors="pt")
    with torch.inference_mode():
        out = engine.model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
        # scaled so the random model's near-zero logits reach the region where the orders disagree
        scaled = out.pred_masks[0] * 40
        keep, _ = select_queries(out.pred_logits[0], out.presence_logits[0], scaled, score_threshold=0.0,
                                 mask_threshold=0.5, max_masks=None, dedup_iou=None)
        return {o: upsample_masks(scaled[keep], (handle.height, handle.width), 0.5, order=o)  # type: ignore[arg-type]
                for o in ("probabilities", "logits")}


def _scale_mask_logits(engine: Sam3Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the engine's model return its mask logits times 40 (as :func:`_raw` scales them)."""
    real = engine.model.forward

    def scaled_forward(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real(*args, **kwargs)
        out.pred_masks = out.pred_masks * 40
        return out

    monkeypatch.setattr(engine.model, "forward", scaled_forward)


def test_engine_setting_per_call_and_in_the_constructor(tiny_sam3_dir, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    image = np.random.default_rng(3).integers(0, 256, (70, 110, 3), dtype=np.uint8)
    kw = {"score_threshold": 0.0, "max_masks": None, "dedup_iou": None}
    with Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", meta_text_prompts=False) as engine:
        expected = _raw(engine, image, "cat")
        assert (expected["probabilities"] != expected["logits"]).any()
        _scale_mask_logits(engine, monkeypatch)
        got = {o: engine.segment(image, "cat", mask_upsampling=o, **kw) for o in ("probabilities", "logits")}
        default = engine.segment(image, "cat", **kw)
        with pytest.raises(ValueError, match="mask_upsampling"):
            engine.segment(image, "cat", mask_upsampling="meta", **kw)
    for order, det in got.items():
        nonempty = expected[order].reshape(len(expected[order]), -1).any(axis=1)
        assert len(det) == int(nonempty.sum()) > 0
        np.testing.assert_array_equal(det.mask, expected[order][nonempty])
    np.testing.assert_array_equal(got["probabilities"].confidence, got["logits"].confidence)
    np.testing.assert_array_equal(default.mask, got["probabilities"].mask)
    with Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", meta_text_prompts=False,
                                    mask_upsampling="logits") as engine:
        assert engine.mask_upsampling == "logits"
        _scale_mask_logits(engine, monkeypatch)
        np.testing.assert_array_equal(engine.segment(image, "cat", **kw).mask, got["logits"].mask)
        np.testing.assert_array_equal(engine.segment(image, "cat", mask_upsampling="probabilities", **kw).mask,
                                      got["probabilities"].mask)
    with pytest.raises(ValueError, match="mask_upsampling"):
        Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", mask_upsampling="meta")  # type: ignore[arg-type]
