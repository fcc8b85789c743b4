"""The inline stylesheet and the table-sorting script of the HTML views (:mod:`sam3agent.viewer`)."""

from __future__ import annotations

STYLE = """
:root { --fg: #1f2430; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9; --card: #fff;
  --ok: #0f7b46; --ok-bg: #dcf5e7; --bad: #b42318; --bad-bg: #fde4e1; --warn: #935f00; --warn-bg: #fdf1d6;
  --seg: #1849a9; --seg-bg: #e0eaff; --exa: #6927b0; --exa-bg: #efe5fd; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 64px; }
header h1 { font-size: 24px; line-height: 1.3; margin: 2px 0 6px; overflow-wrap: anywhere; }
.kicker { text-transform: uppercase; letter-spacing: .08em; font-size: 11px; color: var(--muted); font-weight: 600; }
h2 { font-size: 17px; margin: 0 0 2px; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); margin: 16px 0 6px; }
p { margin: 4px 0; }
.muted { color: var(--muted); }
.summary, .turn { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px;
  margin: 16px 0; box-shadow: 0 1px 2px rgba(16, 24, 40, .04); }
.summary { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 20px; }
@media (max-width: 860px) { .summary { grid-template-columns: 1fr; } }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px; font-weight: 600;
  background: #eef0f3; color: var(--fg); text-decoration: none; white-space: nowrap; }
.badge.ok, .badge.select { background: var(--ok-bg); color: var(--ok); }
.badge.bad { background: var(--bad-bg); color: var(--bad); }
.badge.warn, .badge.nomask { background: var(--warn-bg); color: var(--warn); }
.badge.segment { background: var(--seg-bg); color: var(--seg); }
.badge.examine { background: var(--exa-bg); color: var(--exa); }
nav.turns { display: flex; flex-wrap: wrap; gap: 6px; margin: 8px 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; margin: 4px 0; }
figure { margin: 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; max-height: 260px; width: auto;
  border-radius: 6px; border: 1px solid var(--line); background: #fafafa; }
.gallery.big figure { flex: 1 1 260px; min-width: 0; }
.gallery.big figure img { width: 100%; max-height: 480px; object-fit: contain; }
figcaption { font-size: 12px; color: var(--muted); margin-top: 3px; }
small { color: var(--muted); font-size: 11px; }
.chip { display: inline-block; font-size: 12px; padding: 3px 9px; border: 1px solid var(--line); border-radius: 6px;
  color: var(--seg); background: #f9fafb; text-decoration: none; margin: 2px 4px 2px 0; }
.chip.missing { color: var(--muted); }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; padding: 8px 10px; border-radius: 6px;
  background: #f9fafb; border: 1px solid var(--line); font-size: 13px; }
pre.text { font-family: inherit; }
pre.code, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.call code { background: #f2f4f7; padding: 2px 6px; border-radius: 4px; }
.call.bad { color: var(--bad); }
.meta { color: var(--muted); font-size: 12px; }
details { margin: 8px 0 0; }
details summary { cursor: pointer; color: var(--muted); font-size: 12px; }
.msg { border-left: 3px solid var(--line); padding-left: 10px; margin: 8px 0; }
.role { font-size: 11px; text-transform: uppercase; font-weight: 700; color: var(--muted); }
.verifies { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.verify { border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
.verify figure img { max-height: 150px; }
.vhead { font-weight: 600; margin-bottom: 4px; }
ul.notes { margin: 6px 0; color: var(--warn); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
table.kv th { text-align: left; color: var(--muted); font-weight: 500; width: 120px; vertical-align: top; }
table.kv th, table.kv td { padding: 3px 6px 3px 0; overflow-wrap: anywhere; }
table.dets { margin-top: 12px; }
table.dets th, table.dets td, table.samples th, table.samples td { border-bottom: 1px solid var(--line);
  padding: 6px 8px; text-align: left; }
table.samples { background: var(--card); border: 1px solid var(--line); border-radius: 10px; margin-top: 16px; }
table.samples th { cursor: pointer; user-select: none; background: #f9fafb; position: sticky; top: 0; }
table.samples th::after { content: " \\2195"; color: #c0c5cf; }
table.samples th[aria-sort="ascending"]::after { content: " \\25B2"; color: var(--fg); }
table.samples th[aria-sort="descending"]::after { content: " \\25BC"; color: var(--fg); }
table.samples td.num, table.samples th[data-type="num"] { text-align: right; font-variant-numeric: tabular-nums; }
td.query { max-width: 460px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
tbody tr:hover { background: #f5f8ff; }
a { color: var(--seg); }
"""

INDEX_SCRIPT = """
document.querySelectorAll("table.samples th").forEach((th, col) => {
  const sort = () => {
    const body = th.closest("table").tBodies[0];
    const asc = th.getAttribute("aria-sort") !== "ascending";
    th.parentNode.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    const num = th.dataset.type === "num";
    const key = (row) => { const c = row.cells[col]; return c.dataset.sort ?? c.textContent.trim(); };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === "" || y === "") { return x === y ? 0 : (x === "" ? 1 : -1); }
      const d = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, { numeric: true });
      return asc ? d : -d;
    });
    rows.forEach((r) => body.appendChild(r));
  };
  th.addEventListener("click", sort);
  th.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
});
"""
