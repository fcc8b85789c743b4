"""transformers' SAM 3 port (sam3core's engine) against Meta's ``sam3`` on identical, converted weights.

A small-dimension build of Meta's model (its own constructors, the released wiring, 32-wide, 1008x1008
input so windowed and global RoPE attention both run) is converted with ``sam3core.convert``; every
module is fed Meta's inputs and compared, then the end-to-end outputs. What holds: every module agrees
to float rounding, and so does the whole model once the prompt carries the geometry encoder's
empty-prompt token. What does not: transformers' ``Sam3Model.forward`` leaves that token out of
text-only prompts (port issue, worked around by ``Sam3Engine(meta_text_prompts=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch

TOL = 1e-5  # fp32 rounding across different kernels / reduction orders, relative to values of O(1)


@pytest.fixture(scope="module")
def report(parity: Any) -> dict[str, Any]:
    return parity.run("small")


def test_conversion_maps_every_tensor(report: dict[str, Any]) -> None:
    # 2 + 1 RoPE tables (recomputed by transformers) and 6 point-prompt tensors (no point prompts in the port)
    assert report["conversion"] == "mapped 286, unused 9 (0 unexpected), missing 0, shape mismatches 0"


def test_every_module_agrees_on_the_same_inputs(report: dict[str, Any]) -> None:
    rows = [r for r in report["modules"] if r["kind"] == "module"]
    assert len(rows) >= 20
    bad = [f"{r['module']}: max {r['max']:.2e} (|ref| {r['scale']:.2g})" for r in rows
           if r["max"] > TOL * max(1.0, r["scale"])]
    assert not bad, "modules that differ from Meta's: " + "; ".join(bad)


def test_transformers_forward_omits_the_geometry_token(report: dict[str, Any]) -> None:
    """The known port difference, where it enters: the DETR encoder reads text tokens only."""
    row = next(r for r in report["modules"] if r["kind"] == "port")
    assert row["module"].startswith("detr_encoder")
    assert row["max"] > 0.1 and row["mean"] > 0.01
    port = report["end_to_end"]["port"]
    assert port["logit_max_diff"] > 1e-2 and port["mask_logit_mean_diff"] > 1e-2 and port["box_max_diff"] > 1e-3


def test_sam3core_prompt_matches_meta_end_to_end(report: dict[str, Any]) -> None:
    e2e = report["end_to_end"]["sam3core"]
    assert e2e["topk_same_order"] and e2e["topk_overlap"] == 1.0
    assert e2e["topk_score_max_diff"] < 1e-6 and e2e["logit_max_diff"] < TOL and e2e["presence_diff"] < TOL
    assert e2e["box_max_diff"] < TOL and e2e["mask_logit_mean_diff"] < TOL
    assert e2e["topk_mask_iou_min"] > 0.999
    assert e2e["kept_ref"] == e2e["kept_ours"]


def test_pixel_preprocessing_matches(report: dict[str, Any]) -> None:
    for row in report["preprocessing"]:
        assert row["shape"] == [1, 3, 1008, 1008] and row["meta_dtype"] == row["ours_dtype"] == "torch.float32"
        assert row["max"] < 1e-6, row  # same bilinear antialiased resize of the uint8 image, same normalisation


def test_box_prompts_already_match(parity: Any) -> None:
    """With exemplar boxes transformers runs the geometry encoder itself (boxes + CLS token): no workaround."""
    from sam3.model.geometry_encoders import Prompt

    meta = parity.build_meta_small(1)
    hf, _ = parity.hf_from_meta(meta)
    pixel = torch.rand(1, 3, 1008, 1008, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ids = meta.backbone.language_backbone.tokenizer(["visual"], context_length=32)
    boxes, labels = torch.tensor([[0.4, 0.5, 0.3, 0.2], [0.7, 0.3, 0.1, 0.1]]), torch.tensor([1, 0])
    with torch.inference_mode(), parity.meta_cpu_patches():
        backbone_out = meta.backbone.forward_image(pixel)
        backbone_out.update(meta.backbone.forward_text(["visual"], device="cpu"))
        find = parity._meta_prompts(meta, backbone_out)["find"]
        geo = Prompt(box_embeddings=boxes[:, None], box_mask=torch.zeros(1, 2, dtype=torch.bool),
                     box_labels=labels[:, None])
        out = meta.forward_grounding(backbone_out=backbone_out, find_input=find, find_target=None,
                                     geometric_prompt=geo)
        ours = hf(pixel_values=pixel, input_ids=ids, attention_mask=(ids != 0).long(), input_boxes=boxes[None],
                  input_boxes_labels=labels[None])
    ref = {"logits": out["pred_logits"][0, :, 0], "presence": out["presence_logit_dec"][0, 0],
           "boxes": out["pred_boxes_xyxy"][0], "masks": out["pred_masks"][0]}
    got = {"logits": ours.pred_logits[0], "presence": ours.presence_logits[0, 0], "boxes": ours.pred_boxes[0],
           "masks": ours.pred_masks[0]}
    agree = parity.agreement(ref, got)
    assert agree["topk_same_order"] and agree["logit_max_diff"] < TOL and agree["box_max_diff"] < TOL
    assert agree["mask_logit_mean_diff"] < TOL


def _tiny_tokenizer():  # type: ignore[no-untyped-def]
    """A 64-token CLIP tokenizer: "cat" -> [62, 5, 63], padded with 63 (Meta pads with 0: masked either way)."""
    from transformers import CLIPTokenizer

    vocab = {"!": 0, "c": 1, "a": 2, "t</w>": 3, "ca": 4, "cat</w>": 5}
    vocab.update({f"<unused{i}>": i for i in range(6, 62)})
    vocab.update({"<|startoftext|>": 62, "<|endoftext|>": 63})
    return CLIPTokenizer(vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")], model_max_length=32)


def test_engine_matches_meta_processor(parity: Any, tmp_path: Path) -> None:
    """Meta's ``Sam3Processor`` (set_image + set_text_prompt) vs ``Sam3Engine`` on a converted directory.

    Scores and predicted boxes agree to rounding. Masks agree except boundary pixels: Meta thresholds
    sigmoid(bilinear(logits)), sam3core's default (like transformers' post-processing)
    bilinear(sigmoid(logits)); ``mask_upsampling="logits"`` gives Meta's (next test).
    """
    from PIL import Image
    from sam3.model.sam3_image_processor import Sam3Processor as MetaProcessor
    from transformers import Sam3ImageProcessor, Sam3Processor

    from sam3core.convert import convert_checkpoint
    from sam3core.engine import Sam3Engine

    meta = parity.build_meta_small(2, ids=[62, 5, 63])
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=_tiny_tokenizer())
    assert processor.tokenizer("cat")["input_ids"] == [62, 5, 63]
    report = convert_checkpoint(meta.state_dict(), tmp_path / "converted", processor=processor)
    assert report.ok
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    with torch.inference_mode(), parity.meta_cpu_patches():
        meta_proc = MetaProcessor(meta, device="cpu", confidence_threshold=0.0)
        state = meta_proc.set_text_prompt("cat", meta_proc.set_image(image))
    order = torch.argsort(state["scores"], descending=True)
    ref_scores = state["scores"][order].numpy()
    ref_masks, ref_boxes = state["masks"][order, 0].numpy(), state["boxes"][order].numpy()
    with Sam3Engine.from_pretrained(tmp_path / "converted", device="cpu", meta_text_prompts=True) as engine:
        det = engine.segment(image, "cat", score_threshold=0.0, max_masks=None, dedup_iou=None)
    nonempty = ref_masks.reshape(len(ref_masks), -1).any(axis=1)  # the engine drops empty masks
    assert len(det) == int(nonempty.sum()) > 0
    np.testing.assert_allclose(det.confidence, ref_scores[nonempty], rtol=0, atol=1e-6)
    np.testing.assert_allclose(det.data["predicted_xyxy"], ref_boxes[nonempty], rtol=0, atol=1e-3)
    agree = (det.mask == ref_masks[nonempty]).mean(axis=(1, 2))
    assert agree.min() > 0.995, agree


def test_engine_default_is_transformers_prompt(parity: Any, tmp_path: Path) -> None:
    """Without ``meta_text_prompts`` the engine gives transformers' text-only result (Meta's differs)."""
    from PIL import Image
    from transformers import Sam3ImageProcessor, Sam3Processor

    from sam3core.convert import convert_checkpoint
    from sam3core.engine import Sam3Engine

    meta = parity.build_meta_small(2, ids=[62, 5, 63])
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=_tiny_tokenizer())
    convert_checkpoint(meta.state_dict(), tmp_path / "converted", processor=processor)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    scores = {}
    for flag in (False, True):
        with Sam3Engine.from_pretrained(tmp_path / "converted", device="cpu", meta_text_prompts=flag) as engine:
            scores[flag] = np.sort(engine.segment(image, "cat", score_threshold=0.0, max_masks=None,
                                                  dedup_iou=None).confidence)
    n = min(len(scores[False]), len(scores[True]))
    assert np.abs(scores[False][-n:] - scores[True][-n:]).max() > 1e-4


def test_logits_order_gives_meta_processor_masks(parity: Any, tmp_path: Path) -> None:
    """``mask_upsampling="logits"`` (the agent's paper preset) binarises as Meta's processor: the same pixels.

    The default order (transformers') differs from Meta's on border pixels of the same queries. The mask
    logits are scaled by 40 on both sides (the same weights' random logits sit near 0, where the two orders
    almost never disagree) so that the comparison can tell the orders apart.
    """
    from PIL import Image
    from sam3.model.sam3_image_processor import Sam3Processor as MetaProcessor
    from transformers import Sam3ImageProcessor, Sam3Processor

    from sam3core.convert import convert_checkpoint
    from sam3core.engine import Sam3Engine

    meta = parity.build_meta_small(2, ids=[62, 5, 63])
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=_tiny_tokenizer())
    assert convert_checkpoint(meta.state_dict(), tmp_path / "converted", processor=processor).ok
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (210, 330, 3), dtype=np.uint8))
    meta_forward = meta.forward_grounding

    def scaled_meta(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = meta_forward(*args, **kwargs)
        return {**out, "pred_masks": out["pred_masks"] * 40}

    with torch.inference_mode(), parity.meta_cpu_patches(), mock.patch.object(meta, "forward_grounding", scaled_meta):
        meta_proc = MetaProcessor(meta, device="cpu", confidence_threshold=0.0)
        state = meta_proc.set_text_prompt("cat", meta_proc.set_image(image))
    order = torch.argsort(state["scores"], descending=True)
    ref_masks = state["masks"][order, 0].numpy()
    nonempty = ref_masks.reshape(len(ref_masks), -1).any(axis=1)  # the engine drops empty masks
    got = {}
    with Sam3Engine.from_pretrained(tmp_path / "converted", device="cpu") as engine:
        forward = engine.model.forward

        def scaled(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            out.pred_masks = out.pred_masks * 40
            return out

        with mock.patch.object(engine.model, "forward", scaled):
            for name in ("logits", "probabilities"):
                got[name] = engine.segment(image, "cat", score_threshold=0.0, max_masks=None, dedup_iou=None,
                                           mask_upsampling=name)
    for det in got.values():
        assert len(det) == int(nonempty.sum()) > 0
        np.testing.assert_allclose(det.confidence, state["scores"][order].numpy()[nonempty], rtol=0, atol=1e-6)
    differing = (got["logits"].mask != ref_masks[nonempty]).sum()
    # measured: 1 of 1.39 M pixels (a logit within fp32 rounding of 0); the default order: 20,048
    assert differing <= 10, f"{differing} pixels differ from Meta's processor"
    assert (got["probabilities"].mask != ref_masks[nonempty]).sum() > 1000
