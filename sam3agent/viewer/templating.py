"""The Jinja2 environment of the viewer's pages, and the small formatting helpers both pages share.

The templates live in ``sam3agent/viewer/templates/`` (shipped in the wheel as package data): the page
shell ``page.html`` with the inline stylesheet ``style.css``, the shared macros ``macros.html``, the
trajectory page (``trajectory.html``, ``turn.html``) and the eval index (``eval_index.html`` with its
sorting script ``sort_table.js``). Autoescaping is on for every template, so every value a page
prints (model replies, queries, file names, sample ids) is HTML-escaped unless a macro built it.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2

__all__ = ["environment", "format_number", "render_page", "status_kind"]


@functools.cache
def environment() -> jinja2.Environment:
    """The shared environment: package templates, autoescape on, unknown names an error.

    ``trim_blocks`` and ``lstrip_blocks`` drop the lines that hold only a ``{% ... %}`` tag, so the
    templates can be laid out readably without adding blank lines to the page.
    """
    return jinja2.Environment(
        loader=jinja2.PackageLoader("sam3agent.viewer"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_page(template: str, /, **context: Any) -> str:
    """Render ``template`` (a file name in the templates folder) with ``context`` as its variables."""
    return environment().get_template(template).render(**context)


def status_kind(status: str) -> str:
    """The badge colour class of a run status: ``ok`` answered, ``warn`` no mask, ``bad`` anything else."""
    return {"answered": "ok", "no_mask": "warn"}.get(status, "bad")


def format_number(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals, or an en dash when it is missing."""
    return "–" if value is None else f"{value:.{digits}f}"
