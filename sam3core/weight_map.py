"""The tensor-name mapping between Meta's SAM 3 state dict and transformers' ``Sam3Model``, both ways.

Meta's ``Sam3Image`` and ``Sam3Model`` hold the same tensors under other names; three need
reshaping: fused attention projections (``qkv`` / ``in_proj_*``) split into q, k, v; the ViT position
table drops its class-token row; the CLIP ``text_projection`` parameter is transposed into a ``Linear``
weight. Every rule is a pair of name templates, so the mapping runs both ways
(:func:`convert_state_dict` Meta -> transformers, :func:`to_meta_state_dict` back). Tensors only:
Meta's package is never imported. :mod:`sam3core.convert` builds checkpoints on top of this.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KNOWN_UNUSED", "RULES", "ConversionReport", "convert_state_dict", "to_meta_state_dict"]

_V, _T, _D = "backbone.vision_backbone.", "backbone.language_backbone.", "transformer.decoder."
_HV, _HT = "vision_encoder.", "text_encoder.text_model."
# Meta tensors transformers does not store: RoPE tables (recomputed), point-prompt projections (the port
# has no point prompts), the SAM 2 neck and tracker weights (transformers' Sam3TrackerModel, not Sam3Model).
KNOWN_UNUSED = (r"\.attn\.freqs_cis$", r"^geometry_encoder\.points_", r"^backbone\.vision_backbone\.sam2_convs\.",
                r"^tracker\.", r"^inst_interactive_predictor\.")
_SLOTS = {"i": r"\d+", "p": r"weight|bias", "qkv": r"q|k|v"}


def _attn(meta: str, hf: str, out: str = "o_proj") -> list[tuple[str, str, str | None]]:
    """Rules for one ``nn.MultiheadAttention`` (fused ``in_proj``) onto separate q/k/v/out projections."""
    return [(meta + "in_proj_{p}", hf + "{qkv}_proj.{p}", "split"), (meta + "out_proj.{p}", hf + out + ".{p}", None)]


def _mlp(meta: str, hf: str, n: int) -> list[tuple[str, str, str | None]]:
    """Rules for Meta's ``MLP.layers.k`` onto transformers' ``layer{k+1}``."""
    return [(f"{meta}layers.{k}.{{p}}", f"{hf}layer{k + 1}.{{p}}", None) for k in range(n)]


def _layer(meta: str, hf: str, names: Mapping[str, str]) -> list[tuple[str, str, str | None]]:
    """Rules for parameters (weight, bias) of sub-modules renamed one to one."""
    return [(meta + m + ".{p}", hf + h + ".{p}", None) for m, h in names.items()]


_ENC_LAYER = {"norm1": "layer_norm1", "norm2": "layer_norm2", "norm3": "layer_norm3", "linear1": "mlp.fc1",
              "linear2": "mlp.fc2"}
_DEC_LAYER = {"norm2": "self_attn_layer_norm", "catext_norm": "text_cross_attn_layer_norm",
              "norm1": "vision_cross_attn_layer_norm", "norm3": "mlp_layer_norm", "linear1": "mlp.fc1",
              "linear2": "mlp.fc2"}
_NECK = {"dconv_2x2_0": "scale_layers.0", "dconv_2x2_1": "scale_layers.2", "dconv_2x2": "scale_layers.0",
         "conv_1x1": "proj1", "conv_3x3": "proj2"}
_TEXT_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}

# (Meta template, transformers template, transform); transforms: split (fused q/k/v on dim 0),
# drop_cls (position table without its class-token row), transpose.
RULES: list[tuple[str, str, str | None]] = [
    (_V + "trunk.pos_embed", _HV + "backbone.embeddings.position_embeddings", "drop_cls"),
    (_V + "trunk.patch_embed.proj.weight", _HV + "backbone.embeddings.patch_embeddings.projection.weight", None),
    (_V + "trunk.ln_pre.{p}", _HV + "backbone.layer_norm.{p}", None),
    (_V + "trunk.blocks.{i}.attn.qkv.{p}", _HV + "backbone.layers.{i}.attention.{qkv}_proj.{p}", "split"),
    (_V + "trunk.blocks.{i}.attn.proj.{p}", _HV + "backbone.layers.{i}.attention.o_proj.{p}", None),
    *_layer(_V + "trunk.blocks.{i}.", _HV + "backbone.layers.{i}.",
            {"norm1": "layer_norm1", "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}),
    *_layer(_V + "convs.{i}.", _HV + "neck.fpn_layers.{i}.", _NECK),
    (_T + "encoder.token_embedding.weight", _HT + "embeddings.token_embedding.weight", None),
    (_T + "encoder.positional_embedding", _HT + "embeddings.position_embedding.weight", None),
    (_T + "encoder.text_projection", "text_encoder.text_projection.weight", "transpose"),
    (_T + "encoder.ln_final.{p}", _HT + "final_layer_norm.{p}", None),
    *_attn(_T + "encoder.transformer.resblocks.{i}.attn.", _HT + "encoder.layers.{i}.self_attn.", "out_proj"),
    *_layer(_T + "encoder.transformer.resblocks.{i}.", _HT + "encoder.layers.{i}.", _TEXT_LAYER),
    (_T + "resizer.{p}", "text_projection.{p}", None),
    *[(f"geometry_encoder.{n}.weight", f"geometry_encoder.{n}.weight", None) for n in ("label_embed", "cls_embed")],
    *_layer("geometry_encoder.", "geometry_encoder.", {
        "boxes_direct_project": "boxes_direct_project", "boxes_pool_project": "boxes_pool_project",
        "boxes_pos_enc_project": "boxes_pos_enc_project", "final_proj": "final_proj", "norm": "prompt_layer_norm",
        "img_pre_norm": "vision_layer_norm", "encode_norm": "output_layer_norm"}),
    *_attn("geometry_encoder.encode.{i}.self_attn.", "geometry_encoder.layers.{i}.self_attn."),
    *_attn("geometry_encoder.encode.{i}.cross_attn_image.", "geometry_encoder.layers.{i}.cross_attn."),
    *_layer("geometry_encoder.encode.{i}.", "geometry_encoder.layers.{i}.", _ENC_LAYER),
    *_attn("transformer.encoder.layers.{i}.self_attn.", "detr_encoder.layers.{i}.self_attn."),
    *_attn("transformer.encoder.layers.{i}.cross_attn_image.", "detr_encoder.layers.{i}.cross_attn."),
    *_layer("transformer.encoder.layers.{i}.", "detr_encoder.layers.{i}.", _ENC_LAYER),
    *_attn(_D + "layers.{i}.self_attn.", "detr_decoder.layers.{i}.self_attn."),
    *_attn(_D + "layers.{i}.ca_text.", "detr_decoder.layers.{i}.text_cross_attn."),
    *_attn(_D + "layers.{i}.cross_attn.", "detr_decoder.layers.{i}.vision_cross_attn."),
    *_layer(_D + "layers.{i}.", "detr_decoder.layers.{i}.", _DEC_LAYER),
    (_D + "norm.{p}", "detr_decoder.output_layer_norm.{p}", None),
    *[(f"{_D}{n}.weight", f"detr_decoder.{n}.weight", None)
      for n in ("query_embed", "reference_points", "presence_token")],
    (_D + "presence_token_out_norm.{p}", "detr_decoder.presence_layer_norm.{p}", None),
    *_mlp(_D + "bbox_embed.", "detr_decoder.box_head.", 3),
    *_mlp(_D + "presence_token_head.", "detr_decoder.presence_head.", 3),
    *_mlp(_D + "ref_point_head.", "detr_decoder.ref_point_head.", 2),
    *_mlp(_D + "boxRPB_embed_x.", "detr_decoder.box_rpb_embed_x.", 2),
    *_mlp(_D + "boxRPB_embed_y.", "detr_decoder.box_rpb_embed_y.", 2),
    *_layer("segmentation_head.pixel_decoder.", "mask_decoder.pixel_decoder.",
            {"conv_layers.{i}": "conv_layers.{i}", "norms.{i}": "norms.{i}"}),
    *[(f"segmentation_head.mask_predictor.mask_embed.layers.{k}.{{p}}", f"mask_decoder.mask_embedder.layers.{k}.{{p}}",
       None) for k in range(3)],
    *_attn("segmentation_head.cross_attend_prompt.", "mask_decoder.prompt_cross_attn."),
    *_layer("segmentation_head.", "mask_decoder.", {
        "cross_attn_norm": "prompt_cross_attn_norm", "semantic_seg_head": "semantic_projection",
        "instance_seg_head": "instance_projection"}),
    *_mlp("dot_prod_scoring.prompt_mlp.", "dot_product_scoring.text_mlp.", 2),
    *_layer("dot_prod_scoring.", "dot_product_scoring.", {
        "prompt_mlp.out_norm": "text_mlp_out_norm", "prompt_proj": "text_proj", "hs_proj": "query_proj"}),
]


def _regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    out = "".join(re.escape(s) if k % 2 == 0 else f"(?P<{s}>{_SLOTS[s]})" for k, s in enumerate(parts))
    return re.compile(out + "$")


_COMPILED = [(_regex(m), _regex(h), m, h, t) for m, h, t in RULES]


def _fill(template: str, slots: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: slots[m.group(1)], template)


def _meta_targets(key: str) -> tuple[list[str], str | None] | None:
    """The transformers key(s) a Meta key becomes, and the transform; ``None`` when no rule matches."""
    for meta_re, _, _, hf_t, transform in _COMPILED:
        if m := meta_re.match(key):
            slots = m.groupdict()
            if transform == "split":
                return [_fill(hf_t, {**slots, "qkv": c}) for c in "qkv"], transform
            return [_fill(hf_t, slots)], transform
    return None


@dataclass
class ConversionReport:
    """What a conversion did with every tensor (names are Meta's for ``unused``, transformers' otherwise)."""

    mapped: int = 0
    unused: list[str] = field(default_factory=list)
    unexpected_unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model tensor was filled with the right shape and nothing unknown was dropped."""
        return not (self.missing or self.shape_mismatches or self.unexpected_unused)

    def summary(self) -> str:
        return (f"mapped {self.mapped}, unused {len(self.unused)} ({len(self.unexpected_unused)} unexpected), "
                f"missing {len(self.missing)}, shape mismatches {len(self.shape_mismatches)}")


def convert_state_dict(meta_sd: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]] | None = None,
                       ) -> tuple[dict[str, Any], ConversionReport]:
    """Rename and reshape Meta's tensors into ``Sam3Model`` names.

    Args:
        meta_sd: Meta's ``Sam3Image`` state dict (see :func:`load_meta_state_dict`).
        expected: ``{name: shape}`` of the target model; when given, the report lists missing keys and shape
            mismatches against it (keys it does not have count as unused).

    Returns:
        ``(state_dict, report)``; the tensors are new contiguous CPU tensors (safe to save).
    """
    out: dict[str, Any] = {}
    report = ConversionReport()
    for key, tensor in meta_sd.items():
        target = _meta_targets(key)
        if target is None:
            report.unused.append(key)
            if not any(re.search(p, key) for p in KNOWN_UNUSED):
                report.unexpected_unused.append(key)
            continue
        names, transform = target
        t = tensor.detach().cpu()
        if transform == "split":
            parts = t.chunk(3, dim=0)
        elif transform == "drop_cls":
            parts = (t[:, 1:] if math.isqrt(t.shape[1] - 1) ** 2 == t.shape[1] - 1 else t,)
        elif transform == "transpose":
            parts = (t.t(),)
        else:
            parts = (t,)
        for name, part in zip(names, parts, strict=True):
            out[name] = part.contiguous().clone()
        report.mapped += 1
    if expected is not None:
        for name in [n for n in out if n not in expected]:
            report.unused.append(name)
            report.unexpected_unused.append(name)
            del out[name]
        report.missing = sorted(set(expected) - set(out))
        report.shape_mismatches = [(n, tuple(out[n].shape), tuple(s)) for n, s in expected.items()
                                   if n in out and tuple(out[n].shape) != tuple(s)]
    return out, report


def to_meta_state_dict(hf_sd: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse mapping: a ``Sam3Model`` state dict under Meta's names (class-token row zero-filled).

    Raises:
        KeyError: When a transformers key has no rule (the mapping would not be a bijection).
    """
    import torch

    out: dict[str, Any] = {}
    for key, tensor in hf_sd.items():
        for _, hf_re, meta_t, hf_t, transform in _COMPILED:
            if not (m := hf_re.match(key)):
                continue
            slots = m.groupdict()
            if "dconv_2x2_0" in meta_t and _fill(hf_t.replace("scale_layers.0", "scale_layers.2"), slots) not in hf_sd:
                continue  # the 2x level's only deconvolution is Meta's dconv_2x2, the 4x level's first is _0
            if transform == "split":
                if slots["qkv"] == "q":
                    out[_fill(meta_t, slots)] = torch.cat([hf_sd[_fill(hf_t, {**slots, "qkv": c})] for c in "qkv"])
            elif transform == "drop_cls":
                out[_fill(meta_t, slots)] = torch.cat([torch.zeros_like(tensor[:, :1]), tensor], dim=1)
            elif transform == "transpose":
                out[_fill(meta_t, slots)] = tensor.t().contiguous()
            else:
                out[_fill(meta_t, slots)] = tensor
            break
        else:
            raise KeyError(f"no conversion rule produces {key!r}")
    return out
