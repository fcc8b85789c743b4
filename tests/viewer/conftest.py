"""Fixtures of the viewer tests: a real agent run (tiny SAM 3 + scripted model) and a headless Chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from viewer_helpers import BROWSER_FLAGS, QUERY, reject_mask_2, tool

from sam3agent import Agent, AgentConfig, AgentResult
from sam3agent.app.selftest import synthetic_image
from sam3agent.llm.scripted import ScriptedLLM


@pytest.fixture(scope="module")
def run_result(tiny_engine: Any) -> AgentResult:
    """Four turns: a reply without a call (with HTML in it), segment, examine (mask 2 rejected), select."""
    llm = ScriptedLLM(
        [
            "Let me look <img src=x onerror=alert(1)> first & think.",
            tool("segment_phrase", "The cup is red; segment it.", text_prompt="red cup"),
            tool("examine_each_mask", "Three candidates; check each."),
            tool("select_masks_and_return", "Mask 1 is the cup.", final_answer_masks=[1]),
        ],
        verify_replies=reject_mask_2,
    )
    # Exactly three masks whatever the random weights give: overlap_iom=1.0 removes nothing (an
    # overlap cannot exceed the smaller mask) and turns the engine's own duplicate removal off
    config = AgentConfig(score_threshold=0.0, max_masks=3, overlap_iom=1.0)
    return Agent(llm, tiny_engine, config).run(synthetic_image(), QUERY)


def _which(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven by selenium (skipped when absent; a failure when ``CI`` is set)."""
    binary = _which("chromium", "chromium-browser", "google-chrome")
    driver_path = _which("chromedriver", "chromium-driver")
    missing = [name for name, found in (("chromium", binary), ("chromium-driver", driver_path)) if not found]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        message = (f"the browser test needs {', '.join(missing)}; on Debian: "
                   "apt-get install -y chromium chromium-driver")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for flag in BROWSER_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(driver_path)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def saved_run(run_result: AgentResult, tmp_path: Path) -> Path:
    """The run saved with ``result.save`` (so ``trajectory.html`` is the one users open)."""
    return run_result.save(tmp_path / "run")
