"""Randomly initialised SAM 3 models for tests, the self-test and benchmarks.

No weights can be downloaded in CI, so the real loading path is exercised with models built
from configs here and saved with ``save_pretrained``. Random weights give random masks: use
these to test plumbing, shapes, caching, determinism and error handling, never accuracy.

The nested configs are passed as config *objects* (not dicts): that form is accepted by every
transformers release this package supports (5.17 resolves nested dicts differently from 5.20+).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from sam3core.fake import FakeEngine

__all__ = [
    "FakeEngine",
    "build_processor",
    "build_random_sam3",
    "build_random_sam3_tracker",
    "build_tokenizer",
    "sam3_config",
    "sam3_tracker_config",
    "save_random_sam3",
    "save_random_sam3_tracker",
    "save_tiny_sam3",
]

logger = logging.getLogger(__name__)

Size = Literal["tiny", "full"]

# CLIP-style byte-level alphabet: every byte maps to one printable unicode character, so any
# text tokenizes (character by character, since the in-memory tokenizer has no merges).
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")


def _byte_alphabet() -> list[str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer():  # type: ignore[no-untyped-def]
    """A CLIP tokenizer built in memory: special tokens + each byte character (+ end-of-word form).

    Returns:
        A ``transformers.CLIPTokenizer`` with ``len(tokenizer) == 514``; bos id 0, eos/pad id 1.
    """
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(_SPECIALS)}
    for ch in _byte_alphabet():
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], bos_token=_SPECIALS[0], eos_token=_SPECIALS[1],
                         pad_token=_SPECIALS[1], unk_token=_SPECIALS[1], model_max_length=32)


def sam3_config(size: Size = "tiny", *, num_queries: int | None = None):  # type: ignore[no-untyped-def]
    """A ``Sam3Config`` of the given size.

    Args:
        size: ``"tiny"`` (hidden sizes 32, 1-2 layers, 20 queries; a forward takes ~0.2 s on CPU)
            or ``"full"`` (the released architecture, 840M parameters, 200 queries).
        num_queries: Override the number of DETR queries.

    Returns:
        A ``transformers.Sam3Config`` with every nested config given as an object.
    """
    from transformers import (
        CLIPTextConfig,
        Sam3Config,
        Sam3DETRDecoderConfig,
        Sam3DETREncoderConfig,
        Sam3GeometryEncoderConfig,
        Sam3MaskDecoderConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    if size == "full":
        text = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, projection_dim=512,
                              num_hidden_layers=24, num_attention_heads=16, max_position_embeddings=32,
                              hidden_act="gelu", bos_token_id=0, eos_token_id=1, pad_token_id=1)
        decoder = Sam3DETRDecoderConfig(num_queries=num_queries or 200)
        return Sam3Config(
            vision_config=Sam3VisionConfig(backbone_config=Sam3ViTConfig()),
            text_config=text,
            geometry_encoder_config=Sam3GeometryEncoderConfig(),
            detr_encoder_config=Sam3DETREncoderConfig(),
            detr_decoder_config=decoder,
            mask_decoder_config=Sam3MaskDecoderConfig(),
        )
    if size != "tiny":
        raise ValueError(f"unknown model size {size!r}; use 'tiny' or 'full'")
    hidden, heads = 32, 2
    vit = Sam3ViTConfig(hidden_size=hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=heads,
                        global_attn_indexes=[1], window_size=24)
    text = CLIPTextConfig(vocab_size=len(_SPECIALS) + 512, hidden_size=hidden, intermediate_size=64,
                          projection_dim=hidden, num_hidden_layers=1, num_attention_heads=heads,
                          max_position_embeddings=32, hidden_act="gelu", bos_token_id=0, eos_token_id=1,
                          pad_token_id=1)
    common = {"hidden_size": hidden, "num_attention_heads": heads, "intermediate_size": 64}
    return Sam3Config(
        vision_config=Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=hidden),
        text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(num_layers=1, **common),
        detr_encoder_config=Sam3DETREncoderConfig(num_layers=1, **common),
        detr_decoder_config=Sam3DETRDecoderConfig(num_layers=1, num_queries=num_queries or 20, **common),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=hidden, num_attention_heads=heads),
    )


def build_processor():  # type: ignore[no-untyped-def]
    """A ``Sam3Processor`` (default 1008x1008 image processor + the in-memory tokenizer)."""
    from transformers import Sam3ImageProcessor, Sam3Processor

    return Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=build_tokenizer())


def build_random_sam3(size: Size = "tiny", *, seed: int = 0):  # type: ignore[no-untyped-def]
    """A randomly initialised ``Sam3Model`` (eval mode, fp32, CPU) and its processor.

    Args:
        size: ``"tiny"`` or ``"full"`` (see :func:`sam3_config`).
        seed: Seed for the weight initialisation (same seed, same weights).

    Returns:
        ``(model, processor)``.
    """
    import torch
    from transformers import Sam3Model

    with torch.random.fork_rng(devices=[]):  # the caller's CPU generator is left as it was
        torch.manual_seed(seed)
        model = Sam3Model(sam3_config(size))
    return model.eval(), build_processor()


def save_random_sam3(directory: str | Path, size: Size = "tiny", *, seed: int = 0) -> Path:
    """Build a random SAM 3 and save model + processor so ``from_pretrained(directory)`` loads it offline.

    Args:
        directory: Where to write (created if missing).
        size: ``"tiny"`` (about 1 MB on disk) or ``"full"`` (about 3.4 GB).
        seed: Weight initialisation seed.

    Returns:
        The directory as a ``Path``.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model, processor = build_random_sam3(size, seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    logger.info("saved a random %s SAM 3 to %s", size, path)
    return path


def save_tiny_sam3(directory: str | Path, *, seed: int = 0) -> Path:
    """Save the tiny random SAM 3 (see :func:`save_random_sam3`) and return its directory."""
    return save_random_sam3(directory, "tiny", seed=seed)


def sam3_tracker_config(size: Size = "tiny", *, detector_config=None):  # type: ignore[no-untyped-def]
    """A ``Sam3TrackerConfig`` whose ViT trunk is the detector's of the same size.

    Args:
        size: ``"tiny"`` (hidden size 32, the tiny detector's ViT) or ``"full"`` (the released
            tracker).
        detector_config: The ``Sam3Config`` whose vision backbone the tracker's copies (default:
            :func:`sam3_config` of ``size``); the tracker's neck and heads are its own.

    Returns:
        A ``transformers.Sam3TrackerConfig`` with every nested config given as an object.
    """
    from transformers import (
        Sam3TrackerConfig,
        Sam3TrackerMaskDecoderConfig,
        Sam3TrackerPromptEncoderConfig,
        Sam3VisionConfig,
    )

    detector = detector_config or sam3_config(size)
    vit = detector.vision_config.backbone_config
    grid = vit.image_size // vit.patch_size
    vision = Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=detector.vision_config.fpn_hidden_size,
                              backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]])
    hidden = vision.fpn_hidden_size
    if size == "full":
        prompt, decoder = Sam3TrackerPromptEncoderConfig(), Sam3TrackerMaskDecoderConfig()
    elif size == "tiny":
        prompt = Sam3TrackerPromptEncoderConfig(hidden_size=hidden, image_size=vit.image_size,
                                                patch_size=vit.patch_size, mask_input_channels=4)
        decoder = Sam3TrackerMaskDecoderConfig(hidden_size=hidden, mlp_dim=64, num_attention_heads=2,
                                               iou_head_hidden_dim=hidden)
    else:
        raise ValueError(f"unknown model size {size!r}; use 'tiny' or 'full'")
    return Sam3TrackerConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def build_random_sam3_tracker(size: Size = "tiny", *, seed: int = 0, detector=None):  # type: ignore[no-untyped-def]
    """A randomly initialised ``Sam3TrackerModel`` (eval mode, fp32, CPU).

    Args:
        size: ``"tiny"`` or ``"full"`` (see :func:`sam3_tracker_config`).
        seed: Seed for the weight initialisation.
        detector: A ``Sam3Model`` (e.g. from :func:`build_random_sam3`) whose ViT trunk weights
            the tracker takes, as the released checkpoint's tracker does, so that a
            :class:`sam3core.tracker.Sam3Tracker` can share the trunk; ``None`` leaves the
            tracker's trunk random (then it cannot be shared).

    Returns:
        The model. Its no-memory embedding is drawn at random too (transformers initialises it
        to zeros), so tests see where it is added.
    """
    import torch
    from transformers import Sam3TrackerModel

    config = sam3_tracker_config(size, detector_config=detector.config if detector is not None else None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3TrackerModel(config)
        with torch.no_grad():
            model.no_memory_embedding.normal_(0.0, 0.02)
    if detector is not None:
        model.vision_encoder.backbone.load_state_dict(detector.vision_encoder.backbone.state_dict())
    return model.eval()


def save_random_sam3_tracker(directory: str | Path, size: Size = "tiny", *, seed: int = 0,
                             detector=None) -> Path:  # type: ignore[no-untyped-def]
    """Build a random SAM 3 tracker (see :func:`build_random_sam3_tracker`) and ``save_pretrained`` it.

    Pass the ``Sam3Model`` saved with :func:`save_random_sam3` (e.g. loaded back from its
    directory) as ``detector`` to make the two share one ViT trunk, as the released weights do.

    Returns:
        The directory as a ``Path`` (``Sam3Tracker.from_pretrained`` loads it offline).
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    build_random_sam3_tracker(size, seed=seed, detector=detector).save_pretrained(path)
    logger.info("saved a random %s SAM 3 tracker to %s", size, path)
    return path
