"""The pixel limit of prepare_image: decompression bombs through the Python API and the CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam3core import image as image_module
from sam3core.image import prepare_image


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 20000x20000 PNG of ~50 KB (400 megapixels once decoded)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(_png(20000, 20000, mode="1"))
    return path


def test_default_limit_matches_the_servers() -> None:
    from sam3agent.app.serve import common

    assert image_module.DEFAULT_MAX_PIXELS == common.DEFAULT_MAX_PIXELS == 40_000_000


def test_decompression_bomb_is_a_value_error_naming_count_limit_and_fix(bomb: Path) -> None:
    for source in (bomb, str(bomb), bomb.read_bytes()):
        with pytest.raises(ValueError) as info:
            prepare_image(source)
        message = str(info.value)
        assert "400,000,000 pixels" in message and "40,000,000" in message
        assert "max_pixels=" in message and "DEFAULT_MAX_PIXELS" in message


def test_limit_is_checked_from_the_header_for_images_pil_accepts() -> None:
    data = _png(7000, 6000, mode="1")  # 42 megapixels: under PIL's guard, over ours
    with pytest.raises(ValueError, match=r"7000x6000 = 42,000,000 pixels, over the limit of 40,000,000"):
        prepare_image(data)


def test_max_pixels_argument_and_module_default(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png(100, 50)
    with pytest.raises(ValueError, match="100x50 = 5,000 pixels, over the limit of 4,999"):
        prepare_image(data, max_pixels=4_999)
    assert prepare_image(data, max_pixels=5_000).size == (100, 50)
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        prepare_image(np.zeros((50, 100, 3), np.uint8), max_pixels=1_000)
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        prepare_image(Image.new("RGB", (100, 50)), max_pixels=1_000)
    monkeypatch.setattr(image_module, "DEFAULT_MAX_PIXELS", 1_000)
    with pytest.raises(ValueError, match="over the limit of 1,000"):
        prepare_image(data)
    with pytest.raises(ValueError, match="max_pixels must be positive"):
        prepare_image(data, max_pixels=0)


def test_limit_above_pils_own_guard_says_to_raise_that_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # PIL refuses past 2,000 pixels
    data = _png(100, 50)
    with pytest.raises(ValueError, match=r"within max_pixels=10,000.*PIL\.Image\.MAX_IMAGE_PIXELS"):
        prepare_image(data, max_pixels=10_000)
    with pytest.raises(ValueError, match="5,000 pixels, over the limit of 4,000"):
        prepare_image(data, max_pixels=4_000)


def test_cli_run_on_a_decompression_bomb_exits_2(bomb: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sam3agent.app.cli import main
    from sam3agent.llm.server import ScriptedOpenAIServer

    stopped = ScriptedOpenAIServer().start()
    stopped.stop()
    code = main(["run", str(bomb), "the cup", "--llm-base-url", stopped.base_url, "--model", "scripted"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "400,000,000 pixels" in err and "Traceback" not in err
