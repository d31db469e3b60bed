// Sortable tables: a click on (or Enter in) a header with data-action="sort" sorts by its
// column. A row of the neurons table opens its neuron: data-action="open-neuron" (panel.js).

import { action } from "./actions.js";

function sortBy(th) {
  const table = th.closest("table");
  const index = Array.from(th.parentNode.children).indexOf(th);
  const numeric = th.dataset.sort === "num";
  const descending = th.getAttribute("aria-sort") !== "descending";
  table.querySelectorAll("th").forEach((h) => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  const body = table.tBodies[0];
  const rows = Array.from(body.querySelectorAll("tr.node-row, tr.sort-row"));
  const key = (tr) => {
    const cell = tr.children[index];
    if (!numeric) return cell.textContent.trim().toLowerCase();
    const v = parseFloat(cell.dataset.v ?? cell.textContent);
    // Influence sorts by magnitude: the strongest drivers either way come first.
    return th.textContent.trim() === "influence" ? Math.abs(v) : v;
  };
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    const order = x < y ? -1 : x > y ? 1 : 0;
    return descending ? -order : order;
  });
  rows.forEach((tr) => body.appendChild(tr));
}

action("sort", (th) => sortBy(th));
