"""ReasonSeg samples: reading a split folder and rasterizing its ground-truth polygons.

Every mask here is ``(H, W)`` in the image as ``cv2.imread`` decodes it (EXIF orientation
applied); polygon points are ``(x, y)`` pixels with the origin at the top-left corner.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from evals.errors import EvalInputError

logger = logging.getLogger(__name__)

IGNORE_VALUE = 255
"""Ground-truth value of pixels excluded from scoring."""
TARGET_VALUE = 1
"""Ground-truth value of target pixels."""

SPLITS = ("short", "long")
"""The query subsets: ``short`` phrases (``is_sentence`` false) and ``long`` sentences."""


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


def format_hw(shape: Sequence[int]) -> str:
    """An ``(H, W)`` size for messages, e.g. ``"48x64 (HxW)"``."""
    return "x".join(str(int(v)) for v in shape) + " (HxW)"


# ----------------------------------------------------------------------------- reading


def read_json(path: Path) -> Any:
    """Parse a JSON file as UTF-8, falling back to cp1252 as LISA's loader does.

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
