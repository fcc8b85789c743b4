"""Image loading: every input kind, EXIF orientation, high bit depth, and clear errors."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam3core.image import ImageHandle, prepare_image


def _rgb(h: int = 7, w: int = 5) -> np.ndarray:
    return np.random.RandomState(1).randint(0, 256, (h, w, 3), dtype=np.uint8)


def test_same_pixels_same_digest_across_sources(tmp_path: Path) -> None:
    arr = _rgb()
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    handles = [prepare_image(arr), prepare_image(path), prepare_image(str(path)),
               prepare_image(buf.getvalue()), prepare_image(Image.fromarray(arr))]
    assert len({h.digest for h in handles}) == 1
    assert all(h.size == (5, 7) for h in handles)
    np.testing.assert_array_equal(handles[1].array(), arr)
    assert prepare_image(handles[0]) is handles[0]
    assert prepare_image(_rgb(7, 6)).digest != handles[0].digest


def test_exif_orientation_applied(tmp_path: Path) -> None:
    arr = np.zeros((10, 20, 3), np.uint8)  # stored landscape
    arr[:, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=100)
    handle = prepare_image(path)
    assert (handle.width, handle.height) == (10, 20)  # displayed portrait
    # the white left band of the stored image is the top band once rotated clockwise
    assert handle.array()[:4].mean() > 200 and handle.array()[-4:].mean() < 50


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "YCbCr"])
def test_pil_modes_become_rgb(mode: str) -> None:
    im = Image.fromarray(_rgb()).convert(mode)
    handle = prepare_image(im)
    assert handle.image.mode == "RGB"
    assert handle.array().shape == (7, 5, 3)
    assert handle.array().dtype == np.uint8


def test_transparent_pixels_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[:2, :, 3] = 255  # top half opaque black, bottom half transparent
    out = prepare_image(rgba).array()
    assert (out[:2] == 0).all() and (out[2:] == 255).all()


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    arr16 = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    pil16 = Image.fromarray(arr16)
    assert pil16.mode.startswith("I;16")
    for src in (pil16, arr16):
        out = prepare_image(src).array()[0, :, 0]
        assert out.tolist() == [0, 100, 255]


def test_float_image_in_unit_range_scaled() -> None:
    im = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert im.mode == "F"
    assert prepare_image(im).array()[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("shape", [(6, 4), (6, 4, 1), (6, 4, 3), (6, 4, 4)])
def test_numpy_layouts(shape: tuple[int, ...]) -> None:
    handle = prepare_image(np.full(shape, 9, np.uint8))
    assert isinstance(handle, ImageHandle)
    assert handle.size == (4, 6)


def test_caller_array_not_modified_and_handle_read_only() -> None:
    arr = _rgb()
    before = arr.copy()
    handle = prepare_image(arr)
    np.testing.assert_array_equal(arr, before)
    with pytest.raises(ValueError):
        handle.array()[0, 0, 0] = 1


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (np.zeros((0, 5, 3), np.uint8), "zero size"),
        (np.zeros((4, 5, 2), np.uint8), "expected (H, W)"),
        (np.zeros((4, 5, 3), np.float32), "dtype float32"),
        (b"", "empty"),
        (b"not an image at all", "cannot decode"),
        (12345, "unsupported image type"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad: object, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        prepare_image(bad)  # type: ignore[arg-type]


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        prepare_image(tmp_path / "missing.jpg")
    with pytest.raises(ValueError, match="directory"):
        prepare_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        prepare_image(tmp_path / "empty.jpg")
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ValueError, match="cannot read"):
        prepare_image(tmp_path / "junk.jpg")
    truncated = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(truncated, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(truncated.getvalue()[:200])
    with pytest.raises(ValueError, match=r"cut\.jpg"):
        prepare_image(tmp_path / "cut.jpg")
