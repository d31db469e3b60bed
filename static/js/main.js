// circuitlab's page glue, loaded as <script type="module" src="/static/js/main.js"> by
// templates/base.html: inline errors, Plotly figures from server-sent JSON, the graph's
// click-to-open neuron panel, sortable tables and figure exports. No framework, no CDN.
//
// Modules run deferred, in document order after the classic scripts before them: htmx
// (loaded in <head> without defer) and Plotly (deferred, on pages with figures) are
// globals by the time this runs. User actions go through actions.js's one dispatcher;
// the modules register what each data-action does.

import { listen } from "./actions.js";
import { listenForForms, markFormats } from "./forms.js";
import { listenForPathHover, renderFigures, restoreState, saveState } from "./graph.js";
import { listenForEscape } from "./panel.js";
import "./tables.js";

listenForForms();
listen();
listenForEscape();
listenForPathHover();

// Figures arrive with the page and in swapped-in content (a run, a filtered graph, a
// comparison): render them, and restore or save the run's view state in the URL.
document.addEventListener("htmx:afterSettle", (event) => {
  renderFigures(event.detail.elt);
  if (document.getElementById("run")) restoreState();
  if (event.detail.elt.id === "graph-view") saveState();
});
window.addEventListener("load", () => {
  renderFigures(document);
  if (document.getElementById("run")) restoreState();
  markFormats();
});
