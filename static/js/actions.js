// The one place user actions are dispatched. An element says what it does in
// data-action="NAME" (the pages have no inline handlers: their Content-Security-Policy
// runs only /static and /vendor scripts); a module registers NAME's handler with
// action(NAME, handler) and the delegated listeners on document below call it with
// (element, event). A handler runs on "click" unless registered for "change" or "input".

const handlers = { click: new Map(), change: new Map(), input: new Map() };

export function action(name, handler, on = "click") {
  handlers[on].set(name, handler);
}

function dispatch(event) {
  const el = event.target.closest && event.target.closest("[data-action]");
  if (!el) return;
  const handler = handlers[event.type].get(el.dataset.action);
  if (handler) handler(el, event);
}

// Enter on a focusable element that is no native control (a table row or header with
// tabindex) does what a click on it does; buttons and links click on Enter by themselves.
const NATIVE = "a[href], button, input, select, textarea, summary";

function dispatchEnter(event) {
  if (event.key !== "Enter" || !event.target.closest) return;
  const el = event.target.closest("[data-action]");
  if (!el || el.matches(NATIVE) || event.target.closest(NATIVE)) return;
  const handler = handlers.click.get(el.dataset.action);
  if (handler) handler(el, event);
}

export function listen() {
  for (const type of Object.keys(handlers)) document.addEventListener(type, dispatch);
  document.addEventListener("keydown", dispatchEnter);
}
