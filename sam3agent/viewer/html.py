"""Self-contained HTML views of runs: one agent trajectory, and the index of an eval run.

:func:`render_trajectory_html` turns an :class:`~sam3agent.result.AgentResult` into one HTML page
with every image inlined as a data URL (no external resources, no JavaScript): the query, the
answer overlay and status, then each turn's reasoning, tool call, the images the model saw, the
tool's outcome, verification verdicts with their pictures, timings and tokens. Each distinct image
is inlined once, where it first appears; later appearances link back to it.

:func:`write_eval_index` writes ``index.html`` for an eval run folder from its ``samples.jsonl``: a
table sortable by clicking a header (a few lines of inline JavaScript), linking each sample's
``trajectories/<id>/trajectory.html`` when it exists. Every text that came from a model, a user or
a data file is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sam3agent.viewer_style import INDEX_SCRIPT, STYLE

if TYPE_CHECKING:
    from sam3agent.llm.base import ImagePart
    from sam3agent.result import AgentResult, Step, Verification

logger = logging.getLogger(__name__)

__all__ = ["load_samples", "render_eval_index", "render_trajectory_html", "write_eval_index"]

_SUMMARY = re.compile(r"^<image (\d+)x(\d+) (\w+) (.*) ([0-9a-f]{8})>$")
_TOOL_BLOCK = re.compile(r"<tool>.*?(</tool>|$)", re.DOTALL)
_OVERLAY_MAX_SIDE = 1280
_TOOL_CLASS = {"segment_phrase": "segment", "examine_each_mask": "examine",
               "select_masks_and_return": "select", "report_no_mask": "nomask"}


def _page(title: str, body: str, script: str = "") -> str:
    tail = f"<script>{script}</script>" if script else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}{tail}</body></html>\n")


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {escape(kind)}">{escape(text)}</span>'


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pre(text: str, cls: str = "text") -> str:
    return f'<pre class="{cls}">{escape(text)}</pre>' if text.strip() else ""


class _Images:
    """Inlines each image the model saw once; later mentions link to the first."""

    def __init__(self, images: dict[str, ImagePart]) -> None:
        self._images = images
        self._by_prefix = {digest[:8]: digest for digest in images}
        self._shown: set[str] = set()

    def resolve(self, summary: str) -> tuple[str | None, str]:
        """The full digest (``None`` if unknown) and the label of an ``ImagePart.summary()``."""
        match = _SUMMARY.match(summary)
        if match is None:
            return None, summary
        label = match.group(4).strip("'\"")
        return self._by_prefix.get(match.group(5)), label

    def figure(self, digest: str, caption: str) -> str:
        """The image inlined (first time) or a link chip back to it."""
        part = self._images[digest]
        anchor = f"img-{digest[:12]}"
        size = f"{part.width}x{part.height}"
        if digest in self._shown:
            return (f'<a class="chip" href="#{anchor}" title="shown above">&#8617; {escape(caption)} '
                    f'<small>{size}</small></a>')
        self._shown.add(digest)
        return (f'<figure id="{anchor}"><img src="{_data_url(part.mime, part.data)}" alt="{escape(caption)}" '
                f'width="{part.width}" height="{part.height}" loading="eager">'
                f"<figcaption>{escape(caption)} <small>{size}</small></figcaption></figure>")

    def gallery(self, summaries: Iterable[str], skip_labels: Sequence[str] = ()) -> str:
        """Figures for every image summary in order (unknown ones as plain text)."""
        items = []
        for summary in summaries:
            digest, label = self.resolve(summary)
            if label in skip_labels:
                continue
            if digest is None:
                items.append(f'<span class="chip missing">{escape(summary)}</span>')
            else:
                items.append(self.figure(digest, label))
        return f'<div class="gallery">{"".join(items)}</div>' if items else ""


def _sent_images(sent: Sequence[dict[str, Any]]) -> list[str]:
    return [part for msg in sent for part in msg.get("content", []) if str(part).startswith("<image ")]


def _request_details(sent: Sequence[dict[str, Any]]) -> str:
    rows = []
    for msg in sent:
        parts = []
        for part in msg.get("content", []):
            text = str(part)
            parts.append(f'<span class="chip">{escape(text)}</span>' if text.startswith("<image ") else _pre(text))
        for call in msg.get("tool_calls", []):
            parts.append(_pre(f"{call.get('name')}({call.get('arguments')})", "code"))
        rows.append(f'<div class="msg"><span class="role">{escape(str(msg.get("role")))}</span>{"".join(parts)}</div>')
    return f"<details><summary>request: {len(sent)} message(s)</summary>{''.join(rows)}</details>"


def _timing(step: Step) -> str:
    bits = [f"LLM {step.llm_seconds:.2f} s", f"SAM 3 {step.sam_seconds:.2f} s",
            f"render {step.render_seconds:.2f} s", f"step {step.wall_seconds:.2f} s",
            f"tokens {step.usage.prompt_tokens} in / {step.usage.completion_tokens} out"]
    if step.attempts > 1:
        bits.append(f"{step.attempts} attempts")
    if step.finish_reason:
        bits.append(f"finish: {step.finish_reason}")
    return f'<div class="meta">{" · ".join(escape(b) for b in bits)}</div>'


def _call_html(step: Step) -> str:
    if step.call is not None:
        params = json.dumps(step.call.get("parameters", {}), ensure_ascii=False)
        name = escape(str(step.call.get("name")))
        return f'<div class="call"><code>{name}</code> <code>{escape(params)}</code></div>'
    calls = "".join(_pre(f"{c.get('name')}({c.get('arguments')})", "code") for c in step.tool_calls)
    return f'<div class="call bad">no usable tool call ({escape(step.failure or "unknown")}){calls}</div>'


def _verification_html(v: Verification, images: _Images) -> str:
    kind = {"accept": "ok", "reject": "bad", "unclear": "warn"}.get(v.verdict, "warn")
    meta = (f"{v.seconds:.2f} s · tokens {v.usage.prompt_tokens} in / {v.usage.completion_tokens} out"
            + (f" · {v.attempts} attempts" if v.attempts > 1 else ""))
    return (f'<div class="verify"><div class="vhead">mask {v.mask_id} {_badge(v.verdict, kind)}</div>'
            f"{images.gallery(_sent_images(v.sent), skip_labels=('raw image',))}"
            f'{_pre(_TOOL_BLOCK.sub("", v.raw_reply).strip() or v.raw_reply)}<div class="meta">{escape(meta)}</div>'
            "</div>")


def _turn_html(step: Step, images: _Images) -> str:
    name = str(step.call.get("name")) if step.call else None
    tag = _badge(name, _TOOL_CLASS.get(name, "other")) if name else _badge(step.failure or "no call", "bad")
    failure = _badge(step.failure, "bad") if step.failure and name else ""
    reasoning = _TOOL_BLOCK.sub("", step.raw_reply).strip()
    parts = [
        f'<section class="turn" id="turn-{step.index}"><h2>Turn {step.index} {tag} {failure}</h2>',
        _timing(step),
        '<h3>Model saw</h3>', images.gallery(_sent_images(step.sent)), _request_details(step.sent),
        '<h3>Reasoning</h3>', _pre(reasoning) or '<p class="muted">(no text besides the call)</p>',
        '<h3>Tool call</h3>', _call_html(step),
    ]
    if step.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in step.notes) + "</ul>")
    if step.verifications:
        parts.append(f'<h3>Verifications ({len(step.verifications)})</h3><div class="verifies">')
        parts.extend(_verification_html(v, images) for v in step.verifications)
        parts.append("</div>")
    parts += ['<h3>Outcome</h3>', _pre(step.outcome), images.gallery(step.images_out)]
    parts.append(f'<details><summary>raw reply</summary>{_pre(step.raw_reply, "code")}</details></section>')
    return "".join(parts)


def _overlay_figure(result: AgentResult) -> str:
    overlay = result.overlay().convert("RGB")
    overlay.thumbnail((_OVERLAY_MAX_SIDE, _OVERLAY_MAX_SIDE))
    buffer = io.BytesIO()
    overlay.save(buffer, format="JPEG", quality=88)
    return (f'<figure id="overlay"><img src="{_data_url("image/jpeg", buffer.getvalue())}" alt="answer overlay" '
            f'width="{overlay.width}" height="{overlay.height}"><figcaption>answer: {len(result.detections)} '
            f"mask(s) <small>{result.image.width}x{result.image.height}</small></figcaption></figure>")


def _detections_table(result: AgentResult) -> str:
    from sam3agent.result import detections_to_list

    records = detections_to_list(result.detections, result.image.height, result.image.width)
    if not records:
        return '<p class="muted">No mask in the answer.</p>'
    areas = result.detections.area if result.detections.mask is not None else [0] * len(records)
    rows = "".join(
        f"<tr><td>{i}</td><td>{escape(r['phrase'])}</td><td>{_num(r['score'], 3)}</td>"
        f"<td>{', '.join(f'{v:.0f}' for v in r['box_xyxy'])}</td><td>{int(a)}</td></tr>"
        for i, (r, a) in enumerate(zip(records, areas, strict=True), start=1)
    )
    return ('<table class="dets"><tr><th>#</th><th>phrase</th><th>score</th><th>box x0, y0, x1, y1</th>'
            f"<th>area px</th></tr>{rows}</table>")


def _summary_table(result: AgentResult) -> str:
    t = result.totals
    failures = ", ".join(f"{k} x{v}" for k, v in sorted(t.failures.items())) or "none"
    rows = [
        ("turns", f"{t.turns} main-loop call(s) + {t.verify_calls} verification(s); {t.llm_calls} backend attempt(s)"),
        ("seconds", f"{t.wall_seconds:.2f} total · LLM {t.llm_seconds:.2f} · SAM 3 {t.sam_seconds:.2f} "
                    f"· render {t.render_seconds:.2f}"),
        ("tokens", f"{t.prompt_tokens} in / {t.completion_tokens} out"),
        ("model mistakes", failures),
        ("model", result.llm_name or "?"),
        ("image", f"{result.image.source} ({result.image.width}x{result.image.height})"),
        ("prompt version", result.prompt_version or "?"),
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _status_kind(status: str) -> str:
    return {"answered": "ok", "no_mask": "warn"}.get(status, "bad")


def _turn_nav(steps: Sequence[Step]) -> str:
    links = []
    for step in steps:
        name = str(step.call.get("name")) if step.call else (step.failure or "no call")
        kind = _TOOL_CLASS.get(name, "bad") if step.call else "bad"
        links.append(f'<a class="badge {kind}" href="#turn-{step.index}">{step.index}. {escape(name)}</a>')
    return f'<nav class="turns">{"".join(links)}</nav>'


def render_trajectory_html(result: AgentResult) -> str:
    """A self-contained HTML page showing the whole run.

    Args:
        result: A finished run.

    Returns:
        The page as a string (images inlined as data URLs; no external resources, no scripts).
    """
    images = _Images(result.images)
    first_raw = next((d for d, p in result.images.items() if p.label == "raw image"), None)
    inputs = images.figure(first_raw, "input, as the model saw it") if first_raw else ""
    header = (
        f'<header><div class="kicker">sam3agent trajectory</div><h1>{escape(result.query)}</h1>'
        f"<p>{_badge(result.status, _status_kind(result.status))} {escape(result.reason)}</p></header>"
        f'<section class="summary"><div class="gallery big">{_overlay_figure(result)}{inputs}</div>'
        f"<div>{_summary_table(result)}{_detections_table(result)}</div></section>"
    )
    turns = "".join(_turn_html(step, images) for step in result.steps)
    turns = turns or '<p class="muted">No turns.</p>'
    body = f"<main>{header}{_turn_nav(result.steps)}{turns}</main>"
    return _page(f"sam3agent: {result.query}", body)


# ----------------------------------------------------------------------------- eval index


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


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _cell(value: float | None, text: str) -> str:
    sort = "" if value is None else f"{value:.6g}"
    return f'<td class="num" data-sort="{sort}">{escape(text)}</td>'


def _trajectory_link(run_dir: Path, sample_id: str) -> str | None:
    base = (run_dir / "trajectories").resolve()
    target = (base / sample_id / "trajectory.html").resolve()
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return f"trajectories/{quote(sample_id, safe='')}/trajectory.html"


def _index_row(run_dir: Path, record: dict[str, Any]) -> str:
    sample_id = str(record["id"])
    link = _trajectory_link(run_dir, sample_id)
    name = escape(sample_id)
    id_cell = f'<a href="{escape(link)}">{name}</a>' if link else name
    status = str(record.get("status", "?"))
    query = str(record.get("query", ""))
    iou, turns, seconds = (_float(record.get(k)) for k in ("iou", "turns", "seconds"))
    return (f'<tr><td data-sort="{name}">{id_cell}</td><td class="query" title="{escape(query)}">{escape(query)}</td>'
            f'<td data-sort="{escape(status)}">{_badge(status, _status_kind(status))}</td>'
            f"{_cell(iou, _num(iou, 3))}{_cell(turns, _num(turns, 0))}{_cell(seconds, _num(seconds, 1))}</tr>")


def render_eval_index(run_dir: Path, records: Sequence[dict[str, Any]]) -> str:
    """The ``index.html`` page of an eval run (see :func:`write_eval_index`)."""
    ious = [v for v in (_float(r.get("iou")) for r in records) if v is not None]
    counts: dict[str, int] = {}
    for r in records:
        counts[str(r.get("status", "?"))] = counts.get(str(r.get("status", "?")), 0) + 1
    stats = " · ".join(f"{escape(k)} {v}" for k, v in sorted(counts.items()))
    mean = f"mean IoU {sum(ious) / len(ious):.3f} over {len(ious)}" if ious else "no IoU yet"
    head = "".join(f'<th data-type="{t}" tabindex="0">{escape(n)}</th>' for n, t in
                   [("id", "text"), ("query", "text"), ("status", "text"), ("IoU", "num"), ("turns", "num"),
                    ("seconds", "num")])
    rows = "".join(_index_row(run_dir, r) for r in records)
    body = (f'<main><header><div class="kicker">sam3agent eval run</div><h1>{escape(run_dir.name)}</h1>'
            f'<p>{len(records)} sample(s) · {stats} · {mean}</p><p class="muted">Click a column header to sort.</p>'
            f'</header><table id="samples" class="samples"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></main>")
    return _page(f"sam3agent eval: {run_dir.name}", body, INDEX_SCRIPT)


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
