"""Make docs/images/trajectory-viewer.png, the README's picture: the trajectory viewer of an offline run.

It runs ``examples/quickstart_offline.py`` (tiny *random* SAM 3 + a scripted model, on scikit-image's
astronaut photo), opens the saved ``trajectory.html`` in headless Chromium through selenium, puts a
banner on top saying that the weights are random, and saves a screenshot as a palette PNG (under
500 KB). Needs Debian's browser and driver (``apt-get install -y chromium chromium-driver``) and the
``dev`` extra (selenium, scikit-image)::

    .venv/bin/python docs/images/make_screenshot.py                 # writes docs/images/trajectory-viewer.png
    .venv/bin/python docs/images/make_screenshot.py --out /tmp/shot.png
"""

from __future__ import annotations

import argparse
import runpy
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_OUT = HERE / "trajectory-viewer.png"
MAX_BYTES = 500 * 1024
WIDTH, HEIGHT = 1280, 1500
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}")
BANNER = ("Random weights: a tiny randomly initialised SAM 3 and a scripted model "
          "(examples/quickstart_offline.py). The masks are meaningless; this shows the viewer, not accuracy.")
BANNER_JS = """
const note = document.createElement('div');
note.textContent = arguments[0];
note.setAttribute('style', 'background:#fff3cd;color:#664d03;border:2px solid #e0b000;padding:10px 14px;' +
  'margin:0 0 12px 0;font:600 16px/1.4 sans-serif;border-radius:6px');
document.body.insertBefore(note, document.body.firstChild);
window.scrollTo(0, 0);
"""


def _which(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


def run_quickstart(out: Path) -> Path:
    """Run ``examples/quickstart_offline.py --out OUT``; return the saved run's folder."""
    main = runpy.run_path(str(ROOT / "examples" / "quickstart_offline.py"))["main"]
    if main(["--out", str(out)]) != 0:
        raise RuntimeError("the quickstart run did not answer; see its output above")
    return out


def screenshot(page: Path, out: Path, profile: Path) -> None:
    """Open ``page`` in headless Chromium, add the random-weights banner, save a screenshot to ``out``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _which("chromium", "chromium-browser", "google-chrome"), _which("chromedriver")
    if not binary or not driver_path:
        raise RuntimeError("needs chromium and chromedriver: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.set_page_load_timeout(60)
        driver.get(page.as_uri())
        driver.execute_script(BANNER_JS, BANNER)
        if not driver.save_screenshot(str(out)):
            raise RuntimeError("Chromium did not save a screenshot")
    finally:
        driver.quit()


def shrink(path: Path) -> int:
    """Re-save ``path`` as an optimised 256-colour PNG; return its size in bytes."""
    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    return path.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PNG to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sam3agent-screenshot-") as tmp:
        run = run_quickstart(Path(tmp) / "run")
        shot = Path(tmp) / "shot.png"
        screenshot(run / "trajectory.html", shot, Path(tmp) / "profile")
        size = shrink(shot)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, args.out)
    print(f"wrote {args.out} ({size / 1024:.0f} KB)")
    if size > MAX_BYTES:
        print(f"warning: over {MAX_BYTES // 1024} KB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
