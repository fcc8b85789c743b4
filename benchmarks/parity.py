"""Engine parity: transformers' SAM 3 port (what sam3core runs) against Meta's ``sam3`` on identical weights.

Meta's model is built, its weights are converted with ``sam3core.convert``, and both run on the same pixel
tensor and token ids. Every stage is fed the *same* (Meta's) inputs, so each row measures that module's
own difference: ViT embeddings and each block (windowed / global attention with RoPE), FPN neck, text
encoder, geometry encoder, DETR encoder, each decoder layer, boxes, presence, scores, mask head. Then the
end-to-end outputs: top-k (k=10) scores, rank agreement, mask IoU and the queries kept at threshold 0.5,
for the port as is ("port") and with sam3core's workaround ("sam3core").

Rows have a ``kind``: ``module`` (must agree), ``port`` (the DETR encoder as ``Sam3Model.forward`` feeds it a
text-only prompt, without the geometry encoder's empty-prompt token: where the port's outputs start to
differ from Meta's) and ``info`` (the ViT with transformers' default LayerNorm eps 1e-6 instead of Meta's 1e-5).

Meta's ``sam3`` is a test oracle only (Meta's licence): it is imported here, never by sam3agent/sam3core.
It must be importable (``.reference`` is appended to ``sys.path``; ``pip install --no-deps --target .reference
sam3==0.1.4``, plus timm, ftfy, iopath, einops). On a machine without CUDA it needs the CPU shims of
:func:`meta_cpu_patches`. On CUDA, importing ``sam3.model_builder`` turns TF32 matmuls on for the whole
process, so there both sides run at TF32 precision (not measured here). Full size, 2-core CPU: ~15 min.

Usage::

    python benchmarks/parity.py --size full [--device cuda] [--checkpoint sam3.pt] [--bpe vocab.txt.gz] [--json]
    python benchmarks/parity.py --size small --json      # seconds; what tests/sam3core_parity runs
    python benchmarks/parity.py --photos --size full --bpe vocab.txt.gz [--json]   # photos x phrases, end to end
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# "person" under CLIP's BPE: <|startoftext|> person</w> <|endoftext|>, padded with 0 to 32 (Meta's layout)
PERSON_IDS = [49406, 2533, 49407]


def import_reference(reference_dir: str | Path | None = None) -> None:
    """Make Meta's ``sam3`` importable (appended to ``sys.path``) and import the modules used here."""
    folder = str(reference_dir or ROOT / ".reference")
    if folder not in sys.path:
        sys.path.append(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CUDA-only autocast decorators warn on CPU
        import sam3.model.sam3_image  # noqa: F401


@contextlib.contextmanager
def meta_cpu_patches() -> Iterator[None]:
    """Shims for running Meta's code without CUDA: ``Tensor.pin_memory`` (called on every grounding
    call by the geometry encoder) becomes a no-op, and the decoder's coordinate cache is built on CPU."""
    import torch
    from sam3.model.decoder import TransformerDecoder

    if torch.cuda.is_available():
        yield
        return
    pin, coords = torch.Tensor.pin_memory, TransformerDecoder._get_coords
    torch.Tensor.pin_memory = lambda self, *a, **k: self  # type: ignore[method-assign]
    TransformerDecoder._get_coords = staticmethod(lambda h, w, device: coords(h, w, "cpu"))  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.pin_memory = pin  # type: ignore[method-assign]
        TransformerDecoder._get_coords = staticmethod(coords)  # type: ignore[method-assign]


class FixedTokenizer:
    """Stands in for Meta's BPE tokenizer: returns the given ids (padded with 0 to the context length)."""

    def __init__(self, ids: list[int]):
        self.ids = ids

    def __call__(self, texts: list[str], context_length: int = 32):  # type: ignore[no-untyped-def]
        import torch

        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        out[:, : len(self.ids)] = torch.tensor(self.ids)
        return out


def _init_random(model: Any) -> None:
    """Finish a random initialisation. Meta creates the text encoder's ``positional_embedding`` and
    ``text_projection`` with ``torch.empty`` and never initialises them (NaN-prone without a checkpoint);
    its box head's last layer starts at zero (refinement starts as the identity), which would make every
    predicted box equal to the reference boxes and hide box differences, so it gets small random values."""
    import torch

    enc = model.backbone.language_backbone.encoder
    torch.nn.init.normal_(enc.positional_embedding, std=0.01)
    torch.nn.init.normal_(enc.text_projection, std=enc.width ** -0.5)
    torch.nn.init.normal_(model.transformer.decoder.bbox_embed.layers[-1].weight, std=0.05)


SMALL = {"d": 32, "heads": 2, "ffn": 64, "vit_dim": 32, "vit_heads": 2, "vit_depth": 3, "global_blocks": (2,),
         "text_width": 128, "text_heads": 2, "vocab": 64, "layers": 2, "queries": 20, "img": 1008}


def build_meta_small(seed: int = 0, ids: list[int] | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
    """Meta's ``Sam3Image`` assembled as ``sam3.model_builder`` does, with small widths and depths.

    Same constructor arguments as the released model except the sizes in :data:`SMALL` (overridable)
    and ``resolution=None``/``precompute_resolution=None`` (those only fill CUDA caches).
    Text width/heads keep CLIP's 64-wide heads, which ``sam3core.convert.infer_config`` assumes.
    Modules are built in the builder's order, so a seed always gives the same weights.
    """
    import torch
    from sam3.model.model_misc import TransformerWrapper
    from sam3.model.sam3_image import Sam3Image
    from sam3.model.vl_combiner import SAM3VLBackbone

    s = {**SMALL, **overrides}
    with torch.random.fork_rng(devices=[]):  # the caller's generator is left as it was
        torch.manual_seed(seed)
        neck, text = _small_backbone(s, ids)
        encoder, decoder, scoring, seg, geo = _small_heads(s)
        model = Sam3Image(backbone=SAM3VLBackbone(visual=neck, text=text, scalp=1),
                          transformer=TransformerWrapper(encoder=encoder, decoder=decoder, d_model=s["d"]),
                          input_geometry_encoder=geo, segmentation_head=seg, num_feature_levels=1,
                          o2m_mask_predict=True, dot_prod_scoring=scoring, use_instance_query=False,
                          multimask_output=True, inst_interactive_predictor=None, matcher=None)
        _init_random(model)
    return model.eval()


def _small_backbone(s: dict[str, Any], ids: list[int] | None) -> tuple[Any, Any]:
    """The ViT + FPN neck and the text encoder of :func:`build_meta_small`."""
    from sam3.model.necks import Sam3DualViTDetNeck
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.vitdet import ViT

    d = s["d"]
    vit = ViT(img_size=s["img"], pretrain_img_size=336, patch_size=14, embed_dim=s["vit_dim"], depth=s["vit_depth"],
              num_heads=s["vit_heads"], mlp_ratio=2.0, norm_layer="LayerNorm", drop_path_rate=0.1, qkv_bias=True,
              use_abs_pos=True, tile_abs_pos=True, global_att_blocks=s["global_blocks"], rel_pos_blocks=(),
              use_rope=True, use_interp_rope=True, window_size=24, pretrain_use_cls_token=True,
              retain_cls_token=False, ln_pre=True, ln_post=False, return_interm_layers=False,
              bias_patch_embed=False)
    neck = Sam3DualViTDetNeck(position_encoding=PositionEmbeddingSine(num_pos_feats=d, normalize=True),
                              d_model=d, scale_factors=[4.0, 2.0, 1.0, 0.5], trunk=vit, add_sam2_neck=False)
    text = VETextEncoder(tokenizer=FixedTokenizer(ids or [s["vocab"] - 2, 5, 7, s["vocab"] - 1]), d_model=d,
                         width=s["text_width"], heads=s["text_heads"], layers=1, vocab_size=s["vocab"])
    return neck, text


def _small_heads(s: dict[str, Any]) -> tuple[Any, ...]:
    """DETR encoder, decoder, scorer, segmentation head and geometry encoder of :func:`build_meta_small`."""
    import torch
    from sam3.model.decoder import TransformerDecoder, TransformerDecoderLayer
    from sam3.model.encoder import TransformerEncoderFusion, TransformerEncoderLayer
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
    from sam3.model.model_misc import MLP, DotProductScoring
    from sam3.model.model_misc import MultiheadAttentionWrapper as MHA
    from sam3.model.position_encoding import PositionEmbeddingSine

    d, h, ffn, n = s["d"], s["heads"], s["ffn"], s["layers"]

    def enc_layer(pos_at_attn: bool, keys_pos: bool, batch_first: bool):  # type: ignore[no-untyped-def]
        return TransformerEncoderLayer(
            activation="relu", d_model=d, dim_feedforward=ffn, dropout=0.1, pos_enc_at_attn=pos_at_attn,
            pos_enc_at_cross_attn_keys=keys_pos, pos_enc_at_cross_attn_queries=False, pre_norm=True,
            self_attention=MHA(num_heads=h, dropout=0.1, embed_dim=d, batch_first=batch_first),
            cross_attention=MHA(num_heads=h, dropout=0.1, embed_dim=d, batch_first=batch_first))

    encoder = TransformerEncoderFusion(layer=enc_layer(True, False, True), num_layers=n, d_model=d,
                                       num_feature_levels=1, frozen=False, use_act_checkpoint=True,
                                       add_pooled_text_to_img_feat=False, pool_text_with_mask=True)
    dec_layer = TransformerDecoderLayer(activation="relu", d_model=d, dim_feedforward=ffn, dropout=0.1,
                                        cross_attention=MHA(num_heads=h, dropout=0.1, embed_dim=d), n_heads=h,
                                        use_text_cross_attention=True)
    decoder = TransformerDecoder(layer=dec_layer, num_layers=n, num_queries=s["queries"], return_intermediate=True,
                                 box_refine=True, num_o2m_queries=0, dac=True, boxRPB="log", d_model=d,
                                 frozen=False, interaction_layer=None, dac_use_selfatt_ln=True, resolution=None,
                                 stride=None, use_act_checkpoint=True, presence_token=True)
    scoring = DotProductScoring(d_model=d, d_proj=d, prompt_mlp=MLP(
        input_dim=d, hidden_dim=ffn, output_dim=d, num_layers=2, dropout=0.1, residual=True,
        out_norm=torch.nn.LayerNorm(d)))
    seg = UniversalSegmentationHead(
        hidden_dim=d, upsampling_stages=3, aux_masks=False, presence_head=False, dot_product_scorer=None,
        act_ckpt=True, cross_attend_prompt=MHA(num_heads=h, dropout=0, embed_dim=d),
        pixel_decoder=PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=d))
    geo = SequenceGeometryEncoder(
        pos_enc=PositionEmbeddingSine(num_pos_feats=d, normalize=True), encode_boxes_as_points=False,
        points_direct_project=True, points_pool=True, points_pos_enc=True, boxes_direct_project=True,
        boxes_pool=True, boxes_pos_enc=True, d_model=d, num_layers=n, layer=enc_layer(False, True, False),
        use_act_ckpt=True, add_cls=True, add_post_encode_proj=True)
    return encoder, decoder, scoring, seg, geo


def build_meta_full(device: str, checkpoint: str | None = None, bpe_path: str | None = None,
                    ids: list[int] | None = None, seed: int = 0):  # type: ignore[no-untyped-def]
    """The released architecture through ``sam3.model_builder.build_sam3_image_model``.

    Random weights unless ``checkpoint``. Without ``bpe_path`` its tokenizer is a :class:`FixedTokenizer`
    (``ids``, default "person"); on CPU its CUDA-only caches are not precomputed.
    """
    import torch
    from sam3 import model_builder

    saved = model_builder._create_position_encoding, model_builder.SimpleTokenizer
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=[]))  # the caller's generator is left as it was
        torch.manual_seed(seed)
        stack.callback(_restore_builder, model_builder, saved)
        if device != "cuda":  # its position-encoding cache is precomputed on "cuda"
            model_builder._create_position_encoding = lambda precompute_resolution=None: saved[0](None)
        if bpe_path is None:
            model_builder.SimpleTokenizer = lambda bpe_path: FixedTokenizer(ids or PERSON_IDS)
        with meta_cpu_patches():
            model = model_builder.build_sam3_image_model(
                bpe_path=bpe_path or "unused", device=device, eval_mode=True, checkpoint_path=checkpoint,
                load_from_HF=False, enable_segmentation=True)
        if checkpoint is None:
            _init_random(model)
    return model.eval()


def _restore_builder(model_builder: Any, saved: tuple[Any, Any]) -> None:
    model_builder._create_position_encoding, model_builder.SimpleTokenizer = saved


def hf_from_meta(meta: Any, device: str = "cpu"):  # type: ignore[no-untyped-def]
    """transformers' ``Sam3Model`` holding Meta's weights, through ``sam3core.convert``."""
    import torch
    from transformers import Sam3Model

    from sam3core.convert import convert_state_dict, infer_config

    meta_sd = meta.state_dict()
    config = infer_config(meta_sd)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Sam3Model(config).state_dict().items()}
    hf_sd, report = convert_state_dict(meta_sd, expected)
    if not report.ok:
        raise RuntimeError(f"conversion is not clean: {report.summary()}")
    model = Sam3Model(config)
    model.load_state_dict(hf_sd, strict=True)
    return model.to(device).eval(), report


# ----------------------------------------------------------------------------------------------- comparisons
def diff(a: Any, b: Any) -> dict[str, float]:
    """Max / mean absolute difference, and the max relative to the reference's scale (max |a|)."""
    a, b = a.detach().float(), b.detach().float()
    if a.shape != b.shape:
        raise ValueError(f"shape {tuple(a.shape)} vs {tuple(b.shape)}")
    d = (a - b).abs()
    return {"max": float(d.max()) if d.numel() else 0.0, "mean": float(d.mean()) if d.numel() else 0.0,
            "scale": float(a.abs().max()) if a.numel() else 0.0}


def compare_modules(meta: Any, hf: Any, pixel: Any, device: str = "cpu") -> list[dict[str, Any]]:
    """Per-module differences, each module fed Meta's own inputs (rows in forward order).

    Args:
        meta: Meta's ``Sam3Image`` (eval).
        hf: ``Sam3Model`` with the converted weights.
        pixel: ``(1, 3, H, W)`` float pixels, already normalised.
    """
    import torch
    from sam3.model.vitdet import get_abs_pos

    rows: list[dict[str, Any]] = []

    def add(name: str, ref: Any, ours: Any) -> None:
        rows.append({"module": name, "kind": "module", **diff(ref, ours)})

    pixel = pixel.to(device)
    trunk, bb = meta.backbone.vision_backbone.trunk, hf.vision_encoder.backbone
    with torch.inference_mode(), meta_cpu_patches():
        # ViT: embeddings (+ tiled absolute positions) and ln_pre, then each block on Meta's input
        x = trunk.patch_embed(pixel)
        x = trunk.ln_pre(x + get_abs_pos(trunk.pos_embed, True, (x.shape[1], x.shape[2]), False, tiling=True))
        h, w = x.shape[1:3]
        ours = bb.layer_norm(bb.embeddings(pixel).view(1, h, w, -1))
        add("vit.embeddings+ln_pre", x, ours)
        for i, (blk, layer) in enumerate(zip(trunk.blocks, bb.layers, strict=True)):
            kind = "global" if blk.window_size == 0 else f"window{blk.window_size}"
            y = blk(x)
            add(f"vit.block{i}({kind})", y, layer(x))
            x = y
        rows.append(_eps_row(bb, pixel, x))
        # FPN neck on Meta's trunk output (Meta's forward_image, without running the trunk again)
        feat = x.permute(0, 3, 1, 2)
        neck = meta.backbone.vision_backbone
        levels = [conv(feat) for conv in neck.convs]
        positions = [neck.position_encoding(lv).to(lv.dtype) for lv in levels]
        hf_levels, hf_positions = hf.vision_encoder.neck(feat)
        for i, (lv, ours) in enumerate(zip(levels, hf_levels, strict=True)):
            add(f"neck.level{i}(x{neck.scale_factors[i]:g})", lv, ours)
        for i, (pe, ours) in enumerate(zip(positions, hf_positions, strict=True)):
            add(f"neck.pos_enc{i}", pe, ours)
        keep = len(levels) - meta.backbone.scalp  # Meta drops the 0.5x level ("scalp"), as Sam3Model.forward does
        backbone_out = {"vision_features": levels[keep - 1], "vision_pos_enc": positions[:keep],
                        "backbone_fpn": levels[:keep], "sam2_backbone_out": None}
        # text: same ids, Meta's padding mask
        text_out = meta.backbone.forward_text(["prompt"], device=device)
        ids = meta.backbone.language_backbone.tokenizer(["prompt"], context_length=32).to(device)
        valid = ids != 0
        txt = hf.get_text_features(input_ids=ids, attention_mask=valid.long()).pooler_output
        add("text.encoder+resizer(valid tokens)", text_out["language_features"][:, 0][valid[0]], txt[0][valid[0]])
        backbone_out.update(text_out)
        prompts = _meta_prompts(meta, backbone_out)
        rows.extend(_compare_heads(meta, hf, backbone_out, prompts))
    return rows


def _eps_row(bb: Any, pixel: Any, ref: Any) -> dict[str, Any]:
    """The ViT output if its LayerNorms used transformers' default eps (1e-6) instead of Meta's 1e-5."""
    import torch

    norms = [m for m in bb.modules() if isinstance(m, torch.nn.LayerNorm)]
    eps = [m.eps for m in norms]
    try:
        for m in norms:
            m.eps = 1e-6
        out = bb(pixel).last_hidden_state.view(ref.shape)
    finally:
        for m, e in zip(norms, eps, strict=True):
            m.eps = e
    return {"module": "vit.output with layer_norm_eps=1e-6", "kind": "info", **diff(ref, out),
            "note": "transformers' Sam3ViTConfig default; Meta's ViT uses 1e-5, which sam3core.convert writes"}


def _meta_prompts(meta: Any, backbone_out: dict[str, Any]) -> dict[str, Any]:
    """Meta's encoder inputs for a text prompt (what ``forward_grounding`` builds) and its geometry token."""
    from sam3.model.data_misc import FindStage

    device = backbone_out["language_features"].device
    import torch

    find = FindStage(img_ids=torch.tensor([0], device=device), text_ids=torch.tensor([0], device=device),
                     input_boxes=None, input_boxes_mask=None, input_boxes_label=None, input_points=None,
                     input_points_mask=None)
    geometric = meta._get_dummy_prompt()
    prompt, prompt_mask, backbone_out = meta._encode_prompt(backbone_out, find, geometric)
    return {"find": find, "geometric": geometric, "prompt": prompt, "prompt_mask": prompt_mask}


def _compare_heads(meta: Any, hf: Any, backbone_out: dict[str, Any], p: dict[str, Any]) -> list[dict[str, Any]]:
    import torch
    from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

    from sam3core.engine import geometry_prompt_token

    rows: list[dict[str, Any]] = []

    def add(name: str, ref: Any, ours: Any, note: str = "", kind: str = "module") -> None:
        rows.append({"module": name, "kind": kind, **diff(ref, ours), **({"note": note} if note else {})})

    prompt, prompt_mask = p["prompt"], p["prompt_mask"]  # (S, B, d) seq-first; True = padding
    n_text = backbone_out["language_features"].shape[0]
    fpn, pos = list(backbone_out["backbone_fpn"]), list(backbone_out["vision_pos_enc"])
    # geometry encoder on an empty box prompt: Meta always runs it and appends its CLS token to the prompt
    token = geometry_prompt_token(hf, [*fpn, fpn[-1]], [*pos, pos[-1]])  # (the helper drops the last level)
    add("geometry_encoder(no boxes) -> CLS token", prompt[n_text:].transpose(0, 1), token)
    prompt_bf, valid = prompt.transpose(0, 1), ~prompt_mask
    _, enc_ref, _ = meta._run_encoder(backbone_out, p["find"], prompt, prompt_mask)
    memory_ref = enc_ref["encoder_hidden_states"].transpose(0, 1)
    enc = hf.detr_encoder(vision_features=[fpn[-1]], text_features=prompt_bf, vision_pos_embeds=[pos[-1]],
                          text_mask=valid)
    add("detr_encoder", memory_ref, enc.last_hidden_state)
    # what Sam3Model.forward actually feeds it for a text-only prompt: the text tokens without the CLS token
    port = hf.detr_encoder(vision_features=[fpn[-1]], text_features=prompt_bf[:, :n_text],
                           vision_pos_embeds=[pos[-1]], text_mask=valid[:, :n_text])
    add("detr_encoder as Sam3Model.forward runs it (prompt = text only)", memory_ref, port.last_hidden_state,
        "Sam3Model.forward skips the geometry encoder without boxes: its prompt lacks Meta's CLS token", "port")
    # decoder, per layer (hooks), on Meta's encoder output and prompt
    memory = enc_ref["encoder_hidden_states"]
    out, hs, dec, ref_layers, our_layers = _run_decoders(meta, hf, enc_ref, p)
    for i, (r, o) in enumerate(zip(ref_layers, our_layers, strict=True)):
        tgt, presence = r  # seq-first queries, presence token
        add(f"detr_decoder.layer{i}", torch.cat([presence, tgt]).transpose(0, 1), o)
    add("detr_decoder.normed_queries(all layers)", hs, dec.intermediate_hidden_states)
    add("presence_head(logit)", out["presence_logit_dec"], dec.presence_logits[-1],
        "transformers clamps to +-10; Meta's clamp is a no-op (its result is discarded)")
    offsets = hf.detr_decoder.box_head(dec.intermediate_hidden_states)
    boxes = box_cxcywh_to_xyxy((inverse_sigmoid(dec.reference_boxes) + offsets).sigmoid())[-1]
    add("box_head(pred_boxes_xyxy)", out["pred_boxes_xyxy"], boxes)
    logits = hf.dot_product_scoring(decoder_hidden_states=dec.intermediate_hidden_states, text_features=prompt_bf,
                                    text_mask=valid).squeeze(-1)[-1]
    add("dot_product_scoring(logits)", out["pred_logits"].squeeze(-1), logits)
    seg = meta.segmentation_head(backbone_feats=fpn, obj_queries=hs, image_ids=p["find"].img_ids,
                                 encoder_hidden_states=memory, prompt=prompt, prompt_mask=prompt_mask)
    masks = hf.mask_decoder(decoder_queries=dec.intermediate_hidden_states[-1], backbone_features=list(fpn),
                            encoder_hidden_states=memory.transpose(0, 1), prompt_features=prompt_bf,
                            prompt_mask=valid)
    add("mask_decoder(mask logits)", seg["pred_masks"], masks.pred_masks)
    add("mask_decoder(semantic)", seg["semantic_seg"], masks.semantic_seg)
    return rows


def _run_decoders(meta: Any, hf: Any, enc_ref: dict[str, Any], p: dict[str, Any]) -> tuple[Any, ...]:
    """Both DETR decoders on Meta's encoder output and prompt, with every layer's output (forward hooks)."""
    prompt, prompt_mask = p["prompt"], p["prompt_mask"]
    memory = enc_ref["encoder_hidden_states"]
    ref_layers: list[Any] = []
    our_layers: list[Any] = []
    hooks = [lay.register_forward_hook(lambda m, a, o: ref_layers.append(o)) for lay in meta.transformer.decoder.layers]
    hooks += [lay.register_forward_hook(lambda m, a, o: our_layers.append(o)) for lay in hf.detr_decoder.layers]
    try:
        out: dict[str, Any] = {}
        out, hs = meta._run_decoder(memory=memory, pos_embed=enc_ref["pos_embed"], src_mask=enc_ref["padding_mask"],
                                    out=out, prompt=prompt, prompt_mask=prompt_mask, encoder_out=enc_ref)
        dec = hf.detr_decoder(vision_features=memory.transpose(0, 1), text_features=prompt.transpose(0, 1),
                              vision_pos_encoding=enc_ref["pos_embed"].transpose(0, 1), text_mask=~prompt_mask,
                              spatial_shapes=enc_ref["spatial_shapes"])
    finally:
        for hk in hooks:
            hk.remove()
    return out, hs, dec, ref_layers, our_layers


# ----------------------------------------------------------------------------------------------- end to end
def meta_outputs(meta: Any, pixel: Any) -> dict[str, Any]:
    """Meta's grounding outputs for its tokenizer's prompt: logits, presence, boxes, mask logits (query order)."""
    import torch

    with torch.inference_mode(), meta_cpu_patches():
        backbone_out = meta.backbone.forward_image(pixel)
        backbone_out.update(meta.backbone.forward_text(["prompt"], device=pixel.device))
        p = _meta_prompts(meta, backbone_out)
        out = meta.forward_grounding(backbone_out=backbone_out, find_input=p["find"], find_target=None,
                                     geometric_prompt=p["geometric"])
    return {"logits": out["pred_logits"][0, :, 0], "presence": out["presence_logit_dec"][0, 0],
            "boxes": out["pred_boxes_xyxy"][0], "masks": out["pred_masks"][0]}


def hf_outputs(hf: Any, pixel: Any, ids: Any) -> dict[str, dict[str, Any]]:
    """The port's outputs as transformers runs a text prompt (``"port"``) and with the empty-prompt geometry
    token appended, as ``Sam3Engine(meta_text_prompts=True)`` does (``"sam3core"``). One vision pass
    (the cached forward is bit-identical to the uncached one)."""
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from sam3core.engine import geometry_prompt_token

    res = {}
    with torch.inference_mode():
        mask = (ids != 0).long()  # Meta's padding mask (its tokenizer pads with id 0)
        vision = hf.get_vision_features(pixel_values=pixel)
        text = hf.get_text_features(input_ids=ids, attention_mask=mask)
        token = geometry_prompt_token(hf, vision.fpn_hidden_states, vision.fpn_position_encoding)
        with_token = BaseModelOutputWithPooling(pooler_output=torch.cat([text.pooler_output, token], dim=1))
        for name, t, m in (("port", text, mask),
                           ("sam3core", with_token, torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1))):
            out = hf(vision_embeds=vision, text_embeds=t, attention_mask=m)
            res[name] = {"logits": out.pred_logits[0], "presence": out.presence_logits[0, 0],
                         "boxes": out.pred_boxes[0], "masks": out.pred_masks[0]}
    return res


def agreement(ref: dict[str, Any], ours: dict[str, Any], k: int = 10, threshold: float = 0.5) -> dict[str, Any]:
    """Top-k score difference, rank agreement, mask IoU of Meta's top-k queries, queries kept at ``threshold``."""
    import torch

    def scores(o: dict[str, Any]) -> Any:
        return o["logits"].float().sigmoid() * o["presence"].float().sigmoid()

    s_ref, s_our = scores(ref), scores(ours)
    k = min(k, s_ref.numel())
    top_ref, top_our = s_ref.topk(k).indices, s_our.topk(k).indices
    m_ref, m_our = ref["masks"][top_ref].float() > 0, ours["masks"][top_ref].float() > 0
    inter, union = (m_ref & m_our).flatten(1).sum(1), (m_ref | m_our).flatten(1).sum(1)
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float))
    return {
        "topk_score_max_diff": float((s_ref[top_ref] - s_our[top_ref]).abs().max()),
        "topk_score_mean_diff": float((s_ref[top_ref] - s_our[top_ref]).abs().mean()),
        "topk_same_order": bool(torch.equal(top_ref, top_our)),
        "topk_overlap": len(set(top_ref.tolist()) & set(top_our.tolist())) / k,
        "topk_mask_iou_mean": float(iou.mean()), "topk_mask_iou_min": float(iou.min()),
        "logit_max_diff": float((ref["logits"].float() - ours["logits"].float()).abs().max()),
        "logit_mean_diff": float((ref["logits"].float() - ours["logits"].float()).abs().mean()),
        "presence_diff": float((ref["presence"].float() - ours["presence"].float()).abs()),
        "box_max_diff": float((ref["boxes"].float() - ours["boxes"].float()).abs().max()),
        "mask_logit_mean_diff": float((ref["masks"].float() - ours["masks"].float()).abs().mean()),
        "kept_ref": int((s_ref > threshold).sum()), "kept_ours": int((s_our > threshold).sum()),
    }


def compare_preprocessing(sizes: tuple[tuple[int, int], ...] = ((480, 640), (1500, 2000), (1008, 1008)),
                          seed: int = 0) -> list[dict[str, Any]]:
    """Meta's ``Sam3Processor`` transform vs transformers' ``Sam3ImageProcessor`` on PIL images (h, w).

    Meta: uint8 image tensor, ``v2.Resize((1008, 1008))`` (bilinear, antialias, on uint8), then
    ``/255`` and normalise with mean = std = 0.5. A smooth gradient plus noise image per size.
    """
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms import v2
    from transformers import Sam3ImageProcessor

    rng = np.random.default_rng(seed)
    processor = Sam3ImageProcessor()
    meta_t = v2.Compose([v2.ToDtype(torch.uint8, scale=True), v2.Resize(size=(1008, 1008)),
                         v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=[0.5] * 3, std=[0.5] * 3)])
    rows = []
    for h, w in sizes:
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
        arr = np.clip(smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr)
        ref = meta_t(v2.functional.to_image(image)).unsqueeze(0)  # the ops of sam3's Sam3Processor.set_image
        ours = processor(images=image, return_tensors="pt")["pixel_values"]
        rows.append({"image_hw": [h, w], "meta_dtype": str(ref.dtype), "ours_dtype": str(ours.dtype),
                     "shape": list(ours.shape), **diff(ref, ours)})
    return rows


def run(size: str = "small", device: str = "cpu", checkpoint: str | None = None, bpe: str | None = None,
        seed: int = 0) -> dict[str, Any]:
    """Build both, compare module by module and end to end; returns the report."""
    import torch

    import_reference()
    t0 = time.perf_counter()
    meta = build_meta_small(seed) if size == "small" else build_meta_full(device, checkpoint, bpe, seed=seed)
    meta = meta.to(device)
    hf, report = hf_from_meta(meta, device)
    built = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    res = hf.config.vision_config.backbone_config.image_size
    pixel = (torch.rand(1, 3, res, res, generator=gen) * 2 - 1).to(device)
    ids = meta.backbone.language_backbone.tokenizer(["prompt"], context_length=32).to(device)
    t1 = time.perf_counter()
    rows = compare_modules(meta, hf, pixel, device)
    ref = meta_outputs(meta, pixel)
    e2e = {name: agreement(ref, ours) for name, ours in hf_outputs(hf, pixel, ids).items()}
    return {"size": size, "device": device, "weights": checkpoint or f"random (seed {seed})",
            "token_ids": ids[0][ids[0] != 0].tolist(), "conversion": report.summary(), "build_s": round(built, 1),
            "compare_s": round(time.perf_counter() - t1, 1), "modules": rows, "end_to_end": e2e,
            "preprocessing": compare_preprocessing()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", help="Meta's sam3.pt (default: random weights)")
    parser.add_argument("--bpe", help="CLIP's bpe_simple_vocab_16e6.txt.gz (default: fixed ids for 'person')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    photos = parser.add_argument_group("end to end on real photos (benchmarks/parity_photos.py)")
    photos.add_argument("--photos", action="store_true", help="photos x phrases, end to end only (no module rows)")
    photos.add_argument("--images", nargs="+", help="skimage.data photos (default: astronaut coffee chelsea rocket)")
    photos.add_argument("--phrases", nargs="+", help="phrases (default: person, cat, 'coffee cup')")
    photos.add_argument("--k", type=int, default=10, help="top-k queries compared")
    args = parser.parse_args(argv)
    if args.photos:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import parity_photos

        report = parity_photos.run_photos(args.size, args.device, args.checkpoint, args.bpe, args.seed,
                                          args.images or parity_photos.PHOTOS, args.phrases or parity_photos.PHRASES,
                                          args.k)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            parity_photos.print_photos(report)
        return 0
    result = run(args.size, args.device, args.checkpoint, args.bpe, args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{args.size} on {args.device}: {result['conversion']}; built in {result['build_s']} s")
    for row in result["modules"]:
        tag = "" if row["kind"] == "module" else f"  [{row['kind']}]"
        print(f"  {row['module']:44s} max {row['max']:.3e}  mean {row['mean']:.3e}  |ref| max {row['scale']:.3g}{tag}")
    for name, e in result["end_to_end"].items():
        print(f"  end to end [{name}]: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                      for k, v in e.items()))
    for row in result["preprocessing"]:
        print(f"  preprocessing {row['image_hw']}: max {row['max']:.3e} mean {row['mean']:.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
