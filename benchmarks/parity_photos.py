"""Engine parity on real photos: Meta's SAM 3 processor vs sam3core's engine, photos x phrases, one build.

Meta's model is built once (random weights, or ``--checkpoint``) and converted once with
``sam3core.convert``. Each side then preprocesses and encodes every photo once, its own way (Meta's
``Sam3Processor.set_image``: a uint8 ``Resize(1008, 1008)`` and mean/std 0.5; sam3core: transformers'
``Sam3ImageProcessor`` inside ``Sam3Engine``), and answers every phrase from those features: Meta
through ``Sam3Processor.set_text_prompt``, sam3core through the engine's model runner (with the
geometry encoder's empty-prompt token, the engine's default). Phrases are tokenised by each side's
own tokenizer: Meta's ``SimpleTokenizer`` and ``sam3core.convert.tokenizer_from_bpe`` on the same CLIP
BPE file (``--bpe``; the ids are compared too).

Per (photo, phrase), over Meta's top-k queries by score: the score difference, rank agreement,
predicted-box difference, mask IoU of each query at the original size (Meta's processor masks against
the engine's, in both binarisation orders: ``logits`` = Meta's, ``probabilities`` = the default), and
the queries each side keeps at score 0.5 (the engine drops empty masks; Meta's processor keeps them).

Usage::

    python benchmarks/parity.py --photos --size full --bpe bpe_simple_vocab_16e6.txt.gz [--json]
    python benchmarks/parity.py --photos --size small --json     # seconds (a letter-level tokenizer)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import parity as base  # benchmarks/ is not a package: found through sys.path

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
PHRASES = ("person", "cat", "coffee cup")
ORDERS = ("logits", "probabilities")


def load_photo(name: str):  # type: ignore[no-untyped-def]
    """A scikit-image sample photo (``skimage.data.<name>``) as an RGB PIL image, at its own size."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


def letter_tokenizer(vocab_size: int = 64):  # type: ignore[no-untyped-def]
    """A CLIP tokenizer over single letters (no merges) for the small build's 64-token vocabulary.

    Id 0 is ``"!"`` as in CLIP's vocabulary: Meta's text encoder treats id 0 as padding.
    """
    from transformers import CLIPTokenizer

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["!", *letters, *(c + "</w>" for c in letters)]
    tokens += [f"<unused{i}>" for i in range(vocab_size - 2 - len(tokens))] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=32)


class MetaIds:
    """Meta's tokenizer interface over a transformers tokenizer: ids padded with 0 to the context length."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: list[str], context_length: int = 32):  # type: ignore[no-untyped-def]
        import torch

        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = self.tokenizer(text)["input_ids"][:context_length]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def build_pair(size: str, device: str, checkpoint: str | None, bpe: str | None, seed: int) -> tuple[Any, Any, str]:
    """Meta's model and a ``Sam3Engine`` over the same (converted) weights, with matching tokenizers."""
    import torch
    from transformers import Sam3ImageProcessor, Sam3Processor

    from sam3core.convert import tokenizer_from_bpe
    from sam3core.engine import Sam3Engine

    base.import_reference()
    if size == "small":
        meta = base.build_meta_small(seed)
        tokenizer = letter_tokenizer()
        meta.backbone.language_backbone.tokenizer = MetaIds(tokenizer)
    else:
        if bpe is None:
            raise SystemExit("--photos --size full needs --bpe (CLIP's bpe_simple_vocab_16e6.txt.gz): real phrases")
        meta = base.build_meta_full(device, checkpoint, bpe, seed=seed)
        tokenizer = tokenizer_from_bpe(bpe)
    meta = meta.to(device)
    hf, report = base.hf_from_meta(meta, device)
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=tokenizer)
    engine = Sam3Engine(hf, processor, device=device, dtype=torch.float32, dedup_iou=None)
    return meta, engine, report.summary()


def meta_photo(meta: Any, image: Any, phrases: Sequence[str], device: str, k: int) -> dict[str, Any]:
    """Meta's processor on one photo: one ``set_image``, then one ``set_text_prompt`` per phrase."""
    import torch
    from sam3.model.sam3_image_processor import Sam3Processor as MetaProcessor
    from torchvision.transforms import v2

    proc = MetaProcessor(meta, device=device, confidence_threshold=0.0)
    raw: dict[str, Any] = {}
    real = meta.forward_grounding

    def capture(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raw["out"] = real(*args, **kwargs)
        return raw["out"]

    res: dict[str, Any] = {"phrases": {}}
    with torch.inference_mode(), base.meta_cpu_patches(), mock.patch.object(meta, "forward_grounding", capture):
        res["pixel"] = proc.transform(v2.functional.to_image(image).to(device)).unsqueeze(0)
        t0 = time.perf_counter()
        state = proc.set_image(image)
        res["encode_s"] = time.perf_counter() - t0
        res["fpn"] = [t.clone() for t in state["backbone_out"]["backbone_fpn"]]
        for phrase in phrases:
            t0 = time.perf_counter()
            state = proc.set_text_prompt(phrase, state)
            out = raw.pop("out")
            scores = state["scores"]
            assert scores.numel() == out["pred_logits"].shape[1], "threshold 0 keeps every query, in query order"
            top = scores.topk(min(k, scores.numel())).indices
            ids = meta.backbone.language_backbone.tokenizer([phrase], context_length=32)[0]
            res["phrases"][phrase] = {
                "seconds": time.perf_counter() - t0, "ids": ids[ids != 0].tolist(),
                "raw": {"logits": out["pred_logits"][0, :, 0], "presence": out["presence_logit_dec"][0, 0],
                        "boxes": out["pred_boxes_xyxy"][0], "masks": out["pred_masks"][0]},
                "top": top, "full_masks": state["masks"][top, 0].clone(), "kept": int((scores > 0.5).sum())}
            for key in ("masks", "masks_logits", "boxes", "scores"):
                state.pop(key, None)  # the 200 full-size masks of this phrase
    return res


def our_photo(engine: Any, image: Any, phrases: Sequence[str]) -> dict[str, Any]:
    """sam3core on one photo: the engine's runner encodes it once (its cache), one forward per phrase."""
    import torch

    from sam3core.forward import Prompt

    handle = engine.prepare(image)
    runner = engine.runner
    res: dict[str, Any] = {"phrases": {}, "handle": handle}
    with torch.inference_mode():
        res["pixel"] = engine.processor.image_processor(images=handle.image, return_tensors="pt").pixel_values
        t0 = time.perf_counter()
        res["fpn"] = list(runner.vision_features(handle)[0])
        res["encode_s"] = time.perf_counter() - t0
        for phrase in phrases:
            t0 = time.perf_counter()
            out = runner.forward([(handle, [Prompt(phrase, phrase)])])
            tokens = runner.tokenize([phrase])
            res["phrases"][phrase] = {
                "seconds": time.perf_counter() - t0, "out": out,
                "ids": tokens["input_ids"][0][tokens["attention_mask"][0] == 1].tolist(),
                "raw": {"logits": out.pred_logits[0], "presence": out.presence_logits[0, 0],
                        "boxes": out.pred_boxes[0], "masks": out.pred_masks[0]}}
    return res


def _iou(a: Any, b: Any) -> list[float]:
    inter, union = (a & b).flatten(1).sum(1), (a | b).flatten(1).sum(1)
    return [1.0 if int(u) == 0 else round(float(i) / float(u), 6) for i, u in zip(inter, union, strict=True)]


def compare_phrase(ref: dict[str, Any], ours: dict[str, Any], size: tuple[int, int], k: int) -> dict[str, Any]:
    """One (photo, phrase) row: :func:`parity.agreement` plus full-size mask IoU and kept counts."""
    import torch

    from sam3core.postprocess import prompt_detections, upsample_masks

    row = {"ids_equal": ref["ids"] == ours["ids"], "ids": ref["ids"], **base.agreement(ref["raw"], ours["raw"], k=k)}
    top = ref["top"]
    for order in ORDERS:
        masks = torch.from_numpy(upsample_masks(ours["raw"]["masks"][top], size, 0.5, order=order))  # type: ignore[arg-type]
        iou = _iou(ref["full_masks"], masks)
        row[f"full_iou_{order}"] = iou
        row[f"full_iou_{order}_min"] = min(iou)
        row[f"pixels_differing_{order}"] = int((ref["full_masks"] != masks).sum())
    kept = prompt_detections(ours["out"], 0, size, "", score_threshold=0.5, mask_threshold=0.5, max_masks=None,
                             dedup_iou=None, order="logits")
    row.update(kept_meta=ref["kept"], kept_engine=len(kept), meta_s=round(ref["seconds"], 2),
               ours_s=round(ours["seconds"], 2))
    return row


def run_photos(size: str = "small", device: str = "cpu", checkpoint: str | None = None, bpe: str | None = None,
               seed: int = 0, photos: Sequence[str] = PHOTOS, phrases: Sequence[str] = PHRASES,
               k: int = 10) -> dict[str, Any]:
    """Build once, then compare every (photo, phrase); returns the report (see the module docstring)."""
    import torch
    import transformers

    t0 = time.perf_counter()
    meta, engine, conversion = build_pair(size, device, checkpoint, bpe, seed)
    report: dict[str, Any] = {
        "mode": "photos", "size": size, "device": device, "dtype": "float32", "k": k,
        "weights": checkpoint or f"random (seed {seed})", "conversion": conversion,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "sam3": "0.1.4"},
        "build_s": round(time.perf_counter() - t0, 1), "photos": []}
    try:
        for name in photos:
            image = load_photo(name)
            ref = meta_photo(meta, image, phrases, device, k)
            ours = our_photo(engine, image, phrases)
            fpn = [base.diff(a, b)["max"] for a, b in zip(ref["fpn"], ours["fpn"], strict=False)]
            entry = {"photo": name, "size_hw": [image.height, image.width], "pixel_max_diff":
                     base.diff(ref["pixel"], ours["pixel"])["max"], "fpn_max_diff": fpn,
                     "encode_s": {"meta": round(ref["encode_s"], 1), "ours": round(ours["encode_s"], 1)},
                     "phrases": {p: compare_phrase(ref["phrases"][p], ours["phrases"][p],
                                                   (image.height, image.width), k) for p in phrases}}
            report["photos"].append(entry)
        report["vision_encoder_runs_ours"] = engine.stats.vision_encoder_runs
    finally:
        engine.close()
    report["summary"] = summarise(report)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    return report


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Worst cases over every (photo, phrase), and whether the parity targets hold."""
    rows = [r for p in report["photos"] for r in p["phrases"].values()]
    out = {"pairs": len(rows), "ids_equal": all(r["ids_equal"] for r in rows),
           "topk_score_max_diff": max(r["topk_score_max_diff"] for r in rows),
           "topk_same_order_all": all(r["topk_same_order"] for r in rows),
           "box_max_diff": max(r["box_max_diff"] for r in rows),
           **{f"full_iou_{o}_min": min(r[f"full_iou_{o}_min"] for r in rows) for o in ORDERS},
           "kept_meta_total": sum(r["kept_meta"] for r in rows),
           "kept_engine_total": sum(r["kept_engine"] for r in rows),
           "pixel_max_diff": max(p["pixel_max_diff"] for p in report["photos"])}
    out["targets_met"] = (out["topk_score_max_diff"] <= 1e-3 and out["topk_same_order_all"]
                          and out["full_iou_logits_min"] >= 0.99)
    return out


def print_photos(report: dict[str, Any]) -> None:
    """The report as text, one line per (photo, phrase)."""
    print(f"photos, {report['size']} on {report['device']} ({report['dtype']}): {report['conversion']}; "
          f"built in {report['build_s']} s; {report['versions']}")
    for p in report["photos"]:
        print(f"  {p['photo']} {p['size_hw'][1]}x{p['size_hw'][0]}: pixels max {p['pixel_max_diff']:.2e}, "
              f"fpn max {max(p['fpn_max_diff']):.2e}, encode meta {p['encode_s']['meta']} s / ours "
              f"{p['encode_s']['ours']} s")
        for phrase, r in p["phrases"].items():
            print(f"    {phrase!r:14} ids {'=' if r['ids_equal'] else '!='} | top{report['k']} score max "
                  f"{r['topk_score_max_diff']:.2e} same order {r['topk_same_order']} | box max "
                  f"{r['box_max_diff']:.2e} | IoU min logits {r['full_iou_logits_min']:.4f} probabilities "
                  f"{r['full_iou_probabilities_min']:.4f} (px {r['pixels_differing_logits']} / "
                  f"{r['pixels_differing_probabilities']}) | kept@0.5 meta {r['kept_meta']} engine {r['kept_engine']}")
    print("  summary: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in report["summary"].items()) + f"; total {report['total_s']} s")
