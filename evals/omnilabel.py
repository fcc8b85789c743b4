"""OmniLabel: ground truth, predictions, and pooled AP per description group.

Follows the official toolkit's protocol (``REFERENCE.md`` §4):

* An image's *label space* is every description whose ``image_ids`` contain it. Each
  (image, description) pair of a label space is one *pair*, typed ``C`` (a plain category:
  ``anno_info.type`` other than ``object_description``), ``Dp`` (a free-form description with at
  least one box in the image, crowd boxes included) or ``Dn`` (a free-form description with no box
  there: a negative).
* Boxes are COCO ``[x, y, w, h]`` in pixels (origin top-left). Every (box, description id) of the
  ground truth and every (box, description id, score) triple of the predictions is matched within
  its pair with COCO's greedy box matching (IoU .50:.05:.95, area range *all*, area = ``w * h``,
  at most 100 detections per pair, crowd boxes ignored along with the detections they absorb).
* AP is **pooled** per group: the detections of all pairs in the group are ranked together, the
  ground-truth count is all non-crowd boxes of those pairs, and AP is the mean of COCO's
  101-point interpolated precision over IoU thresholds. Detections on ``Dn`` pairs can only be
  false positives. Groups: ``categ`` = C, ``descr`` = Dp + Dn, ``descr_pos`` = Dp, and
  ``descr_S`` / ``descr_M`` / ``descr_L``: descr pairs whose text has <= 3, 4-8 and >= 9 words
  (``len(text.split())``). A group without ground truth has no AP (None).
* Headline AP = ``2ab / (a + b + 1e-5)`` of AP(descr) and AP(categ), when both have ground truth.

Detections are ignored (counted, logged) when their image is not in the ground truth or their
description is not in that image's label space, as the toolkit does.

Implementation: each pair becomes one COCO *image* of a single category, so pycocotools'
``COCOeval`` does the matching and the pooled accumulation; matching runs once and each group
accumulates over its subset of pairs (in the toolkit's order: image id, then label-space order).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from evals.errors import EvalInputError

logger = logging.getLogger(__name__)

GROUPS = ("categ", "descr", "descr_pos", "descr_S", "descr_M", "descr_L")
"""Reported groups, in table order (``AP_<group>`` in JSON)."""

MAX_DETS = 100
_AREA_ALL = [0.0, 1e5**2]
_CATEGORY_ID = 1


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


def pair_groups(pair_type: str, num_words: int) -> list[str]:
    """The groups (of :data:`GROUPS`) a pair of this type and word count belongs to."""
    if pair_type == "C":
        return ["categ"]
    groups = ["descr"] + (["descr_pos"] if pair_type == "Dp" else [])
    groups.append("descr_S" if num_words <= 3 else "descr_M" if num_words <= 8 else "descr_L")
    return groups


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


def parse_gt(data: Any, source: str = "<ground truth>") -> OmniLabelGT:
    """Build :class:`OmniLabelGT` from the parsed JSON (``images``, ``descriptions``, ``annotations``).

    Raises:
        EvalInputError: If a required key is missing or malformed (the message names ``source``).
    """
    if not isinstance(data, dict) or not all(k in data for k in ("images", "descriptions")):
        raise EvalInputError(f"{source}: expected an OmniLabel JSON object with 'images' and 'descriptions'")
    if "annotations" not in data:
        raise EvalInputError(
            f"{source} has no 'annotations' (boxes); scoring needs the split with ground truth (val)")
    images: dict[int, str] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or img["id"] in images:
            raise EvalInputError(f"{source}: images[{i}] needs a unique integer 'id'")
        images[img["id"]] = str(img.get("file_name", ""))
    descriptions: dict[int, Description] = {}
    for i, d in enumerate(data["descriptions"]):
        ok = isinstance(d, dict) and _is_int(d.get("id")) and isinstance(d.get("text"), str)
        ok = ok and _int_list(d.get("image_ids")) and isinstance(d.get("anno_info"), dict)
        if not ok or d["id"] in descriptions:
            raise EvalInputError(
                f"{source}: descriptions[{i}] needs a unique integer 'id', 'text', 'image_ids' "
                "and 'anno_info'")
        descriptions[d["id"]] = Description(id=d["id"], text=d["text"], image_ids=tuple(d["image_ids"]),
                                            is_category=d["anno_info"].get("type") != "object_description")
    boxes: dict[int, list[GTBox]] = {}
    for i, a in enumerate(data["annotations"]):
        ok = isinstance(a, dict) and _is_int(a.get("image_id")) and _is_box(a.get("bbox"))
        if not ok or not _int_list(a.get("description_ids")):
            raise EvalInputError(
                f"{source}: annotations[{i}] needs 'image_id', 'bbox' [x, y, w, h] and 'description_ids'")
        box = GTBox(image_id=a["image_id"], bbox=tuple(float(v) for v in a["bbox"]),  # type: ignore[arg-type]
                    description_ids=tuple(a["description_ids"]), iscrowd=bool(a.get("iscrowd", 0)))
        boxes.setdefault(box.image_id, []).append(box)
    label_spaces: dict[int, list[int]] = {}
    for d in descriptions.values():
        for image_id in dict.fromkeys(d.image_ids):  # a repeated image id counts once
            if image_id in images:
                label_spaces.setdefault(image_id, []).append(d.id)
    return OmniLabelGT(images=images, descriptions=descriptions,
                       boxes={k: tuple(v) for k, v in boxes.items()},
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


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class OmniLabelScores:
    """Pooled AP per group, on the [0, 1] scale.

    Attributes:
        ap: Group (of :data:`GROUPS`) -> AP, None when the group has no ground truth.
        n_gt: Group -> number of non-crowd (box, description) ground truths.
        n_pairs: Group -> number of (image, description) pairs.
        n_detections: Detections that were scored.
        n_ignored: Detections ignored (unknown image, or description outside its label space).
    """

    ap: dict[str, float | None]
    n_gt: dict[str, int]
    n_pairs: dict[str, int]
    n_detections: int
    n_ignored: int

    @property
    def headline(self) -> float | None:
        """Harmonic mean ``2ab / (a + b + 1e-5)`` of AP(descr) and AP(categ); None unless both defined."""
        a, b = self.ap["descr"], self.ap["categ"]
        if a is None or b is None:
            return None
        return 2 * a * b / (a + b + 1e-5)

    def to_dict(self, percent: bool = True) -> dict[str, Any]:
        """``{"AP", "AP_categ", ..., "AP_descr_L", "n_gt": {group: count}}`` (percent by default)."""
        k = 100.0 if percent else 1.0
        out: dict[str, Any] = {"AP": None if self.headline is None else self.headline * k}
        for g in GROUPS:
            v = self.ap[g]
            out[f"AP_{g}"] = None if v is None else v * k
        out["n_gt"] = dict(self.n_gt)
        return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Capture what pycocotools prints while it runs and log it at DEBUG instead."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    if buf.getvalue().strip():
        logger.debug("pycocotools: %s", buf.getvalue().strip())


def _params(pair_ids: Sequence[int]) -> Params:
    p = Params(iouType="bbox")
    p.imgIds = list(pair_ids)
    p.catIds = [_CATEGORY_ID]
    p.areaRng = [list(_AREA_ALL)]
    p.areaRngLbl = ["all"]
    p.maxDets = [MAX_DETS]
    return p


def _coco(pair_ids: Sequence[int], anns: list[dict[str, Any]]) -> COCO:
    coco = COCO()
    coco.dataset = {"images": [{"id": i} for i in pair_ids],
                    "categories": [{"id": _CATEGORY_ID, "name": "pair"}], "annotations": anns}
    coco.createIndex()
    return coco


def run_cocoeval(pair_ids: Sequence[int], gt_anns: list[dict[str, Any]],
                 dt_anns: list[dict[str, Any]]) -> COCOeval:
    """Match detections to ground truth within each pair (one COCO image per pair, one category).

    Args:
        pair_ids: Positive integer pair ids, in evaluation order (ascending).
        gt_anns: COCO annotations ``{id, image_id: pair id, category_id: 1, bbox, area, iscrowd}``.
        dt_anns: COCO results ``{id, image_id: pair id, category_id: 1, bbox, area, score}``.

    Returns:
        The evaluated ``COCOeval`` (``evalImgs`` aligned with ``params.imgIds``).
    """
    with _quiet():
        ev = COCOeval(_coco(pair_ids, gt_anns), _coco(pair_ids, dt_anns), iouType="bbox")
        ev.params = _params(pair_ids)
        ev.evaluate()
    return ev


def pooled_ap(ev: COCOeval, pair_ids: Sequence[int]) -> tuple[float | None, int]:
    """Pooled AP over a subset of the pairs ``ev`` evaluated, with COCOeval's ``accumulate``.

    Returns:
        ``(AP, n_gt)``: AP in [0, 1] (None when the subset has no non-crowd ground truth) and the
        number of non-crowd ground truths.
    """
    position = {int(pid): i for i, pid in enumerate(ev.params.imgIds)}
    evals = [ev.evalImgs[position[int(pid)]] for pid in pair_ids]
    n_gt = sum(int(np.count_nonzero(e["gtIgnore"] == 0)) for e in evals if e is not None)
    if n_gt == 0:
        return None, 0
    # COCOeval.accumulate indexes evalImgs by position in params.imgIds, so accumulate a shallow
    # copy whose evaluated images are exactly the subset, in the same order.
    sub = copy.copy(ev)
    sub.evalImgs = evals
    sub._paramsEval = _params(pair_ids)
    with _quiet():
        sub.accumulate(_params(pair_ids))
    precision = sub.eval["precision"][:, :, 0, 0, 0]
    valid = precision[precision > -1]
    return (float(np.mean(valid)) if valid.size else None), n_gt


def _area(bbox: Sequence[float]) -> float:
    return max(0.0, bbox[2] * bbox[3])


def evaluate(gt: OmniLabelGT, detections: Iterable[Detection]) -> OmniLabelScores:
    """Pooled AP of every group (see the module docstring for the protocol).

    Args:
        gt: The ground truth.
        detections: Predicted triples; their order breaks score ties, as in the toolkit.
    """
    pair_id: dict[tuple[int, int], int] = {}
    members: dict[str, list[int]] = {g: [] for g in GROUPS}
    for image_id, description_id, kind in gt.pairs():
        pid = len(pair_id) + 1
        pair_id[image_id, description_id] = pid
        for g in pair_groups(kind, gt.descriptions[description_id].num_words):
            members[g].append(pid)
    gt_anns: list[dict[str, Any]] = []
    for image_id in sorted(gt.boxes):
        for box in gt.boxes[image_id]:
            for description_id in box.description_ids:
                pid = pair_id.get((image_id, description_id))
                if pid is not None:
                    gt_anns.append({"id": len(gt_anns) + 1, "image_id": pid, "category_id": _CATEGORY_ID,
                                    "bbox": list(box.bbox), "area": _area(box.bbox),
                                    "iscrowd": int(box.iscrowd)})
    dt_anns: list[dict[str, Any]] = []
    n_ignored = 0
    for det in detections:
        pid = pair_id.get((det.image_id, det.description_id))
        if pid is None:
            n_ignored += 1
            continue
        dt_anns.append({"id": len(dt_anns) + 1, "image_id": pid, "category_id": _CATEGORY_ID,
                        "bbox": list(det.bbox), "area": _area(det.bbox), "score": det.score})
    if n_ignored:
        logger.warning("%d detections ignored: their image is not in the ground truth or their "
                       "description is not in that image's label space", n_ignored)
    ap: dict[str, float | None] = dict.fromkeys(GROUPS)
    n_gt = dict.fromkeys(GROUPS, 0)
    if pair_id:
        ev = run_cocoeval(list(pair_id.values()), gt_anns, dt_anns)
        for g in GROUPS:
            if members[g]:
                ap[g], n_gt[g] = pooled_ap(ev, members[g])
    return OmniLabelScores(ap=ap, n_gt=n_gt, n_pairs={g: len(members[g]) for g in GROUPS},
                           n_detections=len(dt_anns), n_ignored=n_ignored)


def score_files(gt_path: str | Path, pred_path: str | Path) -> OmniLabelScores:
    """Score an official prediction file against a ground-truth file."""
    return evaluate(load_gt(gt_path), load_predictions(pred_path))
