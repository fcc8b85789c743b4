"""The eval index page: samples.jsonl (torn last line, resumed ids) -> a sortable, linked, escaped table."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from sam3agent.viewer import load_samples, write_eval_index

RECORDS = [
    {"id": "a", "query": "the <b>left</b> cup", "status": "answered", "iou": 0.5, "turns": 3, "seconds": 4.25},
    {"id": "b", "query": "no such thing", "status": "no_mask", "iou": None, "turns": 1, "seconds": 1.0},
    {"id": "d", "query": "first try", "status": "error", "iou": None, "turns": 0, "seconds": 0.1},
    {"id": "../../escape", "query": "sneaky", "status": "answered", "iou": 0.9, "turns": 2, "seconds": 2.0},
    {"id": "my sample", "query": "spaces", "status": "budget_exhausted", "iou": 0.0, "turns": 40, "seconds": 60},
    {"id": "d", "query": "resumed", "status": "answered", "iou": 0.75, "turns": 5, "seconds": 9.5, "extra": [1]},
]


def make_run(tmp_path: Path, torn: bool = True) -> Path:
    run = tmp_path / "run-1"
    run.mkdir()
    lines = [json.dumps(r) for r in RECORDS]
    (run / "samples.jsonl").write_text("\n".join(lines) + ("\n" + '{"id": "e", "que' if torn else "\n"))
    for sample in ("a", "my sample"):
        (run / "trajectories" / sample).mkdir(parents=True)
        (run / "trajectories" / sample / "trajectory.html").write_text("<html></html>")
    (tmp_path / "escape").mkdir()
    (tmp_path / "escape" / "trajectory.html").write_text("outside")
    return run


def rows_of(html: str) -> list[str]:
    return re.findall(r"<tr><td data-sort=.*?</tr>", html)


def test_index_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = make_run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sam3agent.viewer"):
        out = write_eval_index(run)
    assert out == run / "index.html"
    assert any("the last line (torn write?)" in r.message for r in caplog.records)
    html = out.read_text("utf-8")
    rows = rows_of(html)
    assert len(rows) == 5  # e is torn, d appears once (its last record)
    assert 'href="trajectories/a/trajectory.html"' in rows[0]
    assert 'href="trajectories/my%20sample/trajectory.html"' in html
    assert "href" not in rows[1] and "href" not in rows[3]  # no file / outside trajectories/
    assert "resumed" in rows[2] and "first try" not in html and 'data-sort="0.75"' in rows[2]
    assert "&lt;b&gt;left&lt;/b&gt;" in rows[0] and "<b>left" not in html
    assert '<td class="num" data-sort="">–</td>' in rows[1]
    assert "5 sample(s)" in html and "mean IoU 0.537 over 4" in html
    assert "<script>" in html and "http" not in html


def test_samples_order_and_resume(tmp_path: Path) -> None:
    records = load_samples(make_run(tmp_path, torn=False) / "samples.jsonl")
    assert [r["id"] for r in records] == ["a", "b", "d", "../../escape", "my sample"]
    assert records[2]["query"] == "resumed"


def test_missing_samples_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_eval_index(tmp_path)


def test_empty_run(tmp_path: Path) -> None:
    (tmp_path / "samples.jsonl").write_text("")
    html = write_eval_index(tmp_path).read_text()
    assert "0 sample(s)" in html and "no IoU yet" in html
