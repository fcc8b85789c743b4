"""Pictures the MLLM (and the user) look at: Set-of-Marks renders, verification views, encoding.

* :mod:`~sam3agent.render.marks`: Set-of-Marks renders (every mask filled, outlined, numbered),
  with the number placement in :mod:`~sam3agent.render.layout` and the palette and sizes in
  :mod:`~sam3agent.render.style`;
* :mod:`~sam3agent.render.views`: verification views of one mask (drawn alone; a zoomed pair);
* :mod:`~sam3agent.render.encode`: resizing to the MLLM's patch grid and pixel budget, encoding;
* :mod:`~sam3agent.render.masks`: the mask crops every renderer works on, and the mask PNG.

Every renderer is pure: it returns a new image and never draws into the caller's array or
``PIL.Image``. Coordinates follow the image convention used everywhere in sam3agent: ``x`` to the
right, ``y`` down, in pixels of the original image; masks are ``(H, W)`` bool at the original
resolution. Numpy images are taken as **RGB** (PIL's order, not OpenCV's BGR).
"""

from __future__ import annotations

from sam3agent.render.encode import encode_image
from sam3agent.render.layout import MarkLabel, label_anchor, label_layout
from sam3agent.render.marks import render_marks, render_overlay
from sam3agent.render.masks import mask_png
from sam3agent.render.style import MASK_OPACITY, PALETTE, PALETTE_RGB
from sam3agent.render.views import render_single, render_zoom_pair
from sam3agent.zoom import zoom_geometry

__all__ = [
    "MASK_OPACITY",
    "PALETTE",
    "PALETTE_RGB",
    "MarkLabel",
    "encode_image",
    "label_anchor",
    "label_layout",
    "mask_png",
    "render_marks",
    "render_overlay",
    "render_single",
    "render_zoom_pair",
    "zoom_geometry",
]
