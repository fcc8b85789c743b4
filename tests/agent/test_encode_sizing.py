"""The size images are sent at: Qwen2-VL's ``smart_resize``, and the guards around it."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from sam3agent.render import encode_image
from sam3agent.render.encode import MAX_ASPECT, grid_size

BUDGET = {"min_pixels": 256 * 28 * 28, "max_pixels": 1280 * 28 * 28}


def _server_keeps(size: tuple[int, int], patch: int, min_pixels: int, max_pixels: int) -> bool:
    """Whether the server's processor leaves an image of ``size`` (w, h) at that size."""
    w, h = size
    return smart_resize(h, w, factor=patch, min_pixels=min_pixels, max_pixels=max_pixels) == (h, w)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((640, 480), (644, 476)),  # in budget: 22.9 and 17.1 patches round to 23 and 17
        ((588, 392), (588, 392)),  # already on the grid and in budget: unchanged
        ((1024, 1024), (980, 980)),  # 37x37 patches is over budget: scaled to 1280 patches, floored
        ((301, 177), (588, 364)),  # 11x6 patches is under budget: scaled to 256 patches, ceiled
    ],
)
def test_grid_size_is_smart_resize(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert grid_size(*size, patch=28, **BUDGET) == expected
    assert smart_resize(size[1], size[0], factor=28, **BUDGET) == expected[::-1]


@pytest.mark.parametrize("patch", [28, 32])
def test_ordinary_images_get_exactly_the_servers_size(patch: int) -> None:
    min_pixels, max_pixels = 256 * patch * patch, 1280 * patch * patch
    rng = np.random.default_rng(0)
    for _ in range(300):
        w, h = (int(v) for v in rng.integers(patch, 6000, 2))
        if max(w, h) / min(w, h) > MAX_ASPECT / 2:
            continue
        size = grid_size(w, h, patch=patch, min_pixels=min_pixels, max_pixels=max_pixels)
        assert size == smart_resize(h, w, factor=patch, min_pixels=min_pixels, max_pixels=max_pixels)[::-1]
        assert _server_keeps(size, patch, min_pixels, max_pixels), (w, h, size)


def test_encode_image_sends_the_grid_size() -> None:
    part = encode_image(Image.new("RGB", (640, 480), (90, 20, 200)))
    assert (part.width, part.height) == (644, 476)


@pytest.mark.parametrize("size", [(500, 3), (3, 500), (1000, 10), (1, 1), (27, 900)])
def test_a_side_under_one_patch_keeps_the_aspect(size: tuple[int, int]) -> None:
    # A one-patch min_pixels: smart_resize alone would round the 3 px side to zero patches and
    # grow the image back from its unrounded area, e.g. 500x3 to 364x28 (aspect 13 for 167).
    w, h = size
    budget = {"min_pixels": 28 * 28, "max_pixels": 1280 * 28 * 28}
    gw, gh = grid_size(w, h, patch=28, **budget)
    assert gw % 28 == 0 and gh % 28 == 0 and min(gw, gh) == 28
    s = 28 / min(w, h)  # the short side scaled to one patch; the long side follows, within a patch
    assert abs(max(gw, gh) - max(w, h) * s) <= 28
    assert (gw >= gh) == (w >= h)
    assert _server_keeps((gw, gh), 28, **budget)
    if size == (500, 3):
        assert smart_resize(3, 500, factor=28, **budget) == (28, 364)


@pytest.mark.parametrize("size", [(300, 1), (1, 300), (5000, 10), (8100, 40), (10000, 1), (6000, 28), (30000, 100)])
def test_an_extreme_aspect_is_squeezed_to_what_the_server_accepts(size: tuple[int, int]) -> None:
    w, h = size
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(h, w, factor=28, **BUDGET)
    gw, gh = grid_size(w, h, patch=28, **BUDGET)
    assert gw % 28 == 0 and gh % 28 == 0 and min(gw, gh) >= 28
    assert max(gw, gh) / min(gw, gh) <= MAX_ASPECT
    assert BUDGET["min_pixels"] <= gw * gh <= BUDGET["max_pixels"]
    assert (gw > gh) == (w > h)
    assert _server_keeps((gw, gh), 28, **BUDGET)
    part = encode_image(Image.new("RGB", size, (200, 10, 10)))
    assert (part.width, part.height) == (gw, gh)


def test_rounding_past_the_aspect_limit_is_cut_back() -> None:
    # 8000x40 is exactly at the limit, but 40 px rounds down to one patch while 8000 px rounds to
    # 286 patches: smart_resize's own answer (28 x 8008) has an aspect of 286, which it would
    # itself refuse when the server receives it.
    assert smart_resize(40, 8000, factor=28, **BUDGET) == (28, 8008)
    gw, gh = grid_size(8000, 40, patch=28, **BUDGET)
    assert gw / gh <= MAX_ASPECT and _server_keeps((gw, gh), 28, **BUDGET)


@pytest.mark.parametrize("patch", [14, 28, 32])
def test_any_budget_gives_a_grid_size_within_max_pixels(patch: int) -> None:
    rng = np.random.default_rng(patch)
    for _ in range(400):
        w, h = (max(1, int(math.exp(v))) for v in rng.uniform(0, 9.5, 2))
        max_pixels = patch * patch * int(rng.integers(1, 3000))
        min_pixels = int(rng.integers(0, max_pixels + 1))
        gw, gh = grid_size(w, h, patch=patch, min_pixels=min_pixels, max_pixels=max_pixels)
        case = (w, h, min_pixels, max_pixels, gw, gh)
        assert gw % patch == 0 and gh % patch == 0 and gw >= patch and gh >= patch, case
        assert gw * gh <= max_pixels and max(gw, gh) / min(gw, gh) <= MAX_ASPECT, case


def test_tiny_budgets_at_the_edges() -> None:
    for w, h in itertools.product([1, 13, 14, 15, 27, 28, 29, 5000], repeat=2):
        assert grid_size(w, h, patch=28, min_pixels=0, max_pixels=28 * 28) == (28, 28)


def test_importing_the_package_does_not_load_transformers() -> None:
    code = "import sys, sam3agent, sam3agent.render, sam3agent.agent; print('transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
