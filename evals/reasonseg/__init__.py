"""ReasonSeg: reading the dataset, rasterizing its ground truth, gIoU / cIoU.

The protocol is LISA's (github.com/dvlab-research/LISA: ``get_mask_from_json`` in
``utils/data_processing.py`` builds the ground truth, ``validate`` in ``train_ds.py`` scores),
reproduced pixel for pixel:

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

Modules: :mod:`~evals.reasonseg.data` (samples and ground truth), :mod:`~evals.reasonseg.scoring`
(per-sample and pooled scores), :mod:`~evals.reasonseg.predictions` (a folder of predicted PNGs).
Every public name is importable from ``evals.reasonseg`` itself.
"""

from evals.reasonseg.data import (
    IGNORE_VALUE,
    SPLITS,
    TARGET_VALUE,
    ReasonSegSample,
    Shape,
    gt_mask,
    image_size,
    load_sample,
    load_samples,
    rasterize_shapes,
    read_json,
)
from evals.reasonseg.predictions import ReasonSegReport, read_prediction, score_prediction_dir, score_predictions
from evals.reasonseg.scoring import (
    ReasonSegAccumulator,
    ReasonSegScores,
    SampleScore,
    SplitScore,
    score_mask,
    score_sample,
)

__all__ = [
    "IGNORE_VALUE",
    "SPLITS",
    "TARGET_VALUE",
    "ReasonSegAccumulator",
    "ReasonSegReport",
    "ReasonSegSample",
    "ReasonSegScores",
    "SampleScore",
    "Shape",
    "SplitScore",
    "gt_mask",
    "image_size",
    "load_sample",
    "load_samples",
    "rasterize_shapes",
    "read_json",
    "read_prediction",
    "score_mask",
    "score_prediction_dir",
    "score_predictions",
    "score_sample",
]
