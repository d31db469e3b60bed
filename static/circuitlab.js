// circuitlab's page glue: inline errors, Plotly figures from server-sent JSON, the graph's
// click-to-open neuron panel, sortable tables and figure exports. No framework, no CDN.

// Put a swapped-in error next to the form field that caused it.
document.addEventListener("htmx:afterSwap", (event) => {
  const form = event.detail.requestConfig && event.detail.requestConfig.elt.closest("form");
  if (!form) return;
  form.querySelectorAll(".field-error").forEach((el) => el.remove());
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
  const error = event.detail.target.querySelector(".error[data-field]");
  if (!error) return;
  const name = error.dataset.field.split(/[.[]/)[0];
  const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
  if (!input) return;
  const section = input.closest("details");
  if (section) section.open = true;  // a collapsed setting must show its error
  input.setAttribute("aria-invalid", "true");
  const note = document.createElement("div");
  note.className = "field-error";
  note.setAttribute("role", "alert");
  note.textContent = error.querySelector(".message")?.textContent || error.textContent.trim();
  input.insertAdjacentElement("afterend", note);
  input.focus();
});

function runId() {
  const run = document.getElementById("run");
  return run ? run.dataset.run : null;
}

function openNeuron(layer, neuron, position) {
  const id = runId();
  if (!id) return;
  const q = new URLSearchParams({ layer, neuron });
  if (position !== undefined && position !== null) q.set("position", position);
  htmx.ajax("GET", `/runs/${id}/neuron?${q}`, { target: "#panel", swap: "innerHTML" });
}

// Every <script type="application/json" class="plotly-figure" data-target=ID> becomes a
// figure in the element with that id; the attribution graph also gets its click handler.
function renderFigures(root) {
  if (!window.Plotly) return;
  root.querySelectorAll("script.plotly-figure").forEach((script) => {
    const target = document.getElementById(script.dataset.target);
    if (!target) return;
    const fig = JSON.parse(script.textContent);
    Plotly.react(target, fig.data, fig.layout,
      { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] });
    if (target.id === "graph-plot" && !target.dataset.bound) {
      target.dataset.bound = "1";
      target.on("plotly_click", (ev) => {
        const point = ev.points && ev.points[0];
        if (!point || !point.customdata) return;
        const [, layer, neuron, position] = point.customdata;
        openNeuron(layer, neuron, position);
      });
    }
    target.dataset.rendered = "1";
  });
}

document.addEventListener("htmx:afterSettle", (event) => renderFigures(event.detail.elt));
window.addEventListener("load", () => renderFigures(document));

// Neurons table: click (or Enter on) a header to sort, a row to open the neuron.
document.addEventListener("click", (event) => {
  const th = event.target.closest("table.sortable th[data-sort]");
  if (th) { sortBy(th); return; }
  const row = event.target.closest("tr.node-row");
  if (row) openNeuron(row.dataset.layer, row.dataset.neuron, row.dataset.position);
  const exp = event.target.closest("[data-export]");
  if (exp) exportFigure(exp.dataset.export);
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  const th = event.target.closest && event.target.closest("table.sortable th[data-sort]");
  if (th) { sortBy(th); return; }
  const row = event.target.closest && event.target.closest("tr.node-row");
  if (row) openNeuron(row.dataset.layer, row.dataset.neuron, row.dataset.position);
});

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

// The tau slider shows its value as it moves.
document.addEventListener("input", (event) => {
  if (event.target.id === "view-tau") {
    const out = document.getElementById("tau-out");
    if (out) out.textContent = Number(event.target.value).toFixed(3);
  }
});

function exportFigure(format) {
  const plot = document.getElementById("graph-plot");
  if (!plot || !window.Plotly) return;
  const id = runId() || "graph";
  Plotly.downloadImage(plot, { format, filename: `circuitlab-${id.slice(0, 8)}-graph`,
    width: Math.max(plot.clientWidth, 900), height: plot.clientHeight || 600 });
}

// Correction form: add and remove training-text boxes.
document.addEventListener("click", (event) => {
  if (event.target.id === "add-text") {
    const box = document.createElement("div");
    box.className = "text-box";
    const n = document.querySelectorAll("#texts .text-box").length + 1;
    box.innerHTML = `<label>Text ${n}</label><textarea name="texts" rows="4"></textarea>` +
      `<button type="button" class="link remove-text">remove</button>`;
    document.getElementById("texts").appendChild(box);
    box.querySelector("textarea").focus();
  } else if (event.target.classList && event.target.classList.contains("remove-text")) {
    event.target.closest(".text-box").remove();
  }
});


// The one-click prompt format switch: set the form's format fields (the chat template box,
// system prompt and answer prefix; on the Jobs form also the training texts' template) to
// a named format, and mark the button of the format the fields now hold.
function applyFormat(form, settings) {
  const set = (name, value) => {
    const input = form.querySelector(`[name="${name}"]`);
    if (!input) return;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value == null ? "" : value;
  };
  set("chat_template", settings.chat_template);
  set("system_prompt", settings.system_prompt);
  set("answer_prefix", settings.answer_prefix);
  set("use_chat_template", settings.chat_template);
  set("train_system_prompt", settings.system_prompt);
}

function markFormat(form) {
  const box = form.querySelector('[name="chat_template"]');
  const prefix = form.querySelector('[name="answer_prefix"]');
  const system = form.querySelector('[name="system_prompt"]');
  form.querySelectorAll("[data-prompt-format]").forEach((button) => {
    const s = JSON.parse(button.dataset.settings);
    const match = box && box.checked === s.chat_template
      && (prefix ? prefix.value : "") === s.answer_prefix
      && (!s.chat_template || !system || system.value === (s.system_prompt || ""));
    button.setAttribute("aria-pressed", match ? "true" : "false");
  });
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-prompt-format]");
  if (!button) return;
  const form = button.closest("form");
  applyFormat(form, JSON.parse(button.dataset.settings));
  markFormat(form);
});
document.addEventListener("change", (event) => {
  const form = event.target.closest && event.target.closest("form");
  if (form && form.querySelector("[data-prompt-format]")) markFormat(form);
});
document.addEventListener("input", (event) => {
  const form = event.target.closest && event.target.closest("form");
  if (form && form.querySelector("[data-prompt-format]")) markFormat(form);
});
window.addEventListener("load", () => {
  document.querySelectorAll("form").forEach((form) => {
    if (form.querySelector("[data-prompt-format]")) markFormat(form);
  });
});
