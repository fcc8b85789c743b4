"""Tiny synthetic ReasonSeg and OmniLabel datasets for tests (deterministic, offline).

Every polygon and box is an axis-aligned rectangle with (near-)integer corners, so the expected
ground truth is derived here by array slicing, independently of :mod:`evals.reasonseg`'s OpenCV
rasterizer: a rectangle with corners ``(x0, y0)`` and ``(x1, y1)`` covers columns ``x0..x1`` and
rows ``y0..y1`` *inclusive* (outline included), i.e. ``(x1 - x0 + 1) * (y1 - y0 + 1)`` pixels.

ReasonSeg samples (ids sort in this order):

* ``a_nested`` (40x60, short): target 40x30 rect, an ``ignore`` rect inside it, a target rect
  inside that, a ``flag`` rect over the whole image; listed smallest first, fractional corners.
* ``b_empty`` (30x40, long): no polygon at all.
* ``c_cp1252`` (24x32, long): JSON encoded in cp1252 with "café’s" (invalid UTF-8; the ’ is where
  cp1252 and latin-1 differ); two queries.
* ``d_exif`` (stored 40x60 landscape, EXIF orientation 6, so 60x40 portrait; short): a target
  rect reaching row 49, which exists only in the oriented image.
* ``e_thin`` (20x40, short): a thin ``Ignore`` rect whose pixel count (62) beats a target square's
  (49) although its geometric area (30) is smaller (36): pixel-count order draws the square last.

OmniLabel: three images; categories ``dog``/``cat``/``person``; free-form descriptions of 2, 6 and
10-11 words, positive and negative; boxes listing several description ids; two crowd boxes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_ORIENTATION_TAG = 0x0112

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 corners, pixels (inclusive)


@dataclass(frozen=True)
class ReasonSegFixtureSample:
    """Metadata of one generated ReasonSeg sample.

    Attributes:
        id: File stem.
        image_path: The ``.jpg``.
        json_path: The ``.json``.
        query: ``text[0]``.
        is_sentence: Long (True) or short query.
        height: Oriented image height ``H``.
        width: Oriented image width ``W``.
        gt: Expected ``(H, W)`` uint8 ground truth (0 / 1 / 255), derived by slicing.
        objects: One ``(H, W)`` bool mask per non-ignore, non-flag polygon drawn alone, file order
            (masks a fake engine can return).
    """

    id: str
    image_path: Path
    json_path: Path
    query: str
    is_sentence: bool
    height: int
    width: int
    gt: np.ndarray
    objects: tuple[np.ndarray, ...]

    @property
    def target(self) -> np.ndarray:
        """``(H, W)`` bool: the target pixels (``gt == 1``); a perfect prediction."""
        return self.gt == 1


@dataclass(frozen=True)
class ReasonSegFixture:
    """A generated ReasonSeg split folder and its samples (sorted by id)."""

    root: Path
    samples: tuple[ReasonSegFixtureSample, ...]

    @property
    def ids(self) -> list[str]:
        """Sample ids, sorted."""
        return [s.id for s in self.samples]

    def sample(self, sample_id: str) -> ReasonSegFixtureSample:
        """The sample with this id."""
        return next(s for s in self.samples if s.id == sample_id)


def _rect_points(r: Rect) -> list[list[float]]:
    x0, y0, x1, y1 = r
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _rect_mask(r: Rect, height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in r)  # corners are non-negative: int() truncates like OpenCV's cast
    m = np.zeros((height, width), bool)
    m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


def _expected_gt(shapes: list[tuple[str, Rect]], height: int, width: int) -> np.ndarray:
    kept = [(label, r) for label, r in shapes if label.lower() != "flag"]
    masks = [_rect_mask(r, height, width) for _, r in kept]
    order = sorted(range(len(kept)), key=lambda i: -int(masks[i].sum()))
    gt = np.zeros((height, width), np.uint8)
    for i in order:
        gt[masks[i]] = 255 if "ignore" in kept[i][0].lower() else 1
    return gt


def _noise(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


_REASONSEG_SPECS: list[dict[str, Any]] = [
    {"id": "a_nested", "size": (40, 60), "texts": ["the red box"], "is_sentence": False,
     "shapes": [("target", (15.6, 14.2, 22.9, 19.5)), ("target", (2.3, 2.0, 41.0, 31.7)),
                ("flag", (0, 0, 59, 39)), ("ignore", (10.1, 10.8, 29.4, 24.0))]},
    {"id": "b_empty", "size": (30, 40), "is_sentence": True,
     "texts": ["Which object in this picture would a child most likely want to play with?"], "shapes": []},
    {"id": "c_cp1252", "size": (24, 32), "is_sentence": True, "encoding": "cp1252",
     "texts": ["Which part of the café’s terrace would you sit in to read?", "the café corner"],
     "shapes": [("target", (5, 5, 14, 9))]},
    {"id": "d_exif", "size": (40, 60), "exif_orientation": 6, "texts": ["the tall sign"],
     "is_sentence": False, "shapes": [("target", (4, 30, 13, 49))]},
    {"id": "e_thin", "size": (20, 40), "texts": ["the small square"], "is_sentence": False,
     "shapes": [("Ignore", (0, 0, 30, 1)), ("target", (0, 0, 6, 6))]},
]


def make_reasonseg(root: str | Path, seed: int = 0) -> ReasonSegFixture:
    """Write the synthetic ReasonSeg split (module docstring) into ``root`` and describe it.

    Args:
        root: Folder to write ``<id>.jpg`` + ``<id>.json`` into (created if needed).
        seed: Seed of the image noise.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = []
    for spec in _REASONSEG_SPECS:
        stored_h, stored_w = spec["size"]
        image_path, json_path = root / f"{spec['id']}.jpg", root / f"{spec['id']}.json"
        image = _noise(rng, stored_h, stored_w)
        orientation = spec.get("exif_orientation")
        if orientation is None:
            image.save(image_path, quality=90)
            height, width = stored_h, stored_w
        else:
            exif = Image.Exif()
            exif[_ORIENTATION_TAG] = orientation
            image.save(image_path, quality=90, exif=exif.tobytes())
            height, width = (stored_w, stored_h) if orientation in (5, 6, 7, 8) else (stored_h, stored_w)
        data = {"text": spec["texts"], "is_sentence": spec["is_sentence"],
                "shapes": [{"label": label, "points": _rect_points(r), "shape_type": "polygon"}
                           for label, r in spec["shapes"]]}
        json_path.write_bytes(json.dumps(data, ensure_ascii=False).encode(spec.get("encoding", "utf-8")))
        objects = tuple(_rect_mask(r, height, width) for label, r in spec["shapes"]
                        if label.lower() != "flag" and "ignore" not in label.lower())
        samples.append(ReasonSegFixtureSample(
            id=spec["id"], image_path=image_path, json_path=json_path, query=spec["texts"][0],
            is_sentence=spec["is_sentence"], height=height, width=width,
            gt=_expected_gt(spec["shapes"], height, width), objects=objects))
    return ReasonSegFixture(root=root, samples=tuple(sorted(samples, key=lambda s: s.id)))


# ----------------------------------------------------------------------------- OmniLabel


@dataclass(frozen=True)
class OmniLabelFixture:
    """A generated OmniLabel ground truth with its images.

    Attributes:
        gt_path: The ground-truth JSON.
        images_dir: Folder with the images (``file_name`` relative to it).
        data: The ground-truth JSON content.
        sizes: Image id -> ``(H, W)``.
    """

    gt_path: Path
    images_dir: Path
    data: dict[str, Any]
    sizes: dict[int, tuple[int, int]]

    @property
    def image_ids(self) -> list[int]:
        """Image ids, sorted."""
        return sorted(self.sizes)

    def boxes(self, image_id: int, description_id: int, *, crowd: bool = False) -> list[list[float]]:
        """GT boxes ``[x, y, w, h]`` of a pair (crowd boxes only if ``crowd``), in file order."""
        return [list(a["bbox"]) for a in self.data["annotations"]
                if a["image_id"] == image_id and description_id in a["description_ids"]
                and (crowd or not a["iscrowd"])]

    def box_masks(self, image_id: int, description_id: int) -> list[np.ndarray]:
        """``(H, W)`` bool masks filling each non-crowd GT box of a pair (for a fake engine).

        A box ``[x, y, w, h]`` with integer values fills columns ``x..x+w-1`` and rows ``y..y+h-1``.
        """
        height, width = self.sizes[image_id]
        out = []
        for x, y, w, h in self.boxes(image_id, description_id):
            m = np.zeros((height, width), bool)
            m[int(y) : int(y + h), int(x) : int(x + w)] = True
            out.append(m)
        return out

    def perfect_predictions(self, score: float = 0.9) -> list[dict[str, Any]]:
        """Official-format records: every non-crowd GT (box, description), all with ``score``."""
        return [{"image_id": a["image_id"], "bbox": list(a["bbox"]),
                 "description_ids": list(a["description_ids"]), "scores": [score] * len(a["description_ids"])}
                for a in self.data["annotations"] if not a["iscrowd"]]


def _descr(i: int, text: str, image_ids: list[int], category: bool) -> dict[str, Any]:
    kind = "object_category" if category else "object_description"
    return {"id": i, "text": text, "image_ids": image_ids, "anno_info": {"type": kind}}


def omnilabel_gt() -> dict[str, Any]:
    """The synthetic OmniLabel ground truth (pure data; image files are written by :func:`make_omnilabel`).

    Label spaces and pair types (C / Dp / Dn)::

        image 1: C dog, C cat | Dp 10, Dp 11, Dp 14, Dn 13, Dn 15
        image 2: C dog, C cat (no cat box), C person | Dp 10, Dp 12, Dn 13, Dn 14
        image 3: C dog, C person | Dp 11, Dp 12, Dn 13, Dn 15

    Non-crowd GT counts: categ 6, descr 7 (all positive), descr_S 2, descr_M 3, descr_L 2.
    """
    descriptions = [
        _descr(1, "dog", [1, 2, 3], True),
        _descr(2, "cat", [1, 2], True),
        _descr(3, "person", [2, 3], True),
        _descr(10, "brown dog", [1, 2], False),  # 2 words: S
        _descr(11, "a dog lying on the grass", [1, 3], False),  # 6 words: M
        _descr(12, "the person on the right who is wearing a red hat", [2, 3], False),  # 11: L
        _descr(13, "purple elephant", [1, 2, 3], False),  # S, never boxed
        _descr(14, "a cat sleeping on a sofa", [1, 2], False),  # M, boxed in image 1 only
        _descr(15, "a bicycle leaning against the wall next to the door", [1, 3], False),  # 10: L, never
    ]
    annotations = [
        {"id": 1, "image_id": 1, "bbox": [4, 4, 20, 16], "description_ids": [1, 10, 11], "iscrowd": 0},
        {"id": 2, "image_id": 1, "bbox": [30, 20, 16, 12], "description_ids": [2, 14], "iscrowd": 0},
        {"id": 3, "image_id": 1, "bbox": [40, 2, 20, 10], "description_ids": [1], "iscrowd": 1},
        {"id": 4, "image_id": 2, "bbox": [2, 10, 18, 14], "description_ids": [1, 10], "iscrowd": 0},
        {"id": 5, "image_id": 2, "bbox": [30, 4, 12, 30], "description_ids": [3, 12], "iscrowd": 0},
        {"id": 6, "image_id": 2, "bbox": [44, 4, 16, 30], "description_ids": [3], "iscrowd": 1},
        {"id": 7, "image_id": 3, "bbox": [10, 6, 12, 28], "description_ids": [3, 12], "iscrowd": 0},
        {"id": 8, "image_id": 3, "bbox": [30, 24, 20, 14], "description_ids": [1, 11], "iscrowd": 0},
    ]
    images = [{"id": i, "file_name": f"{i:06d}.jpg", "width": 64, "height": 48} for i in (1, 2, 3)]
    return {"info": {"name": "synthetic", "version": "0.1.3"}, "images": images,
            "descriptions": descriptions, "annotations": annotations}


def make_omnilabel(root: str | Path, seed: int = 0) -> OmniLabelFixture:
    """Write ``root/gt.json`` and ``root/images/*.jpg`` for :func:`omnilabel_gt` and describe them."""
    root = Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = omnilabel_gt()
    sizes = {}
    for img in data["images"]:
        _noise(rng, img["height"], img["width"]).save(images_dir / img["file_name"], quality=90)
        sizes[img["id"]] = (img["height"], img["width"])
    gt_path = root / "gt.json"
    gt_path.write_text(json.dumps(data), encoding="utf-8")
    return OmniLabelFixture(gt_path=gt_path, images_dir=images_dir, data=data, sizes=sizes)
