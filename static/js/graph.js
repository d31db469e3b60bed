// Plotly figures from server-sent JSON and the attribution graph on them: markers sized to
// their pixels, click-to-open neurons, the selection and its paths, and the view's state
// in the URL. Plotly is the global that /vendor/plotly.min.js (a deferred classic script,
// run before this module) defines, on the pages that have figures.

import { action } from "./actions.js";
import { openNeuron, runId } from "./panel.js";

// Every <script type="application/json" class="plotly-figure" data-target=ID> becomes a
// figure in the element with that id; attribution graphs (.graph[data-run] or the Analyze
// page's #graph-plot) also get markers sized to their pixels and the click handlers.
export function renderFigures(root) {
  if (!window.Plotly) return;
  root.querySelectorAll("script.plotly-figure").forEach((script) => {
    const target = document.getElementById(script.dataset.target);
    if (!target) return;
    const fig = JSON.parse(script.textContent);
    window.Plotly.react(target, fig.data, fig.layout,
      { responsive: true, displaylogo: false });
    if (isGraph(target)) {
      fitMarkers(target);
      bindGraph(target);
      if (target.id === "graph-plot") applySelection(target);
    }
    target.dataset.rendered = "1";
  });
}

const isGraph = (gd) => gd.id === "graph-plot" || gd.classList.contains("attribution");
const isNodeTrace = (t) => t.meta === "nodes";  // node markers (frontend/graph.py tags them)
const traceIndexes = (gd, test) => gd.data.map((t, i) => (test(t) ? i : -1)).filter((i) => i >= 0);
const plot = () => document.getElementById("graph-plot");

// Markers are sized from the pixels one layout unit gets (nodes sit one unit apart), so
// no two markers overlap and a click at a node's centre hits that node only.
function fitMarkers(gd) {
  const L = gd._fullLayout;
  if (!L || !L.xaxis) return;
  const unit = Math.min(Math.abs(L.xaxis.l2p(1) - L.xaxis.l2p(0)),
    Math.abs(L.yaxis.l2p(1) - L.yaxis.l2p(0)));
  if (Math.abs((gd._fittedUnit || 0) - unit) < 0.5) return;  // nothing to refit
  gd._fittedUnit = unit;
  // frontend/graph.py's marker_px: area proportional to |influence|, a 3 px floor.
  const biggest = Math.min(26, 0.9 * unit), smallest = Math.min(3, biggest);
  const idx = traceIndexes(gd, isNodeTrace);
  if (!idx.length) return;
  const sizes = idx.map((i) => gd.data[i].customdata.map(
    (c) => +Math.max(smallest, biggest * Math.sqrt(c[4] || 0)).toFixed(2)));
  window.Plotly.restyle(gd, { "marker.size": sizes }, idx);
}

function bindGraph(gd) {
  if (gd.dataset.bound) return;
  gd.dataset.bound = "1";
  gd.on("plotly_relayout", (ev) => {  // zoom or resize: refit the markers
    if (!ev || Object.keys(ev).some((k) => k.includes("axis") || k.startsWith("autosize")
      || k === "width" || k === "height")) fitMarkers(gd);
  });
  gd.on("plotly_afterplot", () => paintSelection(gd));  // a redraw resets the styles
  gd.on("plotly_click", (ev) => {
    const point = ev.points && ev.points[0];
    if (!point || !isNodeTrace(point.data)) return;
    const [id, layer, neuron, position] = point.customdata;
    if (point.data.name === "supernodes") { toggleCollapse(point.customdata[5], false); return; }
    if (gd.id !== "graph-plot") {
      openNeuron(layer, neuron, position, gd.dataset.run, !gd.closest(".graph-area"));
      return;
    }
    if (ev.event && ev.event.shiftKey) {
      if (graph.multi.has(id)) graph.multi.delete(id); else graph.multi.add(id);
    } else {
      graph.multi = new Set([id]);
      graph.selected = id;
      graph.view = "paths";
    }
    applySelection(gd);
    saveState();
    if (!(ev.event && ev.event.shiftKey)) { openNeuron(layer, neuron, position); loadPaths(); }
  });
  if (gd.id === "graph-plot") {
    gd.on("plotly_selected", (ev) => {
      if (!ev || !ev.points) return;
      graph.multi = new Set(ev.points.filter((p) => isNodeTrace(p.data) && p.data.name !== "supernodes")
        .map((p) => p.customdata[0]));
      applySelection(gd);
    });
  }
}

// --- selection, paths and the view's state in the URL ---------------------------------

const graph = { run: null, selected: null, multi: new Set(), view: null };

function edgeData(gd) {
  const t = gd.data.find((d) => d.name === "edge hover");
  return t ? t.customdata.map((c) => ({ src: c[0], dst: c[1], end: c[5] })) : [];
}

function nodePoints(gd) {
  const at = new Map();
  gd.data.forEach((t) => {
    if (isNodeTrace(t)) t.customdata.forEach((c, i) => at.set(c[0], [t.x[i], t.y[i]]));
  });
  return at;
}

// Highlight the selected nodes, their neighbours and their edges; dim the rest. All of
// it is drawn on Plotly's SVG directly (and redrawn after each Plotly redraw): cheap,
// where a restyle or relayout of a 2,000-point figure costs a full redraw.
function applySelection(gd, path) {
  if (!gd || !gd.data) return;
  const at = nodePoints(gd);
  const chosen = new Set([...graph.multi].filter((id) => at.has(id)));
  if (graph.selected && !at.has(graph.selected)) graph.selected = null;
  const near = new Set(chosen), segments = [];
  const steps = path ? new Set(path.slice(0, -1).map((id, i) => `${id} ${path[i + 1]}`)) : null;
  edgeData(gd).forEach((e) => {
    const hit = steps ? (steps.has(`${e.src} ${e.dst}`)
      || (e.dst === "metric" && e.src === path[path.length - 1]))
      : (chosen.has(e.src) || chosen.has(e.dst));
    const start = hit && at.get(e.src);
    if (!start) return;
    const end = e.dst === "metric" ? e.end : at.get(e.dst);
    if (!end) return;
    segments.push([start, end]);
    near.add(e.src); near.add(e.dst);
  });
  if (path) path.forEach((id) => near.add(id));
  gd._selection = { chosen, near, segments, active: chosen.size > 0 || Boolean(path) };
  paintSelection(gd);
  gd.dataset.selected = [...chosen].join(" ");
  updateSelectionBar(chosen);
}

const SVG = "http://www.w3.org/2000/svg";

function paintSelection(gd) {
  const st = gd._selection;
  if (!st || !gd._fullData) return;
  const layer = gd.querySelector(".scatterlayer");
  if (!layer) return;
  const groups = layer.querySelectorAll(":scope > .trace");
  // The selected edges: lines under the nodes, over the dimmed edges.
  let lines = layer.querySelector(":scope > g.selected-edges");
  if (!lines) { lines = document.createElementNS(SVG, "g"); lines.setAttribute("class", "selected-edges"); }
  const firstNode = gd._fullData.findIndex(isNodeTrace);
  layer.insertBefore(lines, firstNode >= 0 && groups[firstNode] ? groups[firstNode] : null);
  const L = gd._fullLayout;
  lines.replaceChildren(...st.segments.map(([a, b]) => {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", L.xaxis.l2p(a[0])); line.setAttribute("y1", L.yaxis.l2p(a[1]));
    line.setAttribute("x2", L.xaxis.l2p(b[0])); line.setAttribute("y2", L.yaxis.l2p(b[1]));
    line.setAttribute("stroke", "rgba(17, 24, 39, 0.8)"); line.setAttribute("stroke-width", "2.5");
    return line;
  }));
  gd._fullData.forEach((t, k) => {
    const g = groups[k];
    if (!g) return;
    if ((t.name || "").startsWith("edges ")) g.style.opacity = st.active ? "0.12" : "";
    if (!isNodeTrace(t)) return;
    g.querySelectorAll("path.point").forEach((el) => {
      const c = el.__data__ && t.customdata[el.__data__.i];
      if (!c) return;
      el.style.opacity = !st.active || st.near.has(c[0]) ? "" : "0.18";
      el.style.stroke = st.chosen.has(c[0]) ? "#111827" : "";
      el.style.strokeWidth = st.chosen.has(c[0]) ? "3px" : "";
    });
  });
}

function updateSelectionBar(chosen) {
  const text = document.getElementById("selection-text");
  if (!text) return;
  const ids = [...chosen];
  text.textContent = ids.length === 0 ? "No node selected."
    : ids.length === 1 ? `Selected ${ids[0]}` : `${ids.length} nodes selected`;
  const form = document.getElementById("group-form");
  if (form) {
    form.hidden = ids.length < 2;
    document.getElementById("group-members").value = JSON.stringify(ids.map((id) => {
      const m = id.match(/^L(\d+)\/N(\d+)@(\d+)$/);
      return { layer: +m[1], neuron: +m[2], position: +m[3] };
    }));
    const button = document.getElementById("group-btn");
    if (button) button.textContent = `Group ${ids.length} selected`;
  }
}

function filterParams() {
  const q = new URLSearchParams();
  const tau = document.getElementById("view-tau");
  const edge = document.getElementById("view-edge");
  const collapse = document.getElementById("view-collapse");
  if (tau && Number(tau.value) > Number(tau.min) + 1e-9) q.set("tau", tau.value);
  if (edge && Number(edge.value) > 0) q.set("edge_threshold", edge.value);
  if (collapse && collapse.value) q.set("collapse", collapse.value);
  return q;
}

function loadPaths() {
  const id = runId();
  if (!id || !document.getElementById("paths")) return;
  const q = filterParams();
  q.delete("collapse");
  if (graph.view === "paths" && graph.selected) q.set("node", graph.selected);
  window.htmx.ajax("GET", `/runs/${id}/paths?${q}`,
    { source: "#paths", target: "#paths", swap: "innerHTML" });
}

// The view lives in the URL: /runs/ID?tau=&edge_threshold=&collapse=&node=&view=.
export function saveState() {
  const id = runId();
  if (!id) return;
  const q = filterParams();
  if (graph.selected) q.set("node", graph.selected);
  if (graph.view) q.set("view", graph.view);
  const url = `/runs/${id}${q.toString() ? "?" + q : ""}`;
  history.replaceState(history.state, "", url);
  const link = document.getElementById("permalink");
  if (link) link.href = url;
}

// On a permalink with state: set the filter inputs, re-filter, then select and load.
export function restoreState() {
  const id = runId();
  if (!id || id === graph.run) return;
  graph.run = id;
  graph.selected = null; graph.multi = new Set(); graph.view = null;
  if (!location.pathname.startsWith(`/runs/${id}`)) { saveState(); return; }
  const q = new URLSearchParams(location.search);
  graph.selected = q.get("node");
  graph.multi = new Set(graph.selected ? [graph.selected] : []);
  graph.view = q.get("view");
  const tau = document.getElementById("view-tau");
  const edge = document.getElementById("view-edge");
  const collapse = document.getElementById("view-collapse");
  let refilter = false;
  if (q.has("tau") && tau) {
    tau.value = q.get("tau");
    document.getElementById("tau-out").textContent = Number(tau.value).toFixed(3);
    refilter = true;
  }
  if (q.has("edge_threshold") && edge) { edge.value = q.get("edge_threshold"); refilter = true; }
  if (q.has("collapse") && collapse) { collapse.value = q.get("collapse"); refilter = true; }
  if (refilter) window.htmx.trigger("#graph-filters", "submit");
  else applySelection(plot());
  if (graph.selected) {
    const m = graph.selected.match(/^L(\d+)\/N(\d+)@(\d+)$/);
    if (m) openNeuron(m[1], m[2], m[3]);
  }
  if (graph.view) loadPaths();
  // ?open=L6/N1284 (a search hit's link): that neuron's panel, kept in the circuit or not.
  const open = (q.get("open") || "").match(/^L(\d+)\/N(\d+)$/);
  if (open && !graph.selected) openNeuron(open[1], open[2], null, id, true);
  saveState();
}

function toggleCollapse(name, on) {
  const input = document.getElementById("view-collapse");
  if (!input) return;
  const names = new Set(input.value.split(",").filter(Boolean));
  if (on) names.add(name); else names.delete(name);
  input.value = [...names].join(",");
  window.htmx.trigger("#graph-filters", "submit");
}

function exportFigure(format) {
  const gd = plot();
  if (!gd || !window.Plotly) return;
  const id = runId() || "graph";
  window.Plotly.downloadImage(gd, { format, filename: `circuitlab-${id.slice(0, 8)}-graph`,
    width: Math.max(gd.clientWidth, 900), height: gd.clientHeight || 600 });
}

// --- the graph's controls -----------------------------------------------------------------

action("toggle-collapse", (box) => toggleCollapse(box.value, box.checked), "change");

action("why-b", () => {
  graph.view = "whyb"; graph.selected = null; graph.multi = new Set();
  applySelection(plot()); loadPaths(); saveState();
});

action("clear-selection", () => {
  graph.view = null; graph.selected = null; graph.multi = new Set();
  applySelection(plot()); saveState();
  const paths = document.getElementById("paths");
  if (paths) paths.innerHTML = "";
});

action("export-figure", (el) => exportFigure(el.dataset.export));

// The tau slider shows its value as it moves.
action("show-tau", (input) => {
  const out = document.getElementById("tau-out");
  if (out) out.textContent = Number(input.value).toFixed(3);
}, "input");

// Hovering a path draws it on the graph; leaving restores the selection.
export function listenForPathHover() {
  document.addEventListener("mouseover", (event) => {
    const li = event.target.closest && event.target.closest("li.path[data-path]");
    if (li) applySelection(plot(), li.dataset.path.split(" "));
  });
  document.addEventListener("mouseout", (event) => {
    const li = event.target.closest && event.target.closest("li.path[data-path]");
    if (li && !li.contains(event.relatedTarget)) applySelection(plot());
  });
}
