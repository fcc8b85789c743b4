"""ReasonSeg: reading the dataset, rasterizing its ground truth, gIoU / cIoU.

The protocol is LISA's (see ``REFERENCE.md`` §3), reproduced pixel for pixel:

* a split folder holds ``<stem>.jpg`` + ``<stem>.json`` per sample; the JSON is read as UTF-8 and,
  when that fails, as cp1252; only the first query ``text[0]`` is evaluated;
* the image size is the one ``cv2.imread`` gives, i.e. *after* EXIF orientation, and every mask
  (ground truth and prediction) is ``(H, W)`` in that oriented frame; polygon points are
  ``(x, y)`` pixels with the origin at the top-left corner;
* the ground truth is a ``uint8`` ``(H, W)`` array with 0 = background, 1 = target and
  255 = ignore (see :func:`rasterize_shapes`);
* per sample, ignore pixels are dropped from prediction and target, then foreground
  intersection ``I`` and union ``U`` are counted; the sample IoU is ``I / (U + 1e-5)``, or 1.0
  when ``U == 0``; gIoU is the mean sample IoU, cIoU is ``sum(I) / (sum(U) + 1e-10)``, each
  over all samples and over the short (``is_sentence`` false) and long (true) subsets.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from evals.errors import EvalInputError

logger = logging.getLogger(__name__)

IGNORE_VALUE = 255
"""Ground-truth value of pixels excluded from scoring."""
TARGET_VALUE = 1
"""Ground-truth value of target pixels."""

SPLITS = ("short", "long")


@dataclass(frozen=True)
class Shape:
    """One annotated polygon.

    Attributes:
        label: The annotation label (``"target"``, ``"ignore"``, ``"flag"``, ...).
        points: Polygon vertices as ``(x, y)`` pixels in the oriented image, as written in the JSON.
    """

    label: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ReasonSegSample:
    """One ReasonSeg sample (an image, its queries and its polygons).

    Attributes:
        id: The file stem shared by the image and its JSON (e.g. ``"1234567_abc"``).
        image_path: Path of the ``.jpg``.
        json_path: Path of the ``.json``.
        query: ``text[0]``, the only query the protocol evaluates.
        texts: Every query in the JSON, in order.
        is_sentence: True for a long (sentence) query, False for a short phrase.
        height: Image height in pixels as OpenCV reads it (EXIF orientation applied).
        width: Image width in pixels, likewise.
        shapes: The annotated polygons, in file order (``flag`` shapes included).
    """

    id: str
    image_path: Path
    json_path: Path
    query: str
    texts: tuple[str, ...]
    is_sentence: bool
    height: int
    width: int
    shapes: tuple[Shape, ...]

    @property
    def split(self) -> str:
        """``"long"`` for sentence queries, else ``"short"``."""
        return "long" if self.is_sentence else "short"


# ----------------------------------------------------------------------------- reading


def read_json(path: Path) -> Any:
    """Parse a JSON file as UTF-8, falling back to cp1252 as the reference does.

    Raises:
        EvalInputError: If the file is missing or is not valid JSON in either encoding.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise EvalInputError(f"cannot read {path}: {e}; check the path") from e
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        logger.debug("%s is not UTF-8 JSON, retrying as cp1252", path)
    try:
        return json.loads(raw.decode("cp1252"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalInputError(
            f"{path} is not valid JSON in UTF-8 or cp1252 ({e}); re-download the dataset file"
        ) from e


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image as ``cv2.imread`` decodes it (EXIF orientation applied).

    Raises:
        EvalInputError: If OpenCV cannot decode the file.
    """
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise EvalInputError(f"OpenCV cannot read image {path}; check that it is a complete JPEG")
    return int(img.shape[0]), int(img.shape[1])


def load_sample(image_path: str | Path) -> ReasonSegSample:
    """Read one sample from its ``.jpg`` (the ``.json`` beside it holds the annotation).

    Raises:
        EvalInputError: If the JSON is missing or malformed, or the image unreadable.
    """
    image_path = Path(image_path)
    json_path = image_path.with_suffix(".json")
    if not json_path.is_file():
        raise EvalInputError(f"{json_path} not found for image {image_path}; each .jpg needs its .json")
    data = read_json(json_path)
    if not isinstance(data, dict):
        raise EvalInputError(f"{json_path}: expected a JSON object with 'text', 'is_sentence', 'shapes'")
    texts = data.get("text")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise EvalInputError(f"{json_path}: 'text' must be a non-empty list of query strings")
    is_sentence = data.get("is_sentence")
    if not isinstance(is_sentence, bool):
        raise EvalInputError(f"{json_path}: 'is_sentence' must be true or false")
    shapes = tuple(_parse_shape(json_path, i, s) for i, s in enumerate(data.get("shapes") or []))
    height, width = image_size(image_path)
    return ReasonSegSample(
        id=image_path.stem,
        image_path=image_path,
        json_path=json_path,
        query=texts[0],
        texts=tuple(texts),
        is_sentence=is_sentence,
        height=height,
        width=width,
        shapes=shapes,
    )


def _parse_shape(json_path: Path, index: int, raw: Any) -> Shape:
    where = f"{json_path}: shapes[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("label"), str):
        raise EvalInputError(f"{where} must be an object with a string 'label' and 'points'")
    points = raw.get("points")
    ok = isinstance(points, list) and len(points) > 0
    ok = ok and all(
        isinstance(p, list | tuple)
        and len(p) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in p)
        for p in points
    )
    if not ok:
        raise EvalInputError(f"{where}: 'points' must be a non-empty list of [x, y] numbers")
    return Shape(label=raw["label"], points=tuple((float(x), float(y)) for x, y in points))


def load_samples(data_dir: str | Path) -> list[ReasonSegSample]:
    """Read every sample of a split folder, sorted by id.

    Args:
        data_dir: A folder with ``<stem>.jpg`` + ``<stem>.json`` pairs (e.g. ``ReasonSeg/val``).

    Raises:
        EvalInputError: If the folder is missing, holds no ``.jpg``, or a sample is malformed.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EvalInputError(
            f"dataset folder {data_dir} not found; pass the folder with the .jpg/.json pairs"
        )
    images = sorted(data_dir.glob("*.jpg"))
    if not images:
        raise EvalInputError(
            f"no *.jpg files in {data_dir}; pass a ReasonSeg split folder (e.g. ReasonSeg/val)"
        )
    return [load_sample(p) for p in images]


# ----------------------------------------------------------------------------- ground truth


def _polygon(shape: Shape) -> np.ndarray:
    """Vertices as a ``(1, N, 2)`` int32 array (truncated toward zero, like ``np.array(..., int32)``)."""
    return np.asarray([shape.points], dtype=np.float64).astype(np.int32)


def _draw(mask: np.ndarray, polygon: np.ndarray, value: int) -> None:
    cv2.polylines(mask, polygon, isClosed=True, color=value, thickness=1)
    cv2.fillPoly(mask, polygon, color=value)


def rasterize_shapes(shapes: Sequence[Shape], height: int, width: int) -> np.ndarray:
    """Rasterize polygons into the ReasonSeg ground truth.

    Shapes labelled ``flag`` (case-insensitive) are skipped. The others are ordered by the number
    of pixels each covers when drawn alone (outline + fill), largest first. Ties follow LISA's
    ``np.argsort(areas)[::-1]`` as it behaves on its pinned numpy (a stable ascending sort,
    reversed): equal-size polygons are drawn in reverse file order, so the earlier one wins. This
    only matters for overlapping equal-size polygons of which one is ``ignore``.
    Each is drawn with OpenCV, outline first (``polylines``, closed, thickness 1) then
    ``fillPoly``, points cast to int32, with value 255 if ``"ignore"`` is in its label
    (case-insensitive) else 1; later (smaller) polygons overwrite earlier ones.

    Args:
        shapes: The polygons, ``(x, y)`` pixels in the oriented image.
        height: Mask height ``H``.
        width: Mask width ``W``.

    Returns:
        ``(H, W)`` uint8 array: 0 background, 1 target, 255 ignore. All zeros without polygons.
    """
    kept = [s for s in shapes if s.label.lower() != "flag"]
    polygons = [_polygon(s) for s in kept]
    areas = []
    for poly in polygons:
        alone = np.zeros((height, width), np.uint8)
        _draw(alone, poly, 1)
        areas.append(int(np.count_nonzero(alone)))
    order = sorted(range(len(kept)), key=lambda i: areas[i])[::-1]
    mask = np.zeros((height, width), np.uint8)
    for i in order:
        value = IGNORE_VALUE if "ignore" in kept[i].label.lower() else TARGET_VALUE
        _draw(mask, polygons[i], value)
    return mask


def gt_mask(sample: ReasonSegSample) -> np.ndarray:
    """The sample's ``(H, W)`` uint8 ground truth (0 / 1 / 255), see :func:`rasterize_shapes`."""
    return rasterize_shapes(sample.shapes, sample.height, sample.width)


# ----------------------------------------------------------------------------- scoring


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
        target: ``(H, W)`` uint8 ground truth from :func:`rasterize_shapes`.

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
            f"prediction for {sample.id} is {_hw(np.asarray(pred).shape[-2:])}, but image "
            f"{sample.image_path} is {_hw((sample.height, sample.width))} as OpenCV reads it"
        )
    return score_mask(pred, gt_mask(sample))


def _hw(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape) + " (HxW)"


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


# ----------------------------------------------------------------------------- prediction files


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
            f"prediction {path} is {_hw(mask.shape)} but its image is {_hw((height, width))} as OpenCV "
            "reads it (EXIF orientation applied); write masks at the oriented image size"
        )
    return mask


@dataclass(frozen=True)
class ReasonSegReport:
    """Result of scoring a prediction folder.

    Attributes:
        scores: gIoU / cIoU overall and per split.
        per_sample: Sample id -> its :class:`SampleScore`, in id order.
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
