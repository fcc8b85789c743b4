"""The offline quickstart runs and its comment is true; the README's picture exists and can be remade."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from docs_helpers import ROOT

QUICKSTART = ROOT / "examples" / "quickstart_offline.py"
SCREENSHOT = ROOT / "docs" / "images" / "trajectory-viewer.png"
MAKE_SCREENSHOT = ROOT / "docs" / "images" / "make_screenshot.py"
SAVED = ("overlay.png", "mask.png", "result.json", "trajectory.json", "trajectory.html")


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_quickstart_runs_and_saves(tmp_path: Path) -> None:
    done = _run(str(QUICKSTART), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status   answered" in done.stdout
    for name in SAVED:
        assert (tmp_path / "run" / name).is_file(), name
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "answered" and len(result["detections"]) == 1
    html = (tmp_path / "run" / "trajectory.html").read_text()
    assert "examine_each_mask" in html and "Reject" in html  # mask 2 was checked and rejected


def test_quickstart_threshold_comment_is_true(tiny_engine: Any) -> None:
    """Random weights score about 0.25 (query x presence, both near 0.5): nothing passes the default 0.5."""
    from PIL import Image
    from skimage import data

    source = QUICKSTART.read_text("utf-8")
    assert re.search(r"^SCORE_THRESHOLD = 0\.0$", source, re.M)
    assert "about 0.25 (0.246-0.253" in source
    for photo in (data.astronaut(), data.chelsea(), data.coffee()):
        image = Image.fromarray(photo)
        for phrase in ("person", "cat", "cup"):
            found = tiny_engine.segment(image, phrase, score_threshold=0.0, max_masks=None, dedup_iou=None)
            assert len(found) == 20  # every query of the tiny model
            assert float(found.confidence.min()) > 0.24 and float(found.confidence.max()) < 0.26
            assert len(tiny_engine.segment(image, phrase)) == 0  # the default threshold, 0.5


def test_readme_picture() -> None:
    from PIL import Image

    assert SCREENSHOT.stat().st_size < 500 * 1024
    with Image.open(SCREENSHOT) as shot:
        assert shot.format == "PNG" and shot.width >= 800 and shot.height >= 600
    readme = (ROOT / "README.md").read_text("utf-8")
    caption = readme.split("docs/images/trajectory-viewer.png", 1)[1][:600]
    assert "Random weights" in caption and "random" in caption.lower()


def test_make_screenshot(tmp_path: Path) -> None:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        message = "needs chromium and chromedriver: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "shot.png"
    done = _run(str(MAKE_SCREENSHOT), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    from PIL import Image, ImageStat

    assert out.stat().st_size < 500 * 1024
    with Image.open(out) as shot:
        assert shot.width >= 1200 and ImageStat.Stat(shot.convert("L")).stddev[0] > 10
