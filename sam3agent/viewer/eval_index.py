"""The index page of an eval run: ``index.html`` from the run folder's ``samples.jsonl``.

:func:`write_eval_index` writes a table sortable by clicking a header (a few lines of inline
JavaScript, ``templates/sort_table.js``), linking each sample's ``trajectories/<id>/trajectory.html``
when it exists. ``templates/eval_index.html`` lays it out, autoescaping every text that came from a
model, a user or a data file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sam3agent.viewer.templating import format_number, render_page, status_kind

__all__ = ["load_samples", "render_eval_index", "write_eval_index"]

logger = logging.getLogger(__name__)

# The table's columns as (header, type); "num" columns sort numerically on each cell's data-sort.
_COLUMNS = (("id", "text"), ("query", "text"), ("status", "text"), ("IoU", "num"), ("turns", "num"),
            ("seconds", "num"))


def load_samples(path: Path) -> list[dict[str, Any]]:
    """Read ``samples.jsonl``: one JSON object per line; the last record of an id wins.

    Unreadable lines (a torn last line of a run still in progress or killed) are skipped with a
    warning.

    Args:
        path: The JSONL file.

    Returns:
        The records, in the order their ids first appeared.
    """
    records: dict[str, dict[str, Any]] = {}
    lines = path.read_text("utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            where = "the last line (torn write?)" if number == len(lines) else f"line {number}"
            logger.warning("%s: skipping %s: %s", path, where, e)
            continue
        if not isinstance(record, dict) or "id" not in record:
            logger.warning("%s: skipping line %d: not an object with an 'id'", path, number)
            continue
        records[str(record["id"])] = record
    return list(records.values())


@dataclass(frozen=True)
class _Row:
    """One sample's row; ``numbers`` holds ``(data-sort, text)`` of the IoU, turns and seconds cells."""

    sample_id: str
    link: str | None
    query: str
    status: str
    status_kind: str
    numbers: list[tuple[str, str]]


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _number(value: float | None, digits: int) -> tuple[str, str]:
    """A numeric cell's sort key (empty when missing, so it sorts last) and its text."""
    return ("" if value is None else f"{value:.6g}"), format_number(value, digits)


def _trajectory_link(run_dir: Path, sample_id: str) -> str | None:
    """The relative URL of the sample's trajectory page, or ``None`` if absent or outside ``trajectories/``."""
    base = (run_dir / "trajectories").resolve()
    target = (base / sample_id / "trajectory.html").resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return f"trajectories/{quote(sample_id, safe='')}/trajectory.html"


def _row(run_dir: Path, record: dict[str, Any]) -> _Row:
    sample_id = str(record["id"])
    status = str(record.get("status", "?"))
    iou, turns, seconds = (_float(record.get(k)) for k in ("iou", "turns", "seconds"))
    return _Row(sample_id=sample_id, link=_trajectory_link(run_dir, sample_id), query=str(record.get("query", "")),
                status=status, status_kind=status_kind(status),
                numbers=[_number(iou, 3), _number(turns, 0), _number(seconds, 1)])


def render_eval_index(run_dir: Path, records: Sequence[dict[str, Any]]) -> str:
    """The ``index.html`` page of an eval run (see :func:`write_eval_index`).

    Args:
        run_dir: The eval run folder (its name titles the page; trajectory links are checked in it).
        records: The samples, as :func:`load_samples` returns them.

    Returns:
        The page as a string.
    """
    ious = [v for v in (_float(r.get("iou")) for r in records) if v is not None]
    counts: dict[str, int] = {}
    for r in records:
        counts[str(r.get("status", "?"))] = counts.get(str(r.get("status", "?")), 0) + 1
    stats = " · ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    mean = f"mean IoU {sum(ious) / len(ious):.3f} over {len(ious)}" if ious else "no IoU yet"
    return render_page("eval_index.html", name=run_dir.name, stats=stats, mean=mean, columns=_COLUMNS,
                       rows=[_row(run_dir, r) for r in records])


def write_eval_index(run_dir: Path) -> Path:
    """Write ``run_dir/index.html`` from ``run_dir/samples.jsonl``.

    Each line needs ``id``, ``query``, ``status``, ``iou`` (float or null), ``turns`` and
    ``seconds``; other fields are ignored, missing ones shown as blanks.

    Args:
        run_dir: The eval run folder.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: If ``samples.jsonl`` is missing.
    """
    run_dir = Path(run_dir)
    records = load_samples(run_dir / "samples.jsonl")
    out = run_dir / "index.html"
    out.write_text(render_eval_index(run_dir, records), "utf-8")
    return out
