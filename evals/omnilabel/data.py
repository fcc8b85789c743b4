"""OmniLabel files: the ground truth (images, descriptions, boxes) and official prediction records.

Boxes are COCO ``[x, y, w, h]`` in pixels with the origin at the image's top-left corner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.errors import EvalInputError


@dataclass(frozen=True)
class Description:
    """One description (a category name or a free-form phrase).

    Attributes:
        id: Description id.
        text: The text shown to the model.
        is_category: True for a plain category (type ``C``), False for a free-form description.
        image_ids: Images whose label space holds it.
    """

    id: int
    text: str
    is_category: bool
    image_ids: tuple[int, ...]

    @property
    def num_words(self) -> int:
        """``len(text.split())``, which decides the S / M / L group."""
        return len(self.text.split())


@dataclass(frozen=True)
class GTBox:
    """A ground-truth box. ``bbox`` is ``(x, y, w, h)`` in pixels; it refers to every id it lists."""

    image_id: int
    bbox: tuple[float, float, float, float]
    description_ids: tuple[int, ...]
    iscrowd: bool = False


@dataclass(frozen=True)
class Detection:
    """One predicted (box, description, score) triple. ``bbox`` is ``(x, y, w, h)`` in pixels."""

    image_id: int
    bbox: tuple[float, float, float, float]
    description_id: int
    score: float

    def to_record(self) -> dict[str, Any]:
        """This detection in the official prediction format (one description per record)."""
        return {"image_id": self.image_id, "bbox": list(self.bbox),
                "description_ids": [self.description_id], "scores": [self.score]}


@dataclass(frozen=True)
class OmniLabelGT:
    """An OmniLabel ground-truth file.

    Attributes:
        images: Image id -> ``file_name``, in file order.
        descriptions: Description id -> :class:`Description`, in file order.
        boxes: Image id -> its boxes, in file order.
        label_spaces: Image id -> description ids of its label space, in description-file order.
    """

    images: dict[int, str]
    descriptions: dict[int, Description]
    boxes: dict[int, tuple[GTBox, ...]]
    label_spaces: dict[int, tuple[int, ...]]

    def positive_ids(self, image_id: int) -> set[int]:
        """Ids of the descriptions that some box of the image (crowd boxes included) refers to."""
        return {d for box in self.boxes.get(image_id, ()) for d in box.description_ids}

    def pair_type(self, image_id: int, description_id: int) -> str:
        """``"C"``, ``"Dp"`` or ``"Dn"`` for a pair of the label space."""
        return _pair_type(self.descriptions[description_id], self.positive_ids(image_id))

    def pairs(self) -> Iterator[tuple[int, int, str]]:
        """Every ``(image id, description id, pair type)`` of the label spaces.

        Ordered by image id, then label-space order: the toolkit's order, which breaks score ties.
        """
        for image_id in sorted(self.images):
            positives = self.positive_ids(image_id)
            for description_id in self.label_spaces.get(image_id, ()):
                yield image_id, description_id, _pair_type(self.descriptions[description_id], positives)


def _pair_type(description: Description, positive_ids: set[int]) -> str:
    if description.is_category:
        return "C"
    return "Dp" if description.id in positive_ids else "Dn"


# ----------------------------------------------------------------------------- reading


def _load_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise EvalInputError(f"{what} file {path} not found; check the path") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalInputError(f"cannot read {what} file {path}: {e}; pass a UTF-8 JSON file") from e


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    return isinstance(v, list | tuple) and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)


def _is_box(v: Any) -> bool:
    return _numbers(v) and len(v) == 4


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


def _parse_images(items: Any, source: str) -> dict[int, str]:
    images: dict[int, str] = {}
    for i, img in enumerate(items):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or img["id"] in images:
            raise EvalInputError(f"{source}: images[{i}] needs a unique integer 'id'")
        images[img["id"]] = str(img.get("file_name", ""))
    return images


def _parse_descriptions(items: Any, source: str) -> dict[int, Description]:
    descriptions: dict[int, Description] = {}
    for i, d in enumerate(items):
        ok = isinstance(d, dict) and _is_int(d.get("id")) and isinstance(d.get("text"), str)
        ok = ok and _int_list(d.get("image_ids")) and isinstance(d.get("anno_info"), dict)
        if not ok or d["id"] in descriptions:
            raise EvalInputError(
                f"{source}: descriptions[{i}] needs a unique integer 'id', 'text', 'image_ids' "
                "and 'anno_info'")
        descriptions[d["id"]] = Description(id=d["id"], text=d["text"], image_ids=tuple(d["image_ids"]),
                                            is_category=d["anno_info"].get("type") != "object_description")
    return descriptions


def _parse_boxes(items: Any, source: str) -> dict[int, tuple[GTBox, ...]]:
    boxes: dict[int, list[GTBox]] = {}
    for i, a in enumerate(items):
        ok = isinstance(a, dict) and _is_int(a.get("image_id")) and _is_box(a.get("bbox"))
        if not ok or not _int_list(a.get("description_ids")):
            raise EvalInputError(
                f"{source}: annotations[{i}] needs 'image_id', 'bbox' [x, y, w, h] and 'description_ids'")
        box = GTBox(image_id=a["image_id"], bbox=tuple(float(v) for v in a["bbox"]),  # type: ignore[arg-type]
                    description_ids=tuple(a["description_ids"]), iscrowd=bool(a.get("iscrowd", 0)))
        boxes.setdefault(box.image_id, []).append(box)
    return {k: tuple(v) for k, v in boxes.items()}


def parse_gt(data: Any, source: str = "<ground truth>") -> OmniLabelGT:
    """Build :class:`OmniLabelGT` from the parsed JSON (``images``, ``descriptions``, ``annotations``).

    An image's label space is every description whose ``image_ids`` contain it (a repeated id
    counts once), in description-file order.

    Raises:
        EvalInputError: If a required key is missing or malformed (the message names ``source``).
    """
    if not isinstance(data, dict) or not all(k in data for k in ("images", "descriptions")):
        raise EvalInputError(f"{source}: expected an OmniLabel JSON object with 'images' and 'descriptions'")
    if "annotations" not in data:
        raise EvalInputError(
            f"{source} has no 'annotations' (boxes); scoring needs the split with ground truth (val)")
    images = _parse_images(data["images"], source)
    descriptions = _parse_descriptions(data["descriptions"], source)
    boxes = _parse_boxes(data["annotations"], source)
    label_spaces: dict[int, list[int]] = {}
    for d in descriptions.values():
        for image_id in dict.fromkeys(d.image_ids):  # a repeated image id counts once
            if image_id in images:
                label_spaces.setdefault(image_id, []).append(d.id)
    return OmniLabelGT(images=images, descriptions=descriptions, boxes=boxes,
                       label_spaces={k: tuple(v) for k, v in label_spaces.items()})


def load_gt(path: str | Path) -> OmniLabelGT:
    """Read an OmniLabel ground-truth JSON (e.g. ``dataset_all_val_v0.1.3.json``)."""
    return parse_gt(_load_json(path, "ground-truth"), str(path))


def parse_predictions(records: Any, source: str = "<predictions>") -> list[Detection]:
    """Split official prediction records into one :class:`Detection` per (box, description, score).

    Args:
        records: A list of ``{image_id, bbox: [x, y, w, h], description_ids: [...], scores: [...]}``.
        source: Named in error messages.

    Raises:
        EvalInputError: If the records are malformed (the message names the record index).
    """
    if not isinstance(records, list):
        raise EvalInputError(
            f"{source}: expected a JSON list of {{image_id, bbox, description_ids, scores}} records")
    out: list[Detection] = []
    for i, r in enumerate(records):
        ok = isinstance(r, dict) and _is_int(r.get("image_id")) and _is_box(r.get("bbox"))
        ok = ok and _int_list(r.get("description_ids")) and _numbers(r.get("scores"))
        ok = ok and len(r["scores"]) == len(r["description_ids"])
        if not ok:
            raise EvalInputError(
                f"{source}: record {i} must have an integer 'image_id', 'bbox' [x, y, w, h] and equally long "
                "'description_ids' (integers) and 'scores' (numbers)")
        bbox = tuple(float(v) for v in r["bbox"])
        for d, s in zip(r["description_ids"], r["scores"], strict=True):
            out.append(Detection(image_id=r["image_id"], bbox=bbox, description_id=d, score=float(s)))  # type: ignore[arg-type]
    return out


def load_predictions(path: str | Path) -> list[Detection]:
    """Read an official prediction JSON file (see :func:`parse_predictions`)."""
    return parse_predictions(_load_json(path, "prediction"), str(path))


def write_predictions(path: str | Path, detections: Iterable[Detection]) -> None:
    """Write detections as an official prediction JSON file (one record per detection)."""
    Path(path).write_text(json.dumps([d.to_record() for d in detections]), encoding="utf-8")
