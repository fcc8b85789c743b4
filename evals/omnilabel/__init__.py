"""OmniLabel: ground truth, predictions, and pooled AP per description group.

Follows the protocol of the official toolkit (github.com/samschulter/omnilabeltools, its
``OmniLabelEval`` in ``omnilabeltools/eval.py``):

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

Modules: :mod:`~evals.omnilabel.data` (reading and writing the files) and
:mod:`~evals.omnilabel.scoring` (pairs, groups and pooled AP through pycocotools' ``COCOeval``).
Every public name is importable from ``evals.omnilabel`` itself.
"""

from evals.omnilabel.data import (
    Description,
    Detection,
    GTBox,
    OmniLabelGT,
    load_gt,
    load_predictions,
    parse_gt,
    parse_predictions,
    write_predictions,
)
from evals.omnilabel.scoring import (
    GROUPS,
    MAX_DETS,
    OmniLabelScores,
    evaluate,
    pair_groups,
    pooled_ap,
    run_cocoeval,
    score_files,
)

__all__ = [
    "GROUPS",
    "MAX_DETS",
    "Description",
    "Detection",
    "GTBox",
    "OmniLabelGT",
    "OmniLabelScores",
    "evaluate",
    "load_gt",
    "load_predictions",
    "pair_groups",
    "parse_gt",
    "parse_predictions",
    "pooled_ap",
    "run_cocoeval",
    "score_files",
    "write_predictions",
]
