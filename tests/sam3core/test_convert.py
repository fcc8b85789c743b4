"""sam3core.convert without Meta's package: the name mapping round-trips, configs are read off the tensors,
checkpoints in Meta's layouts convert into directories the engine loads. (Against Meta's real module
names and numerics: tests/sam3core_parity.)"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam3core.convert import (
    KNOWN_UNUSED,
    convert_checkpoint,
    convert_state_dict,
    infer_config,
    main,
    to_meta_state_dict,
    tokenizer_from_bpe,
)
from sam3core.testing import build_processor, build_random_sam3

V = "backbone.vision_backbone."


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    model, _ = build_random_sam3("tiny", seed=3)
    return model


@pytest.fixture(scope="module")
def meta_sd(tiny) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    """The tiny model under Meta's names, with the tensors Meta stores and transformers does not."""
    sd = to_meta_state_dict(tiny.state_dict())
    vit = tiny.config.vision_config.backbone_config
    half_head = vit.hidden_size // vit.num_attention_heads // 2
    grid = vit.image_size // vit.patch_size
    for i in range(vit.num_hidden_layers):  # RoPE tables: window^2 rows, or grid^2 for global blocks
        rows = grid**2 if i in vit.global_attn_indexes else vit.window_size**2
        sd[f"{V}trunk.blocks.{i}.attn.freqs_cis"] = torch.zeros(rows, half_head, dtype=torch.complex64)
    d = tiny.config.geometry_encoder_config.hidden_size
    sd["geometry_encoder.points_direct_project.weight"] = torch.zeros(d, 2)
    return sd


def test_meta_names_and_layouts(meta_sd: dict[str, torch.Tensor], tiny) -> None:  # type: ignore[no-untyped-def]
    hf = tiny.state_dict()
    assert meta_sd[f"{V}trunk.pos_embed"].shape == (1, 577, 32)  # + class-token row
    assert meta_sd[f"{V}trunk.blocks.0.attn.qkv.weight"].shape == (96, 32)
    assert f"{V}convs.0.dconv_2x2_1.weight" in meta_sd and f"{V}convs.1.dconv_2x2.weight" in meta_sd
    assert f"{V}convs.1.dconv_2x2_0.weight" not in meta_sd
    assert torch.equal(meta_sd["backbone.language_backbone.encoder.text_projection"],
                       hf["text_encoder.text_projection.weight"].t())
    assert torch.equal(meta_sd["transformer.decoder.layers.0.ca_text.in_proj_weight"][32:64],
                       hf["detr_decoder.layers.0.text_cross_attn.k_proj.weight"])
    for name in ("transformer.decoder.bbox_embed.layers.2.weight", "transformer.decoder.norm.weight",
                 "segmentation_head.mask_predictor.mask_embed.layers.2.weight",
                 "segmentation_head.cross_attend_prompt.out_proj.weight", "geometry_encoder.encode.0.norm3.bias",
                 "dot_prod_scoring.prompt_mlp.out_norm.weight", "backbone.language_backbone.resizer.weight",
                 "transformer.decoder.presence_token_head.layers.0.weight"):
        assert name in meta_sd, name


def test_round_trip_is_identity(meta_sd: dict[str, torch.Tensor], tiny) -> None:  # type: ignore[no-untyped-def]
    expected = {k: tuple(v.shape) for k, v in tiny.state_dict().items()}
    out, report = convert_state_dict(meta_sd, expected)
    assert report.ok and not report.missing and not report.shape_mismatches
    assert sorted(report.unused) == sorted(k for k in meta_sd if "freqs_cis" in k or "points_" in k)
    assert report.mapped == len(meta_sd) - len(report.unused)
    assert out.keys() == expected.keys()
    for k, v in tiny.state_dict().items():
        assert torch.equal(out[k], v), k


def test_unknown_and_missing_tensors_are_reported(meta_sd: dict[str, torch.Tensor], tiny) -> None:  # type: ignore[no-untyped-def]
    sd = dict(meta_sd)
    sd["transformer.decoder.something_new.weight"] = torch.zeros(2)
    del sd["transformer.decoder.query_embed.weight"]
    sd["transformer.decoder.norm.weight"] = torch.zeros(7)
    expected = {k: tuple(v.shape) for k, v in tiny.state_dict().items()}
    _, report = convert_state_dict(sd, expected)
    assert not report.ok
    assert report.unexpected_unused == ["transformer.decoder.something_new.weight"]
    assert report.missing == ["detr_decoder.query_embed.weight"]
    assert report.shape_mismatches == [("detr_decoder.output_layer_norm.weight", (7,), (32,))]
    assert "missing 1" in report.summary() and KNOWN_UNUSED


def test_config_read_off_the_tensors(meta_sd: dict[str, torch.Tensor], tiny) -> None:  # type: ignore[no-untyped-def]
    cfg, ref = infer_config(meta_sd), tiny.config
    vit, ref_vit = cfg.vision_config.backbone_config, ref.vision_config.backbone_config
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                 "patch_size", "window_size", "global_attn_indexes", "pretrain_image_size"):
        assert getattr(vit, name) == getattr(ref_vit, name), name
    assert vit.layer_norm_eps == 1e-5  # Meta's ViT value (transformers' default is 1e-6)
    assert cfg.vision_config.fpn_hidden_size == ref.vision_config.fpn_hidden_size
    for sub in ("geometry_encoder_config", "detr_encoder_config", "detr_decoder_config"):
        for name in ("hidden_size", "num_layers", "num_attention_heads", "intermediate_size"):
            assert getattr(getattr(cfg, sub), name) == getattr(getattr(ref, sub), name), (sub, name)
    assert cfg.detr_decoder_config.num_queries == ref.detr_decoder_config.num_queries
    text = cfg.text_config
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers, text.intermediate_size,
            text.max_position_embeddings, text.projection_dim) == (
        514, 32, 1, 64, 32, 32)


def _save_meta_checkpoint(meta_sd: dict[str, torch.Tensor], path: Path) -> Path:
    """Meta's sam3.pt layout: ``{"model": {...}}`` with ``detector.`` and ``tracker.`` keys."""
    nested = {f"detector.{k}": v for k, v in meta_sd.items()}
    nested["tracker.maskmem_backbone.weight"] = torch.zeros(3)
    torch.save({"model": nested}, path)
    return path


def test_checkpoint_converts_into_a_loadable_directory(meta_sd, tiny, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import Sam3Model

    from sam3core.engine import Sam3Engine

    ckpt = _save_meta_checkpoint(meta_sd, tmp_path / "sam3.pt")
    out = tmp_path / "converted"
    report = convert_checkpoint(ckpt, out, config=tiny.config, processor=build_processor())
    assert report.ok and len(report.unused) == 3  # 2 RoPE tables + 1 point projection (tracker keys dropped)
    assert {"config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    loaded = Sam3Model.from_pretrained(out)
    for k, v in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    with Sam3Engine.from_pretrained(out, device="cpu") as engine:
        det = engine.segment(image, "cat", score_threshold=0.0, max_masks=3)
    assert 0 < len(det) <= 3 and det.mask.shape[1:] == (40, 50)


def test_cli(meta_sd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from transformers import Sam3Model

    ckpt = _save_meta_checkpoint(meta_sd, tmp_path / "sam3.pt")
    build_processor().save_pretrained(tmp_path / "proc")
    assert main([str(ckpt), str(tmp_path / "out"), "--processor", str(tmp_path / "proc")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"].startswith("mapped ") and printed["missing"] == []
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["vision_config"]["backbone_config"]["global_attn_indexes"] == [1]
    Sam3Model.from_pretrained(tmp_path / "out")  # the config inferred from the tensors loads
    assert main([str(ckpt), str(tmp_path / "out2")]) == 1  # no tokenizer source: a clear error
    assert "bpe_path" in capsys.readouterr().err


def test_tokenizer_from_bpe_uses_clip_ids(tmp_path: Path) -> None:
    bpe = tmp_path / "bpe.txt.gz"
    with gzip.open(bpe, "wt", encoding="utf-8") as f:  # header line, then merges by rank
        f.write("#version: 0.2\nh e\nl o</w>\nl lo</w>\nhe llo</w>\n")
    tok = tokenizer_from_bpe(bpe)
    assert len(tok) == 512 + 4 + 2
    assert tok.convert_tokens_to_ids(["!", "<|startoftext|>", "<|endoftext|>"]) == [0, 516, 517]
    enc = tok("Hello!", padding="max_length", max_length=32)
    assert enc["input_ids"][:4] == [516, 515, 256, 517]  # lower-cased; "!" alone is "!</w>" (not special)
    assert enc["input_ids"][4:] == [517] * 28 and enc["attention_mask"] == [1] * 4 + [0] * 28
