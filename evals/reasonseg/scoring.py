"""ReasonSeg scores: per-sample intersection / union, and gIoU / cIoU over a set of samples.

Per sample, ignore pixels are dropped from prediction and target, then the foreground
intersection ``I`` and union ``U`` are counted; the sample IoU is ``I / (U + 1e-5)``, or 1.0 when
``U == 0``. gIoU is the mean sample IoU and cIoU is ``sum(I) / (sum(U) + 1e-10)``, each over all
samples and over the short and long subsets. All values here are on the [0, 1] scale; the
``to_dict`` methods report percent by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evals.reasonseg.data import IGNORE_VALUE, SPLITS, TARGET_VALUE, ReasonSegSample, format_hw, gt_mask


@dataclass(frozen=True)
class SampleScore:
    """Foreground intersection and union of one sample, ignore pixels excluded.

    Attributes:
        intersection: Pixels predicted and target.
        union: Pixels predicted or target.
    """

    intersection: int
    union: int

    @property
    def iou(self) -> float:
        """``I / (U + 1e-5)``, or 1.0 when the union is empty."""
        return 1.0 if self.union == 0 else self.intersection / (self.union + 1e-5)


def score_mask(pred: np.ndarray, target: np.ndarray) -> SampleScore:
    """Score one predicted mask against a ground truth.

    Args:
        pred: ``(H, W)`` mask, non-zero = foreground, or ``(N, H, W)`` instance masks whose
            union is the prediction (``N`` may be 0: an empty prediction).
        target: ``(H, W)`` uint8 ground truth from :func:`~evals.reasonseg.data.rasterize_shapes`.

    Raises:
        ValueError: If the prediction's ``(H, W)`` differs from the target's.
    """
    pred = np.asarray(pred)
    if pred.ndim == 3:
        pred = pred.astype(bool).any(axis=0) if pred.shape[0] else np.zeros(pred.shape[1:], bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction has shape {pred.shape}, ground truth {target.shape} (H, W)")
    fg = pred.astype(bool) & (target != IGNORE_VALUE)
    tg = target == TARGET_VALUE
    return SampleScore(intersection=int(np.count_nonzero(fg & tg)), union=int(np.count_nonzero(fg | tg)))


def score_sample(sample: ReasonSegSample, pred: np.ndarray) -> SampleScore:
    """Score a predicted mask for ``sample`` (see :func:`score_mask`); rasterizes its ground truth.

    Raises:
        ValueError: If the prediction is not ``(sample.height, sample.width)``.
    """
    if np.asarray(pred).shape[-2:] != (sample.height, sample.width):
        raise ValueError(
            f"prediction for {sample.id} is {format_hw(np.asarray(pred).shape[-2:])}, but image "
            f"{sample.image_path} is {format_hw((sample.height, sample.width))} as OpenCV reads it"
        )
    return score_mask(pred, gt_mask(sample))


@dataclass(frozen=True)
class SplitScore:
    """Metrics over a set of samples, on the [0, 1] scale.

    Attributes:
        giou: Mean sample IoU (None without samples).
        ciou: ``sum(I) / (sum(U) + 1e-10)`` (None without samples).
        n: Number of samples.
    """

    giou: float | None
    ciou: float | None
    n: int

    def to_dict(self, percent: bool = True) -> dict[str, float | int | None]:
        """``{"giou", "ciou", "n"}``, values x100 when ``percent``."""
        k = 100.0 if percent else 1.0
        return {
            "giou": None if self.giou is None else self.giou * k,
            "ciou": None if self.ciou is None else self.ciou * k,
            "n": self.n,
        }


@dataclass(frozen=True)
class ReasonSegScores:
    """gIoU / cIoU over all samples and the short / long subsets."""

    all: SplitScore
    short: SplitScore
    long: SplitScore

    def to_dict(self, percent: bool = True) -> dict[str, Any]:
        """``{"giou", "ciou", "n", "short": {...}, "long": {...}}`` (percent by default)."""
        out: dict[str, Any] = self.all.to_dict(percent)
        out["short"] = self.short.to_dict(percent)
        out["long"] = self.long.to_dict(percent)
        return out


@dataclass
class _Totals:
    ious: list[float] = field(default_factory=list)
    intersection: int = 0
    union: int = 0

    def add(self, score: SampleScore) -> None:
        self.ious.append(score.iou)
        self.intersection += score.intersection
        self.union += score.union

    def score(self) -> SplitScore:
        n = len(self.ious)
        if n == 0:
            return SplitScore(giou=None, ciou=None, n=0)
        return SplitScore(giou=math.fsum(self.ious) / n, ciou=self.intersection / (self.union + 1e-10), n=n)


class ReasonSegAccumulator:
    """Running gIoU / cIoU, fed one sample at a time (e.g. by a runner's progress bar).

    Example:
        >>> acc = ReasonSegAccumulator()
        >>> acc.add(SampleScore(intersection=3, union=4), is_sentence=False, sample_id="a")
        >>> round(acc.giou, 4)
        0.75
    """

    def __init__(self) -> None:
        self._totals = {name: _Totals() for name in ("all", *SPLITS)}
        self._seen: set[str] = set()

    def add(self, score: SampleScore, *, is_sentence: bool, sample_id: str | None = None) -> None:
        """Add one sample's score.

        Raises:
            ValueError: If ``sample_id`` was added before (a sample must count once).
        """
        if sample_id is not None:
            if sample_id in self._seen:
                raise ValueError(f"sample {sample_id!r} was already scored")
            self._seen.add(sample_id)
        self._totals["all"].add(score)
        self._totals["long" if is_sentence else "short"].add(score)

    @property
    def n(self) -> int:
        """Samples added so far."""
        return len(self._totals["all"].ious)

    @property
    def giou(self) -> float | None:
        """Running gIoU over all samples ([0, 1]; None before the first)."""
        return self._totals["all"].score().giou

    @property
    def ciou(self) -> float | None:
        """Running cIoU over all samples ([0, 1]; None before the first)."""
        return self._totals["all"].score().ciou

    def result(self) -> ReasonSegScores:
        """The scores so far, over all samples and per split."""
        t = self._totals
        return ReasonSegScores(all=t["all"].score(), short=t["short"].score(), long=t["long"].score())
