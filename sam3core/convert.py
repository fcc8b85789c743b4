"""Convert Meta's SAM 3 checkpoint (``sam3.pt``) into a transformers ``save_pretrained`` directory.

Meta's ``Sam3Image`` state dict and transformers' ``Sam3Model`` hold the same tensors under other names
(the rules, both ways, are in :mod:`sam3core.weight_map`, re-exported here); the sizes of the model
are read off the tensors (:func:`infer_config`) and the tokenizer is built from CLIP's BPE file
(:func:`tokenizer_from_bpe`).

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
from pathlib import Path
from typing import Any

from sam3core.weight_map import (
    _D,
    _T,
    _V,
    KNOWN_UNUSED,
    RULES,
    ConversionReport,
    convert_state_dict,
    to_meta_state_dict,
)

logger = logging.getLogger(__name__)

__all__ = ["KNOWN_UNUSED", "RULES", "ConversionReport", "convert_checkpoint", "convert_state_dict", "infer_config",
           "load_meta_state_dict", "to_meta_state_dict", "tokenizer_from_bpe"]

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


def _count(sd: Iterable[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _vision_config(sd: Mapping[str, Any]):  # type: ignore[no-untyped-def]
    """The ``Sam3VisionConfig`` part of :func:`infer_config` (ViT and FPN neck)."""
    import transformers as tf

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
    return vision


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
    vision = _vision_config(sd)
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
