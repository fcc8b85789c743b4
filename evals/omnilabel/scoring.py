"""OmniLabel scoring: pooled AP per description group, with pycocotools doing the matching.

Each (image, description) pair becomes one COCO *image* of a single category, so ``COCOeval``
matches detections to ground truth within each pair (IoU .50:.05:.95, area range *all*, area =
``w * h``, at most :data:`MAX_DETS` detections per pair, crowd boxes ignored along with the
detections they absorb). Matching runs once; each group then accumulates over its subset of pairs
(in the toolkit's order: image id, then label-space order), which ranks the detections of all its
pairs together and counts all their non-crowd boxes as ground truth (*pooled* AP). AP is the mean
of COCO's 101-point interpolated precision over the IoU thresholds, on the [0, 1] scale.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

from evals.omnilabel.data import Detection, OmniLabelGT, load_gt, load_predictions

logger = logging.getLogger(__name__)

GROUPS = ("categ", "descr", "descr_pos", "descr_S", "descr_M", "descr_L")
"""Reported groups, in table order (``AP_<group>`` in JSON)."""

MAX_DETS = 100
"""Detections kept per (image, description) pair, highest scores first."""
_AREA_ALL = [0.0, 1e5**2]
_CATEGORY_ID = 1


def pair_groups(pair_type: str, num_words: int) -> list[str]:
    """The groups (of :data:`GROUPS`) a pair of this type and word count belongs to.

    ``categ`` = C pairs; ``descr`` = Dp + Dn; ``descr_pos`` = Dp; ``descr_S`` / ``descr_M`` /
    ``descr_L`` = descr pairs whose text has <= 3, 4-8 and >= 9 words.
    """
    if pair_type == "C":
        return ["categ"]
    groups = ["descr"] + (["descr_pos"] if pair_type == "Dp" else [])
    groups.append("descr_S" if num_words <= 3 else "descr_M" if num_words <= 8 else "descr_L")
    return groups


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


def _number_pairs(gt: OmniLabelGT) -> tuple[dict[tuple[int, int], int], dict[str, list[int]]]:
    """Pair ids ``1..P`` in the toolkit's order, and each group's pair ids."""
    pair_id: dict[tuple[int, int], int] = {}
    members: dict[str, list[int]] = {g: [] for g in GROUPS}
    for image_id, description_id, kind in gt.pairs():
        pid = len(pair_id) + 1
        pair_id[image_id, description_id] = pid
        for g in pair_groups(kind, gt.descriptions[description_id].num_words):
            members[g].append(pid)
    return pair_id, members


def _gt_annotations(gt: OmniLabelGT, pair_id: dict[tuple[int, int], int]) -> list[dict[str, Any]]:
    """One COCO annotation per (box, description) of a pair, crowd boxes flagged ``iscrowd``."""
    anns: list[dict[str, Any]] = []
    for image_id in sorted(gt.boxes):
        for box in gt.boxes[image_id]:
            for description_id in box.description_ids:
                pid = pair_id.get((image_id, description_id))
                if pid is not None:
                    anns.append({"id": len(anns) + 1, "image_id": pid, "category_id": _CATEGORY_ID,
                                 "bbox": list(box.bbox), "area": _area(box.bbox), "iscrowd": int(box.iscrowd)})
    return anns


def _dt_annotations(detections: Iterable[Detection],
                    pair_id: dict[tuple[int, int], int]) -> tuple[list[dict[str, Any]], int]:
    """COCO results of the detections that fall on a pair, and the count of those that do not."""
    anns: list[dict[str, Any]] = []
    n_ignored = 0
    for det in detections:
        pid = pair_id.get((det.image_id, det.description_id))
        if pid is None:
            n_ignored += 1
            continue
        anns.append({"id": len(anns) + 1, "image_id": pid, "category_id": _CATEGORY_ID,
                     "bbox": list(det.bbox), "area": _area(det.bbox), "score": det.score})
    if n_ignored:
        logger.warning("%d detections ignored: their image is not in the ground truth or their "
                       "description is not in that image's label space", n_ignored)
    return anns, n_ignored


def evaluate(gt: OmniLabelGT, detections: Iterable[Detection]) -> OmniLabelScores:
    """Pooled AP of every group (see :mod:`evals.omnilabel` for the protocol).

    Args:
        gt: The ground truth.
        detections: Predicted triples; their order breaks score ties, as in the toolkit.
    """
    pair_id, members = _number_pairs(gt)
    gt_anns = _gt_annotations(gt, pair_id)
    dt_anns, n_ignored = _dt_annotations(detections, pair_id)
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
