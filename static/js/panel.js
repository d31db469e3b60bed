// The neuron panel of a run (the Analyze page's run, or the run behind a Compare graph).
// Opened from the graph it sits beside the graph; opened from a table or a list it is a
// drawer over the right edge of the window, in view wherever the page is scrolled.

import { action } from "./actions.js";

export function runId() {
  const run = document.getElementById("run");
  return run ? run.dataset.run : null;
}

export function openNeuron(layer, neuron, position, run, drawer) {
  const id = run || runId();
  const panel = document.getElementById("panel");
  if (!id || !panel) return;
  panel.classList.toggle("drawer", !!drawer);
  const q = new URLSearchParams({ layer, neuron });
  if (position !== undefined && position !== null && position !== "") q.set("position", position);
  window.htmx.ajax("GET", `/runs/${id}/neuron?${q}`,
    { source: "#panel", target: "#panel", swap: "innerHTML" });
}

export function closePanel() {
  const panel = document.getElementById("panel");
  if (!panel) return;
  panel.innerHTML = "";
  panel.classList.remove("drawer");
}

// A link (a driver, a concept, a probe hit) or a row of the neurons table. Beside the
// graph unless it sits outside the graph area or says data-drawer (the table's rows,
// which sit under the graph but open the drawer, in view wherever the table is scrolled).
action("open-neuron", (el, event) => {
  if (!document.getElementById("panel")) return;  // no panel here: follow the link
  event.preventDefault();
  openNeuron(el.dataset.layer, el.dataset.neuron, el.dataset.position, el.dataset.run,
    "drawer" in el.dataset || !el.closest(".graph-area"));
});

action("close-panel", (el, event) => {
  event.preventDefault();
  closePanel();
});

// Escape closes the panel where it is a drawer over the page.
export function listenForEscape() {
  document.addEventListener("keydown", (event) => {
    const panel = document.getElementById("panel");
    if (event.key === "Escape" && panel && panel.querySelector("#neuron-panel")
        && getComputedStyle(panel).position === "fixed") closePanel();
  });
}
