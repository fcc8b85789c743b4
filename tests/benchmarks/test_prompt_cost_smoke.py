"""Smoke test of benchmarks/prompt_cost.py on a small image: structure and the counts' invariants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_helpers import load_benchmark


def test_prompt_cost_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("prompt_cost")
    prompt = tmp_path / "long.txt"
    prompt.write_text("word " * 5000, encoding="utf-8")
    code = bench.main(["--height", "300", "--width", "400", "--system-prompt", str(prompt), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)["per_sample"]
    default, paper, custom = report["default"], report["paper"], report["paper + prompt file"]
    assert custom["system_prompt_words"] == 5000 and custom["verify_prompt_words"] == paper["verify_prompt_words"]
    # the same trajectories: only the system prompt's words differ, once per main-loop request
    extra = custom["prompt_words"] - paper["prompt_words"]
    assert custom["main_requests"] == paper["main_requests"] >= 2
    assert extra == pytest.approx(paper["main_requests"] * (5000 - paper["system_prompt_words"]))
    # paper re-examines every mask: more requests and images than the default
    assert paper["requests"] > default["requests"] and paper["images"] > default["images"]
    # a 400x300 image is under both budgets: the raw image goes at its own size in both presets
    assert all(r["visual_tokens"] > 0 and r["megapixels"] > 0 for r in report.values())
