"""``summary.json`` and ``summary.md``: our scores beside the paper's Table 8, and run statistics.

The summary is computed from the sample records alone (plus the dataset's scores, which the
caller computes from the same records), so a resumed run, a merged set of shards and an
uninterrupted run give the same summary. Everything that depends on the clock lives under the
``timing`` key; all other keys are deterministic given the records.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evals.records import STATUSES
from evals.rundir import RunPaths, atomic_write_json, atomic_write_text

SUMMARY_SCHEMA_VERSION = 1

PAPER_SOURCE = "SAM 3 paper, Table 8 (SAM 3 Agent; percent)"

PAPER_TABLE8: dict[str, dict[str, float]] = {
    "SAM 3 Agent + Qwen2.5-VL 7B": {"reasonseg_val": 65.4, "reasonseg_test": 62.6, "reasonseg_test_short": 59.1,
                                    "reasonseg_test_long": 63.7, "omnilabel_descr": 36.5, "omnilabel_descr_S": 52.6,
                                    "omnilabel_descr_M": 34.3, "omnilabel_descr_L": 26.7},
    "SAM 3 Agent + Qwen2.5-VL 72B": {"reasonseg_val": 75.0, "reasonseg_test": 71.8, "reasonseg_test_short": 71.3,
                                     "reasonseg_test_long": 72.0, "omnilabel_descr": 44.7, "omnilabel_descr_S": 58.4,
                                     "omnilabel_descr_M": 42.6, "omnilabel_descr_L": 36.1},
    "SAM 3 Agent + Llama4 Maverick": {"reasonseg_val": 71.5, "reasonseg_test": 69.3, "reasonseg_test_short": 70.9,
                                      "reasonseg_test_long": 68.8, "omnilabel_descr": 36.2,
                                      "omnilabel_descr_S": 47.5, "omnilabel_descr_M": 34.9,
                                      "omnilabel_descr_L": 28.1},
    "SAM 3 Agent + Gemini 2.5 Pro": {"reasonseg_val": 76.0, "reasonseg_test": 73.8, "reasonseg_test_short": 74.0,
                                     "reasonseg_test_long": 73.7, "omnilabel_descr": 46.7, "omnilabel_descr_S": 54.6,
                                     "omnilabel_descr_M": 46.2, "omnilabel_descr_L": 38.7},
    "prior best (LISA-13B / REAL)": {"reasonseg_val": 65.0, "reasonseg_test": 61.3, "reasonseg_test_short": 55.4,
                                     "reasonseg_test_long": 63.2, "omnilabel_descr": 36.5, "omnilabel_descr_S": 54.4,
                                     "omnilabel_descr_M": 33.2, "omnilabel_descr_L": 25.5},
}
"""Paper Table 8 (the seeds' version), in percent, keyed by row then by column key."""


@dataclass(frozen=True)
class Column:
    """One column of the comparison table.

    Attributes:
        title: Header text, e.g. ``"gIoU test short"``.
        ours: Our value in percent (None when undefined).
        paper_key: Key into :data:`PAPER_TABLE8` rows (None: the paper has no such column).
    """

    title: str
    ours: float | None
    paper_key: str | None


def comparison_table(columns: Sequence[Column], method: str) -> dict[str, Any]:
    """``{"columns": [...], "rows": [{"method", "source", "values"}]}``: ours first, then the paper's rows.

    Paper rows are included only when at least one column has a paper value.
    """
    rows = [{"method": method, "source": "this run", "values": [c.ours for c in columns]}]
    if any(c.paper_key for c in columns):
        for name, row in PAPER_TABLE8.items():
            values = [row.get(c.paper_key) if c.paper_key else None for c in columns]
            rows.append({"method": name, "source": PAPER_SOURCE, "values": values})
    return {"columns": [c.title for c in columns], "rows": rows}


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


def run_statistics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Deterministic statistics of the records: statuses, failure kinds, turns, LLM calls, tokens."""
    n = len(records)
    status = Counter(r["status"] for r in records)
    failures: Counter[str] = Counter()
    for r in records:
        failures.update(r.get("failures") or {})
    turns = sum(int(r["turns"]) for r in records)
    tokens = Counter()
    for r in records:
        tokens.update(r.get("tokens") or {})
    return {
        "n_samples": n,
        "status": {s: status.get(s, 0) for s in (*STATUSES, *sorted(set(status) - set(STATUSES)))},
        "failures": dict(sorted(failures.items())),
        "turns": {"total": turns, "mean": _mean(turns, n)},
        "llm_calls": sum(int(r.get("llm_calls") or 0) for r in records),
        "tokens": {"prompt": tokens["prompt"], "completion": tokens["completion"], "total": tokens["total"],
                   "mean_per_sample": _mean(tokens["total"], n)},
    }


def timing_statistics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Clock-dependent statistics: seconds per sample and time in the LLM and SAM 3 (summed)."""
    n = len(records)
    seconds = math.fsum(float(r["seconds"]) for r in records)
    llm = math.fsum(float((r.get("timings") or {}).get("llm", 0.0)) for r in records)
    sam = math.fsum(float((r.get("timings") or {}).get("sam", 0.0)) for r in records)
    return {"sample_seconds_total": seconds, "sample_seconds_mean": _mean(seconds, n),
            "llm_seconds_total": llm, "sam_seconds_total": sam}


def build_summary(*, dataset: str, split: str | None, manifest: dict[str, Any], records: Sequence[dict[str, Any]],
                  scores: dict[str, Any], columns: Sequence[Column], extra: dict[str, Any] | None = None,
                  ) -> dict[str, Any]:
    """The ``summary.json`` object.

    Args:
        dataset: ``"reasonseg"`` or ``"omnilabel"``.
        split: The split name (``"val"``, ``"test"``) or None.
        manifest: The run's manifest (model ids and prompt version are copied from it).
        records: Every sample's record.
        scores: The dataset's scores (percent), as its ``to_dict`` gives them.
        columns: The comparison table's columns.
        extra: More deterministic fields (e.g. the number of boxes emitted).
    """
    model = (manifest.get("llm") or {}).get("model") or (manifest.get("llm") or {}).get("kind", "?")
    summary: dict[str, Any] = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "dataset": dataset,
        "split": split,
        "llm": manifest.get("llm"),
        "sam3": manifest.get("sam3"),
        "prompt_version": (manifest.get("agent") or {}).get("prompt_version"),
        "scores": scores,
        "table": comparison_table(columns, f"sam3agent ({model})"),
        **run_statistics(records),
        **(extra or {}),
        "timing": timing_statistics(records),
    }
    return summary


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def render_markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: the comparison table, then statuses, failure kinds, turns, tokens and time."""
    title = f"{summary['dataset']} {summary.get('split') or ''}".strip()
    table = summary["table"]
    lines = [f"# {title}", "", "| method | " + " | ".join(table["columns"]) + " |",
             "|---|" + "---|" * len(table["columns"])]
    for row in table["rows"]:
        lines.append(f"| {row['method']} | " + " | ".join(_cell(v) for v in row["values"]) + " |")
    if len(table["rows"]) > 1:
        lines += ["", f"Other rows: {table['rows'][1]['source']}."]
    lines += ["", "## Scores (percent)", "", "```", _scores_text(summary["scores"]), "```", "", "## Run", ""]
    n = summary["n_samples"]
    lines.append(f"- samples: {n}; " + ", ".join(f"{k} {v}" for k, v in summary["status"].items()))
    if summary["status"].get("failed"):
        lines.append("- failed samples (LLM backend errors) are scored as empty predictions")
    kinds = ", ".join(f"{k} {v}" for k, v in summary["failures"].items()) or "none"
    lines.append(f"- model mistakes by kind: {kinds}")
    for key in ("n_boxes",):
        if key in summary:
            lines.append(f"- boxes emitted: {summary[key]}")
    mean_turns = summary["turns"]["mean"]
    lines.append(f"- turns: {summary['turns']['total']} in all, {_cell(mean_turns)} per sample; "
                 f"LLM calls {summary['llm_calls']}")
    tok = summary["tokens"]
    lines.append(f"- tokens: {tok['prompt']} prompt + {tok['completion']} completion = {tok['total']} "
                 f"({_cell(tok['mean_per_sample'])} per sample)")
    t = summary["timing"]
    lines.append(f"- time: {t['sample_seconds_total']:.1f} s summed over samples, {_cell(t['sample_seconds_mean'])}"
                 f" s per sample (LLM {t['llm_seconds_total']:.1f} s, SAM 3 {t['sam_seconds_total']:.1f} s)")
    lines.append(f"- LLM: {summary.get('llm')}; SAM 3: {summary.get('sam3')}; prompts {summary.get('prompt_version')}")
    return "\n".join(lines) + "\n"


def _scores_text(scores: dict[str, Any], indent: str = "") -> str:
    out = []
    for k, v in scores.items():
        if isinstance(v, dict):
            out.append(f"{indent}{k}:")
            out.append(_scores_text(v, indent + "  "))
        else:
            out.append(f"{indent}{k}: {v:.4f}" if isinstance(v, float) else f"{indent}{k}: {v}")
    return "\n".join(out)


def write_summary(paths: RunPaths, summary: dict[str, Any]) -> str:
    """Write ``summary.json`` and ``summary.md`` atomically; return the markdown."""
    text = render_markdown(summary)
    atomic_write_json(paths.summary_json, summary)
    atomic_write_text(paths.summary_md, text)
    return text
