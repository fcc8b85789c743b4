"""The HTML views in a real headless Chromium: every turn and image renders; the index sorts by IoU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat

from sam3agent.viewer import write_eval_index

IMAGES_JS = """
return Array.from(document.images).map((img) => ({
  alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
  shown: img.getBoundingClientRect().width }));
"""


def check_screenshot(path: Path) -> None:
    with Image.open(path) as shot:
        assert shot.format == "PNG" and shot.width >= 800 and shot.height >= 600
        spread = ImageStat.Stat(shot.convert("L")).stddev[0]
        colours = len(shot.convert("RGB").getcolors(maxcolors=1 << 20) or [])
    assert spread > 10 and colours > 200, f"the screenshot looks blank (stddev {spread:.1f}, {colours} colours)"


def test_trajectory_renders(browser: Any, run_result: Any, saved_run: Path, tmp_path: Path) -> None:
    browser.get((saved_run / "trajectory.html").as_uri())
    browser.execute_script("return document.readyState")
    assert browser.title.startswith("sam3agent: the red cup")
    turns = browser.execute_script("return document.querySelectorAll('section.turn').length")
    assert turns == len(run_result.steps) == 4
    images = browser.execute_script(IMAGES_JS)
    assert len(images) == len(run_result.images) + 1  # every image the model saw, once, + the overlay
    broken = [img["alt"] for img in images if not (img["complete"] and img["width"] > 0 and img["height"] > 0)]
    assert not broken, f"images that did not render: {broken}"
    assert all(img["shown"] > 0 for img in images)
    headings = browser.execute_script("return Array.from(document.querySelectorAll('h2')).map((h) => h.innerText)")
    assert [h.split()[:2] for h in headings] == [["Turn", str(i)] for i in range(1, 5)]
    assert "<script>alert(1)</script>" in browser.execute_script("return document.querySelector('h1').innerText")
    shot = tmp_path / "trajectory.png"
    assert browser.save_screenshot(str(shot))
    check_screenshot(shot)


def _iou_column(browser: Any) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#samples tbody tr')).map((r) => r.cells[3].innerText)")


def test_index_sorts_by_iou(browser: Any, saved_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "eval-run"
    (run / "trajectories" / "s2").mkdir(parents=True)
    (saved_run / "trajectory.html").replace(run / "trajectories" / "s2" / "trajectory.html")
    samples = [("s1", 0.5), ("s2", None), ("s3", 0.9), ("s4", 0.1), ("s5", 0.25)]
    lines = [json.dumps({"id": i, "query": f"query {i}", "status": "answered" if v else "no_mask", "iou": v,
                         "turns": n + 1, "seconds": 10.0 - n}) for n, (i, v) in enumerate(samples)]
    (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
    browser.get(write_eval_index(run).as_uri())
    header = browser.find_element("xpath", "//table[@id='samples']//th[normalize-space(text())='IoU']")
    assert _iou_column(browser) == ["0.500", "–", "0.900", "0.100", "0.250"]
    header.click()
    assert _iou_column(browser) == ["0.100", "0.250", "0.500", "0.900", "–"]
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _iou_column(browser) == ["0.900", "0.500", "0.250", "0.100", "–"]
    browser.find_element("xpath", "//th[normalize-space(text())='seconds']").click()
    seconds = browser.execute_script(
        "return Array.from(document.querySelectorAll('#samples tbody tr')).map((r) => r.cells[5].innerText)")
    assert seconds == ["6.0", "7.0", "8.0", "9.0", "10.0"]
    shot = tmp_path / "index.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as image:
        assert image.format == "PNG" and ImageStat.Stat(image.convert("L")).stddev[0] > 3
    browser.find_element("link text", "s2").click()
    assert browser.title.startswith("sam3agent: ")
    assert browser.execute_script("return document.querySelectorAll('section.turn').length") == 4
