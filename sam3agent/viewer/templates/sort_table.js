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
