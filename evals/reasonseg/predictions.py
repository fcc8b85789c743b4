"""ReasonSeg prediction folders: one ``<id>.png`` mask per sample, scored against a split folder.

A prediction PNG has the image's size as OpenCV reads it (EXIF orientation applied); any non-zero
pixel is foreground. A sample without a file is scored as an empty prediction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from evals.errors import EvalInputError
from evals.reasonseg.data import ReasonSegSample, format_hw, gt_mask, load_samples
from evals.reasonseg.scoring import ReasonSegAccumulator, ReasonSegScores, SampleScore, score_mask

logger = logging.getLogger(__name__)


def read_prediction(path: str | Path, height: int, width: int) -> np.ndarray:
    """Read a predicted mask PNG (any non-zero pixel is foreground; alpha ignored; no EXIF rotation).

    Args:
        path: The ``<stem>.png`` file.
        height: Expected height ``H`` (the image's, as OpenCV reads it).
        width: Expected width ``W``.

    Returns:
        ``(H, W)`` bool mask.

    Raises:
        EvalInputError: If the file cannot be decoded or its size differs from ``(H, W)``.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
                im = im.convert("RGB" if im.mode in ("RGBA", "RGBa") else "L")
            arr = np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise EvalInputError(f"cannot read prediction {path}: {e}; write masks as PNG files") from e
    mask = arr.any(axis=2) if arr.ndim == 3 else arr != 0
    if mask.shape != (height, width):
        raise EvalInputError(
            f"prediction {path} is {format_hw(mask.shape)} but its image is {format_hw((height, width))} as "
            "OpenCV reads it (EXIF orientation applied); write masks at the oriented image size"
        )
    return mask


@dataclass(frozen=True)
class ReasonSegReport:
    """Result of scoring a prediction folder.

    Attributes:
        scores: gIoU / cIoU overall and per split.
        per_sample: Sample id -> its :class:`~evals.reasonseg.scoring.SampleScore`, in id order.
        missing: Ids without a prediction file (scored as empty predictions).
    """

    scores: ReasonSegScores
    per_sample: dict[str, SampleScore]
    missing: tuple[str, ...]


def score_prediction_dir(data_dir: str | Path, pred_dir: str | Path) -> ReasonSegReport:
    """Score a folder of ``<id>.png`` masks against a ReasonSeg split folder.

    A missing file is an empty prediction (counted in ``missing``); PNGs that match no sample are
    logged and ignored.

    Raises:
        EvalInputError: For a missing folder, a malformed sample or a mask of the wrong size.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EvalInputError(f"prediction folder {pred_dir} not found; pass the folder with <id>.png masks")
    return score_predictions(load_samples(data_dir), pred_dir)


def score_predictions(samples: Iterable[ReasonSegSample], pred_dir: str | Path) -> ReasonSegReport:
    """Score already loaded samples against ``pred_dir/<id>.png`` (a missing file = empty prediction).

    Raises:
        EvalInputError: If a mask cannot be read or has the wrong size.
    """
    pred_dir = Path(pred_dir)
    acc = ReasonSegAccumulator()
    per_sample: dict[str, SampleScore] = {}
    missing: list[str] = []
    for sample in samples:
        path = pred_dir / f"{sample.id}.png"
        if path.is_file():
            pred = read_prediction(path, sample.height, sample.width)
        else:
            missing.append(sample.id)
            pred = np.zeros((sample.height, sample.width), bool)
        score = score_mask(pred, gt_mask(sample))
        acc.add(score, is_sentence=sample.is_sentence, sample_id=sample.id)
        per_sample[sample.id] = score
    if missing:
        logger.warning("%d of %d samples have no prediction file; scored as empty", len(missing), acc.n)
    extra = sorted(p.name for p in pred_dir.glob("*.png") if p.stem not in per_sample)
    if extra:
        logger.warning("%d PNG files in %s match no sample and are ignored (e.g. %s)", len(extra), pred_dir,
                       extra[0])
    return ReasonSegReport(scores=acc.result(), per_sample=per_sample, missing=tuple(missing))
