"""How marks look: the palette, the fill opacity, and the sizes that scale with the image.

Colours are ``(r, g, b)`` uint8 triplets (RGB, PIL's order, not OpenCV's BGR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv

__all__ = ["FONT", "MASK_OPACITY", "PALETTE", "PALETTE_RGB", "Style", "color"]

# 20 colours chosen to be far apart from each other (vivid ones first, pale ones last), so that
# neighbouring ids stay tellable apart both as a semi-transparent fill and as an opaque label box.
PALETTE: sv.ColorPalette = sv.ColorPalette.from_hex(
    [
        "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231",
        "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
        "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000",
        "#aaffc3", "#808000", "#ffd8b1", "#000075", "#a9a9a9",
    ]
)  # fmt: skip
PALETTE_RGB: np.ndarray = np.array([c.as_rgb() for c in PALETTE.colors], dtype=np.uint8)
"""``(20, 3)`` uint8 RGB: :data:`PALETTE` as an array."""

MASK_OPACITY = 0.5
"""Weight of the mask colour in a filled pixel (the image keeps ``1 - MASK_OPACITY``)."""

FONT = cv2.FONT_HERSHEY_SIMPLEX
"""The OpenCV font the mask numbers are drawn in."""

_FONT_DIGIT_HEIGHT = cv2.getTextSize("0", FONT, 1.0, 1)[0][1]  # px of a digit at fontScale 1


def color(index: int) -> np.ndarray:
    """The ``(3,)`` uint8 RGB palette colour of detection ``index`` (cycling after 20)."""
    return PALETTE_RGB[index % len(PALETTE_RGB)]


@dataclass(frozen=True)
class Style:
    """Sizes that scale with the image so marks stay readable after downscaling to ~1 MP.

    Attributes:
        font_scale: OpenCV ``fontScale`` of the numbers.
        text_thickness: Stroke width of the numbers in pixels.
        pad: Space between a number and its label box's edge in pixels.
        outline: Width of the opaque band drawn on a mask's inner edge in pixels.
    """

    font_scale: float
    text_thickness: int
    pad: int
    outline: int

    @classmethod
    def for_size(cls, height: int, width: int) -> Style:
        """The style for an image of ``height x width`` pixels (a digit is ~2.4% of its mean side)."""
        side = math.sqrt(height * width)  # ~1000 for the ~1 MP the LLM sees
        digit_px = max(11.0, 0.024 * side)
        return cls(
            font_scale=digit_px / _FONT_DIGIT_HEIGHT,
            text_thickness=max(1, round(digit_px / 10)),
            pad=max(2, round(0.3 * digit_px)),
            outline=max(1, round(0.0025 * side)),
        )
