"""The verifier's two-panel close-up: geometry and picture."""

from __future__ import annotations

import numpy as np
import pytest

from sam3agent.render import PALETTE_RGB
from sam3agent.zoom import render_zoom_context, zoom_geometry


def test_small_mask_gets_the_minimum_margin_and_stays_centred() -> None:
    zoom, context = zoom_geometry((100, 50, 10, 20), mask_area=100, height=400, width=600)
    # 20% of 10 px is under the 16 px minimum: the box grows to 26 x 36, centred on the mask's box
    assert zoom == pytest.approx((92.0, 42.0, 26.0, 36.0))
    share = 100 / (26 * 36)  # 0.107: above 5%, so the context box grows by sqrt(share / 0.05)
    ratio = np.sqrt(share / 0.05)
    assert context[2:] == pytest.approx((26 * ratio, 36 * ratio))
    assert context[0] + context[2] / 2 == pytest.approx(105.0)


def test_boxes_are_shifted_inside_the_image_not_shrunk() -> None:
    zoom, context = zoom_geometry((590, 0, 10, 10), mask_area=100, height=400, width=600)
    for x, y, w, h in (zoom, context):
        assert x >= 0 and y >= 0 and x + w <= 600 + 1e-9 and y + h <= 400 + 1e-9
    assert zoom[2] == pytest.approx(26.0) and zoom[0] == pytest.approx(574.0)


def test_large_mask_zoom_grows_and_is_capped_by_the_image() -> None:
    zoom, context = zoom_geometry((0, 0, 500, 300), mask_area=500 * 300, height=320, width=520)
    assert zoom[2] <= 520 and zoom[3] <= 320
    assert context == pytest.approx((0.0, 0.0, 520.0, 320.0))


def _image(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_picture_layout_follows_the_context_crop_shape() -> None:
    image = _image(300, 400)
    tall = np.zeros((300, 400), bool)
    tall[50:250, 190:210] = True
    wide = np.zeros((300, 400), bool)
    wide[140:160, 50:350] = True
    side = np.asarray(render_zoom_context(image, tall, PALETTE_RGB, panel_side=200, gap=8))
    stacked = np.asarray(render_zoom_context(image, wide, PALETTE_RGB, panel_side=200, gap=8))
    # side by side, both panels 200 px tall: the context crop (110 x 300 px) is 73 px wide, the
    # zoom crop (49 x 300) 33 px
    assert side.shape[:2] == (200, 73 + 8 + 33)
    # stacked, both panels 200 px wide: context (400 x 110) 55 px tall, zoom (400 x 49) 25 px
    assert stacked.shape[:2] == (55 + 8 + 25, 200)
    assert image.sum() == _image(300, 400).sum()  # the input is not drawn into


def test_context_panel_keeps_pixels_and_zoom_panel_tints_the_mask() -> None:
    image = np.full((200, 200, 3), 128, np.uint8)
    mask = np.zeros((200, 200), bool)
    mask[90:110, 60:140] = True
    out = np.asarray(render_zoom_context(image, mask, PALETTE_RGB, panel_side=100, gap=0))
    # the context crop is 200 x 110 px, so stacked, scaled by 0.5: its panel is the top 55 rows
    context, zoom = out[:55], out[55:]
    assert (context == 128).all(axis=2).mean() > 0.9      # untouched but for the box outline
    assert not (context == 128).all(axis=2).all()         # the box is drawn
    assert (zoom != 128).any(axis=2).mean() > 0.2          # the mask covers a good share, tinted


def test_empty_or_mismatched_mask_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        render_zoom_context(_image(20, 20), np.zeros((20, 20), bool), PALETTE_RGB)
    with pytest.raises(ValueError, match="does not match"):
        render_zoom_context(_image(20, 20), np.ones((10, 20), bool), PALETTE_RGB)
