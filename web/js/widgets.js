// Real form controls for node widgets: keyboard, copy/paste and textarea undo come for free.
import { clampNumber, CONTROL_MODES } from "./nodedefs.js";

let uid = 0;

// A new element with its class (and text); the node and widget builders make many.
export function element(tag, className, text) {
  const el = document.createElement(tag);
  el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

// onInput(widget, value) is called with the cleaned value after the user changes it.
export function buildWidget(node, widget, { onInput, onUpload }) {
  const row = element("div", `widget widget-${widget.kind.toLowerCase()}`);
  row.dataset.widget = widget.name;
  const id = `w${++uid}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = widget.kind === "CONTROL" ? "control after generate" : widget.name;
  const control = makeControl(widget, onInput, onUpload);
  control.id = id;
  control.name = widget.name;
  // A narrow node cuts labels short: the whole name (and what the input does) is in the tooltip.
  const tooltip = widget.spec?.options?.tooltip;
  label.title = tooltip ? `${label.textContent}: ${tooltip}` : label.textContent;
  if (tooltip) {
    row.title = tooltip;
    label.classList.add("has-tooltip");
  }
  if (widget.kind !== "CONTROL" && widget.kind !== "UPLOAD" && widget.kind !== "RAW") {
    // A socket on every widget: drop a link here to turn it into an input.
    const dot = element("span", "dot");
    row.classList.add("slot", "input", "widget-slot");
    row.dataset.input = widget.name;
    row.dataset.slotType = widget.kind;
    row.append(dot);
  }
  // Some controls come wrapped (a checkbox with its on/off text).
  const holder = control.parentElement ?? control;
  if (widget.kind === "UPLOAD") row.append(holder);
  else row.append(label, holder);
  return row;
}

function makeControl(widget, onInput, onUpload) {
  const opts = widget.spec?.options ?? {};
  switch (widget.kind) {
    case "INT":
    case "FLOAT": {
      const input = document.createElement("input");
      input.type = "number";
      if (typeof opts.min === "number") input.min = String(opts.min);
      if (typeof opts.max === "number" && opts.max <= Number.MAX_SAFE_INTEGER) input.max = String(opts.max);
      input.step = widget.kind === "INT" ? String(opts.step ?? 1) : String(opts.round || opts.step || "any");
      input.value = String(widget.value);
      input.addEventListener("change", () => {
        const value = clampNumber(input.value, widget.spec);
        input.value = String(value);
        onInput(widget, value);
      });
      return input;
    }
    case "STRING": {
      const input = document.createElement(opts.multiline ? "textarea" : "input");
      if (!opts.multiline) input.type = "text";
      if (opts.placeholder) input.placeholder = opts.placeholder;
      input.value = String(widget.value ?? "");
      input.addEventListener("change", () => onInput(widget, input.value));
      return input;
    }
    case "BOOLEAN": {
      const wrapper = element("span", "boolean");
      const input = document.createElement("input");
      input.type = "checkbox";
      input.checked = Boolean(widget.value);
      const state = element("span", "boolean-state");
      const sync = () => { state.textContent = input.checked ? (opts.label_on ?? "true") : (opts.label_off ?? "false"); };
      sync();
      input.addEventListener("change", () => { sync(); onInput(widget, input.checked); });
      wrapper.append(input, state);
      return input;
    }
    case "COMBO":
    case "CONTROL": {
      const select = document.createElement("select");
      const values = widget.kind === "CONTROL" ? CONTROL_MODES : [...(opts.values ?? [])];
      // A loaded workflow may name a file that is not here: show it rather than silently switch.
      if (!values.includes(widget.value)) values.unshift(widget.value);
      for (const v of values) {
        const option = document.createElement("option");
        option.value = option.textContent = String(v);
        if (widget.kind === "COMBO" && !(opts.values ?? []).includes(v)) option.dataset.missing = "true";
        select.append(option);
      }
      select.value = String(widget.value);
      select.addEventListener("change", () => onInput(widget, select.value));
      return select;
    }
    case "UPLOAD": {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "upload";
      button.textContent = "choose file to upload";
      const file = document.createElement("input");
      file.type = "file";
      file.accept = "image/*,video/*";
      file.hidden = true;
      button.append(file);
      button.addEventListener("click", (e) => { if (e.target === button) file.click(); });
      file.addEventListener("change", () => { if (file.files[0]) onUpload(widget, file.files[0]); });
      return button;
    }
    default: {
      // Values of nodes without a definition here (plugins, PrimitiveNode): edited as JSON.
      const input = document.createElement("input");
      input.type = "text";
      input.value = typeof widget.value === "string" ? widget.value : JSON.stringify(widget.value);
      input.addEventListener("change", () => {
        let value = input.value;
        try { value = JSON.parse(input.value); } catch { /* a plain string */ }
        onInput(widget, value);
      });
      return input;
    }
  }
}
