"""Masks as the renderers read them: checked inputs, masks cut to their boxes, the mask PNG.

Coordinates: ``x`` to the right, ``y`` down, in pixels of the original image; masks are
``(H, W)`` bool at the original resolution; numpy images are RGB.

Every renderer works on a mask's bounding-box crop (never a per-mask full-image copy), which is
what keeps one Set-of-Marks render of a 1024x1024 image with a handful of masks at a few ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv
from PIL import Image

__all__ = ["MaskCrop", "mask_crops", "mask_png", "tighten", "to_rgb_array"]


@dataclass(frozen=True)
class MaskCrop:
    """A mask cut to a box: ``mask`` is ``(h, w)`` bool, its top-left pixel at ``(x0, y0)``."""

    mask: np.ndarray
    x0: int
    y0: int

    @property
    def x1(self) -> int:
        """The first column right of the crop (exclusive end)."""
        return self.x0 + self.mask.shape[1]

    @property
    def y1(self) -> int:
        """The first row below the crop (exclusive end)."""
        return self.y0 + self.mask.shape[0]


def to_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """A fresh, writable ``(H, W, 3)`` uint8 RGB copy of ``image`` (never a view of it).

    Args:
        image: A ``PIL.Image`` of any mode, or a uint8 array of shape ``(H, W)``, ``(H, W, 1)``,
            ``(H, W, 3)`` (RGB) or ``(H, W, 4)`` (RGBA; alpha is dropped).

    Raises:
        TypeError: If ``image`` is neither an array nor a ``PIL.Image``.
        ValueError: For a non-uint8 array or an unsupported shape.
    """
    if isinstance(image, Image.Image):
        return np.array(image if image.mode == "RGB" else image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array or PIL.Image.Image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image array must be uint8 RGB, got dtype {image.dtype}; convert it first")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        if image.shape[2] == 1:
            return np.repeat(image, 3, axis=2)
        return np.array(image[:, :, :3], order="C")  # always a copy
    raise ValueError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")


def mask_crops(detections: sv.Detections, height: int, width: int) -> list[MaskCrop]:
    """Each detection's mask cut to the bounding box of its pixels (an empty mask gives a 0x0 crop).

    Args:
        detections: ``N`` detections with dense ``(N, height, width)`` masks or an
            ``sv.CompactMask``. ``xyxy`` is used only as a hint: a box is trusted when it holds
            every pixel of its mask, else the whole mask is scanned.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        ``N`` crops in detection order.

    Raises:
        ValueError: If the detections have no masks or the masks are not ``(height, width)``.
    """
    n = len(detections)
    if n == 0:
        return []
    masks = detections.mask
    if masks is None:
        raise ValueError("detections have no masks; rendering needs detections.mask of shape (N, H, W)")
    if isinstance(masks, sv.CompactMask):
        if tuple(masks.image_shape) != (height, width):
            raise ValueError(f"masks are for a {masks.image_shape} image, the image is {(height, width)}")
        crops = []
        for i in range(n):
            x0, y0 = (int(v) for v in masks.offsets[i])
            crops.append(tighten(MaskCrop(masks.crop(i), x0, y0)))
        return crops
    if tuple(masks.shape) != (n, height, width):
        raise ValueError(f"masks have shape {tuple(masks.shape)}, expected {(n, height, width)}")
    crops = []
    for i in range(n):
        m = masks[i]
        m = np.ascontiguousarray(m if m.dtype == bool else m != 0)
        crops.append(tighten(_hinted_crop(m, detections.xyxy[i])))
    return crops


def _hinted_crop(mask: np.ndarray, xyxy: np.ndarray) -> MaskCrop:
    """``mask`` cut to the (inclusive, rounded outward) box ``xyxy`` if no pixel lies outside it."""
    height, width = mask.shape
    if not np.all(np.isfinite(xyxy)):
        return MaskCrop(mask, 0, 0)
    x0, y0 = max(0, math.floor(xyxy[0])), max(0, math.floor(xyxy[1]))
    x1, y1 = min(width, math.ceil(xyxy[2]) + 1), min(height, math.ceil(xyxy[3]) + 1)
    if x0 < x1 and y0 < y1:
        window = mask[y0:y1, x0:x1]
        if cv2.countNonZero(window.view(np.uint8)) == cv2.countNonZero(mask.view(np.uint8)):
            return MaskCrop(window, x0, y0)
    return MaskCrop(mask, 0, 0)


def tighten(crop: MaskCrop) -> MaskCrop:
    """The same mask cut to the bounding box of its True pixels (0x0 when it has none)."""
    x, y, w, h = cv2.boundingRect(crop.mask.view(np.uint8))  # uint8 input: bbox of non-zero pixels
    return MaskCrop(crop.mask[y : y + h, x : x + w], crop.x0 + x, crop.y0 + y)


def mask_png(detections: sv.Detections, height: int, width: int) -> Image.Image:
    """An instance-id image of the detections.

    Args:
        detections: ``N`` detections with ``(N, height, width)`` masks, best first.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        A ``(width, height)`` ``PIL.Image``: 0 is background, ``i + 1`` marks detection ``i``. Where
        masks overlap the earlier detection keeps the pixel (detections are sorted by score, so the
        highest score wins). Mode ``"L"`` when ``N < 256``, else ``"I;16"``.

    Raises:
        ValueError: If the masks do not match ``(height, width)`` or ``N >= 65536``.
    """
    n = len(detections)
    if n >= 65536:
        raise ValueError(f"{n} detections do not fit a 16-bit id image")
    ids = np.zeros((height, width), np.uint8 if n < 256 else np.uint16)
    for i, crop in enumerate(mask_crops(detections, height, width)):
        window = ids[crop.y0 : crop.y1, crop.x0 : crop.x1]
        window[crop.mask & (window == 0)] = i + 1
    return Image.fromarray(ids)
