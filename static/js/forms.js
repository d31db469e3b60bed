// Forms: an error answer shown at the field that caused it, the one-click prompt format
// switch, the correction form's training-text boxes and the intervention's scale factor.

import { action } from "./actions.js";

// Put a swapped-in error next to the form field that caused it.
function showFieldError(event) {
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
}

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

action("prompt-format", (button) => {
  const form = button.closest("form");
  applyFormat(form, JSON.parse(button.dataset.settings));
  markFormat(form);
});

// Any edit of a form with the switch may make its fields match another format, or none.
function markEditedForm(event) {
  const form = event.target.closest && event.target.closest("form");
  if (form && form.querySelector("[data-prompt-format]")) markFormat(form);
}

export function markFormats() {
  document.querySelectorAll("form").forEach((form) => {
    if (form.querySelector("[data-prompt-format]")) markFormat(form);
  });
}

// Correction form: add a training-text box (a copy of the page's <template>), remove one.
action("add-text", () => {
  const template = document.getElementById("text-box-template");
  const texts = document.getElementById("texts");
  if (!template || !texts) return;
  const box = template.content.firstElementChild.cloneNode(true);
  box.querySelector("label").textContent = `Text ${texts.querySelectorAll(".text-box").length + 1}`;
  texts.appendChild(box);
  box.querySelector("textarea").focus();
});

action("remove-text", (button) => button.closest(".text-box").remove());

// The neuron panel's "scale by" factor is the value its Scale button submits.
action("copy-scale", (input) => {
  document.getElementById("scale-btn").value = input.value;
}, "input");

export function listenForForms() {
  document.addEventListener("htmx:afterSwap", showFieldError);
  document.addEventListener("change", markEditedForm);
  document.addEventListener("input", markEditedForm);
}
