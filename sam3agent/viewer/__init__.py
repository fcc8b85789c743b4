"""Self-contained HTML views of runs: one agent trajectory (:func:`render_trajectory_html`, what
``AgentResult.save`` writes as ``trajectory.html``) and the index of an eval run (:func:`write_eval_index`).

The pages are Jinja2 templates (``sam3agent/viewer/templates/``) rendered with autoescape on.
"""

from sam3agent.viewer.eval_index import load_samples, render_eval_index, write_eval_index
from sam3agent.viewer.trajectory import render_trajectory_html

__all__ = ["load_samples", "render_eval_index", "render_trajectory_html", "write_eval_index"]
