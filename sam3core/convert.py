"""Convert Meta's SAM 3 checkpoint (``sam3.pt``) into a transformers ``save_pretrained`` directory.

Meta's ``Sam3Image`` state dict and transformers' ``Sam3Model`` hold the same tensors under other names;
three need reshaping: fused attention projections (``qkv`` / ``in_proj_*``) split into q, k, v; the
ViT position table drops its class-token row; the CLIP ``text_projection`` parameter is transposed into
a ``Linear`` weight. Every rule is a pair of name templates, so the mapping runs both ways
(:func:`to_meta_state_dict` is the inverse, used by the tests).

Only tensors are read (``torch.load(weights_only=True)``); Meta's package is never imported.
The output holds ``config.json``, ``model.safetensors`` and processor files, and loads with
``Sam3Engine.from_pretrained(out_dir)`` or ``Sam3Model.from_pretrained(out_dir)``.

CLI: ``python -m sam3core.convert CHECKPOINT OUT_DIR [--bpe bpe_simple_vocab_16e6.txt.gz | --processor DIR]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ConversionReport", "convert_checkpoint", "convert_state_dict", "infer_config", "load_meta_state_dict",
           "to_meta_state_dict", "tokenizer_from_bpe"]

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


def load_meta_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Meta's detector state dict from a ``.pt`` path or a mapping, unnested (``"model"``) and unprefixed.

    Only ``detector.*`` keys are kept when the checkpoint has them (the combined image + video checkpoint).
    """
    import torch

    sd: Any = source if isinstance(source, Mapping) else torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(sd.get("model"), Mapping):
        sd = sd["model"]
    if any(k.startswith("detector.") for k in sd):
        sd = {k[len("detector."):]: v for k, v in sd.items() if k.startswith("detector.")}
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


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


def _count(sd: Iterable[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_config(meta_sd: Mapping[str, Any]):  # type: ignore[no-untyped-def]
    """A ``Sam3Config`` with the sizes read off Meta's tensors.

    Widths, depths, vocabulary, query count, global-attention blocks, window and image sizes come from the
    shapes. Head counts that no tensor records follow Meta's builder: the ViT's from its RoPE tables
    (else 64-wide heads), the CLIP text encoder's 64-wide heads, the DETR/geometry/mask heads from the
    box-RPB MLP (one output per head). The ViT LayerNorm eps is Meta's 1e-5 (transformers defaults to 1e-6).
    Nested configs are passed as objects (works on transformers 5.17 and newer).
    """
    import transformers as tf

    sd = meta_sd
    trunk = _V + "trunk."
    patch_w = sd[trunk + "patch_embed.proj.weight"]
    vit_dim, patch = int(patch_w.shape[0]), int(patch_w.shape[-1])
    depth = _count(sd, re.escape(trunk) + r"blocks\.(\d+)\.")
    rope = {i: sd.get(f"{trunk}blocks.{i}.attn.freqs_cis") for i in range(depth)}
    sizes = {i: int(t.shape[0]) for i, t in rope.items() if t is not None}
    window_tokens = min(sizes.values()) if sizes else 24 * 24
    global_idx = [i for i, n in sizes.items() if n > window_tokens] or [7, 15, 23, 31]
    grid = math.isqrt(max(sizes.values())) if sizes else 1008 // patch
    head_dim = 2 * int(next(t for t in rope.values() if t is not None).shape[-1]) if sizes else 64
    pos_rows = int(sd[trunk + "pos_embed"].shape[1])
    pos_grid = math.isqrt(pos_rows - 1) if math.isqrt(pos_rows - 1) ** 2 == pos_rows - 1 else math.isqrt(pos_rows)
    vit = tf.Sam3ViTConfig(
        hidden_size=vit_dim, intermediate_size=int(sd[trunk + "blocks.0.mlp.fc1.weight"].shape[0]),
        num_hidden_layers=depth, num_attention_heads=vit_dim // head_dim, image_size=grid * patch, patch_size=patch,
        window_size=math.isqrt(window_tokens), global_attn_indexes=sorted(global_idx), layer_norm_eps=1e-5,
        pretrain_image_size=pos_grid * patch)
    fpn = int(sd[_V + "convs.0.conv_1x1.weight"].shape[0])
    vision = tf.Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=fpn,
                              backbone_feature_sizes=[[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]])
    te = _T + "encoder."
    vocab, width = (int(n) for n in sd[te + "token_embedding.weight"].shape)
    text = tf.CLIPTextConfig(  # CLIP's specials are the last two ids (its tokenizer pads with the last)
        vocab_size=vocab, hidden_size=width, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
        intermediate_size=int(sd[te + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        projection_dim=int(sd[te + "text_projection"].shape[1]),
        num_hidden_layers=_count(sd, re.escape(te) + r"transformer\.resblocks\.(\d+)\."),
        num_attention_heads=max(1, width // 64), max_position_embeddings=int(sd[te + "positional_embedding"].shape[0]),
        hidden_act="gelu")
    d = int(sd[_D + "norm.weight"].shape[0])
    heads = int(sd[_D + "boxRPB_embed_x.layers.1.weight"].shape[0])
    enc_ffn = int(sd["transformer.encoder.layers.0.linear1.weight"].shape[0])
    common = {"hidden_size": d, "num_attention_heads": heads}
    return tf.Sam3Config(
        vision_config=vision, text_config=text,
        geometry_encoder_config=tf.Sam3GeometryEncoderConfig(
            num_layers=_count(sd, r"geometry_encoder\.encode\.(\d+)\."),
            intermediate_size=int(sd["geometry_encoder.encode.0.linear1.weight"].shape[0]), **common),
        detr_encoder_config=tf.Sam3DETREncoderConfig(
            num_layers=_count(sd, r"transformer\.encoder\.layers\.(\d+)\."), intermediate_size=enc_ffn, **common),
        detr_decoder_config=tf.Sam3DETRDecoderConfig(
            num_layers=_count(sd, re.escape(_D) + r"layers\.(\d+)\."),
            num_queries=int(sd[_D + "query_embed.weight"].shape[0]),
            # transformers sizes the scoring text MLP with the decoder's intermediate size
            intermediate_size=int(sd["dot_prod_scoring.prompt_mlp.layers.0.weight"].shape[0]), **common),
        mask_decoder_config=tf.Sam3MaskDecoderConfig(
            num_upsampling_stages=_count(sd, r"segmentation_head\.pixel_decoder\.conv_layers\.(\d+)\."), **common),
    )


def tokenizer_from_bpe(bpe_path: str | Path, *, max_length: int = 32):  # type: ignore[no-untyped-def]
    """A ``CLIPTokenizer`` with the vocabulary of CLIP's ``bpe_simple_vocab_16e6.txt.gz`` (the file Meta's
    SAM 3 and OpenCLIP ship), giving Meta's token ids. It pads with ``<|endoftext|>`` where Meta pads with
    id 0 (``"!"`` as a pad token would be split off as a special token); padded positions are masked
    everywhere in SAM 3, so the outputs do not depend on the pad id."""
    from transformers import CLIPTokenizer

    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:  # header line, then merges by rank (CLIP keeps 48894)
        lines = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines if line.strip()]
    # CLIP's byte-to-unicode characters in vocabulary order: printable bytes first, then the rest (256 + k)
    first = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = [chr(b) for b in first] + [chr(256 + k) for k in range(256 - len(first))]
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), *("".join(m) for m in merges),
              "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=max_length)


def _processor(processor: Any, bpe_path: str | Path | None):  # type: ignore[no-untyped-def]
    from transformers import Sam3ImageProcessor, Sam3Processor

    if processor is not None and not isinstance(processor, str | Path):
        return processor
    if processor is not None:
        return Sam3Processor.from_pretrained(str(processor))
    if bpe_path is not None:
        return Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=tokenizer_from_bpe(bpe_path))
    raise ValueError("a processor is needed next to the weights: pass bpe_path= (CLIP's bpe_simple_vocab_16e6.txt.gz, "
                     "e.g. from the open_clip_torch wheel) or processor= (a Sam3Processor or a directory with one)")


def convert_checkpoint(source: str | Path | Mapping[str, Any], out_dir: str | Path, *, config: Any = None,
                       processor: Any = None, bpe_path: str | Path | None = None,
                       strict: bool = True) -> ConversionReport:
    """Convert Meta's checkpoint into ``out_dir`` (config.json, model.safetensors, processor files).

    Args:
        source: A ``.pt`` checkpoint path or an in-memory Meta state dict.
        out_dir: Output directory (created).
        config: A ``Sam3Config``; default :func:`infer_config` on the tensors.
        processor: A ``Sam3Processor`` or a directory / hub id holding one.
        bpe_path: CLIP's BPE merges file, to build the tokenizer when ``processor`` is not given.
        strict: Raise when a model tensor is missing, mis-shaped, or an unknown Meta tensor is dropped.

    Returns:
        The :class:`ConversionReport`.

    Raises:
        ValueError: When ``strict`` and the report is not clean, or no processor can be built.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Sam3Model

    meta_sd = load_meta_state_dict(source)
    config = config if config is not None else infer_config(meta_sd)
    proc = _processor(processor, bpe_path)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Sam3Model(config).state_dict().items()}
    hf_sd, report = convert_state_dict(meta_sd, expected)
    logger.info("SAM 3 conversion: %s", report.summary())
    if strict and not report.ok:
        raise ValueError(f"conversion is not clean ({report.summary()}): missing {report.missing[:5]}, "
                         f"mismatched {report.shape_mismatches[:5]}, unknown {report.unexpected_unused[:5]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config.architectures = ["Sam3Model"]
    config.save_pretrained(out)
    save_file(hf_sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    proc.save_pretrained(out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam3core.convert", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="Meta's sam3.pt (or any torch.save'd Sam3Image state dict)")
    parser.add_argument("out_dir", help="directory to write (config.json, model.safetensors, processor)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--bpe", help="CLIP's bpe_simple_vocab_16e6.txt.gz, to build the tokenizer")
    src.add_argument("--processor", help="directory or hub id of an existing Sam3Processor")
    parser.add_argument("--no-strict", action="store_true", help="write even if tensors are missing or unknown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = convert_checkpoint(args.checkpoint, args.out_dir, processor=args.processor, bpe_path=args.bpe,
                                    strict=not args.no_strict)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"summary": report.summary(), "unused": report.unused, "missing": report.missing,
                      "shape_mismatches": report.shape_mismatches}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
