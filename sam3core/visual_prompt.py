"""Checking visual prompts (points and a box on one object) before any model sees them.

Shared by :class:`sam3core.tracker.Sam3Tracker` and :class:`sam3core.fake.FakeEngine`, so both
refuse the same malformed prompts with the same messages. Coordinates are pixels of the original,
EXIF-oriented image (x right, y down), as :class:`sam3core.protocol.PointPromptEngine` defines
them. Pure numpy: importing this module loads no model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sam3core.protocol import Box, Point

__all__ = ["VisualPrompt", "check_visual_prompt"]


@dataclass(frozen=True)
class VisualPrompt:
    """A checked visual prompt.

    Attributes:
        points: ``(N, 2)`` float64 ``(x, y)`` pixels inside the image, or ``None``.
        labels: ``(N,)`` int64, 1 on the object / 0 not on it (``None`` with no points).
        box: ``(4,)`` float64 ``(x1, y1, x2, y2)`` clipped to the image, or ``None``.
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None

    def describe(self) -> str:
        """A short description for logs, e.g. ``box [10, 20, 110, 220], 1 point``."""
        parts = []
        if self.box is not None:
            parts.append("box [" + ", ".join(f"{v:g}" for v in self.box) + "]")
        if self.points is not None:
            parts.append(f"{len(self.points)} point(s)")
        return ", ".join(parts)


def check_visual_prompt(points: Sequence[Point] | None, point_labels: Sequence[int] | None, box: Box | None,
                        width: int, height: int) -> VisualPrompt:
    """Validate points, their labels and a box against an image of ``width`` x ``height`` pixels.

    A box that crosses the image border is clipped to it (as exemplar boxes are); one wholly
    outside is refused. Points must lie inside ``[0, width] x [0, height]``.

    Returns:
        The :class:`VisualPrompt` as float64/int64 arrays.

    Raises:
        ValueError: No points and no box; points not ``(N, 2)``; labels given without points, not
            one per point, or not 0/1; no positive point and no box; a box not 4 numbers, with
            ``x2 <= x1`` or ``y2 <= y1``, or outside the image; non-finite numbers; points outside.
    """
    if points is None and box is None:
        raise ValueError("give points, a box, or both")
    pts = labels = None
    if points is not None:
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise ValueError(f"points must be a non-empty list of (x, y) pairs; got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError("points contain NaN or infinite values")
        outside = [i for i, (x, y) in enumerate(pts) if not (0 <= x <= width and 0 <= y <= height)]
        if outside:
            raise ValueError(f"point(s) {[pts[i].tolist() for i in outside]} lie outside the {width}x{height} image")
        labels = np.ones(len(pts), np.int64) if point_labels is None else np.asarray(point_labels, np.int64).ravel()
        if labels.shape != (len(pts),):
            raise ValueError(f"{labels.size} point_labels for {len(pts)} points; give one label per point")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"point_labels must be 1 (on the object) or 0 (not on it), got {labels.tolist()}")
    elif point_labels is not None and len(point_labels) > 0:
        raise ValueError("point_labels given without points")
    arr = None if box is None else _check_box(box, width, height)
    if arr is None and labels is not None and not labels.any():
        raise ValueError("every point is labelled 0 (not on the object); give one on it, or a box")
    return VisualPrompt(pts, labels, arr)


def _check_box(box: Box, width: int, height: int) -> np.ndarray:
    arr = np.asarray(box, dtype=np.float64)
    if arr.shape != (4,):
        raise ValueError(f"box must be (x1, y1, x2, y2), four numbers; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("box contains NaN or infinite values")
    x1, y1, x2, y2 = arr.tolist()
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {[x1, y1, x2, y2]} has x2 <= x1 or y2 <= y1; a box is (x1, y1, x2, y2) pixels")
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise ValueError(f"box {[x1, y1, x2, y2]} lies outside the {width}x{height} image")
    arr[[0, 2]] = arr[[0, 2]].clip(0, width)
    arr[[1, 3]] = arr[[1, 3]].clip(0, height)
    return arr
