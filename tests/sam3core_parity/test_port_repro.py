"""Minimal reproduction of the port difference (runs without Meta's package).

Meta's ``Sam3Image._encode_prompt`` always runs the geometry encoder; with no boxes it returns one
CLS token (``cls_embed`` -> ``final_proj`` -> norm -> layers attending to the image -> norm) that is
concatenated after the text tokens, and the DETR encoder, decoder, scorer and mask head read that
prompt. transformers' ``Sam3Model.forward`` (5.17 to 5.24) runs it only when boxes are given
(``has_geometry_prompts = input_boxes is not None and input_boxes.numel() > 0``), so for a text-only
prompt nothing depends on the geometry encoder's weights. ``sam3core.engine.geometry_prompt_token``
computes the token; ``Sam3Engine(meta_text_prompts=True)`` appends it.

If the first test fails, transformers has changed that forward: the workaround would then add the
token a second time (check ``benchmarks/parity.py --size small`` and drop it).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from sam3core.engine import Sam3Engine, geometry_prompt_token
from sam3core.testing import build_random_sam3


def _inputs(processor):  # type: ignore[no-untyped-def]
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    inputs = processor(images=image, text="cat", return_tensors="pt")
    return {k: v for k, v in inputs.items() if k != "original_sizes"}


def test_text_only_forward_ignores_the_geometry_encoder() -> None:
    model, processor = build_random_sam3("tiny")
    inputs = _inputs(processor)
    with torch.inference_mode():
        before = model(**inputs)
        model.geometry_encoder.cls_embed.weight.add_(1.0)  # Meta's text-only outputs depend on this
        after = model(**inputs)
    for name in ("pred_logits", "presence_logits", "pred_boxes", "pred_masks"):
        assert torch.equal(getattr(before, name), getattr(after, name)), name


def test_geometry_token_makes_the_prompt_depend_on_it() -> None:
    model, processor = build_random_sam3("tiny")
    inputs = _inputs(processor)
    outs = []
    with torch.inference_mode():
        vision = model.get_vision_features(pixel_values=inputs["pixel_values"])
        text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        mask = torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=inputs["attention_mask"].dtype)], dim=1)
        for _ in range(2):
            token = geometry_prompt_token(model, vision.fpn_hidden_states, vision.fpn_position_encoding)
            assert token.shape == (1, 1, model.config.geometry_encoder_config.hidden_size)
            prompt = BaseModelOutputWithPooling(pooler_output=torch.cat([text.pooler_output, token], dim=1))
            outs.append(model(vision_embeds=vision, text_embeds=prompt, attention_mask=mask))
            model.geometry_encoder.cls_embed.weight.add_(1.0)
    assert not torch.equal(outs[0].pred_logits, outs[1].pred_logits)


def test_engine_flag_batches_and_caches_like_the_default(tiny_sam3_dir) -> None:  # type: ignore[no-untyped-def]
    """Several phrases in one forward give each phrase's single-phrase result (token per image, batch 1)."""
    image = np.random.default_rng(1).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    kw = {"score_threshold": 0.0, "max_masks": None, "dedup_iou": None}
    with Sam3Engine.from_pretrained(tiny_sam3_dir, device="cpu", meta_text_prompts=True) as engine:
        batched = engine.segment(image, ["cat", "a dog"], **kw)
        singles = [engine.segment(image, p, **kw) for p in ("cat", "a dog")]
        assert engine.stats.vision_encoder_runs == 1
    for b, s in zip(batched, singles, strict=True):
        n = min(len(b), len(s))
        assert abs(len(b) - len(s)) <= 1 and n > 0
        np.testing.assert_allclose(np.sort(b.confidence)[-n:], np.sort(s.confidence)[-n:], atol=1e-5)
