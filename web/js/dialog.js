// A small modal dialog (native <dialog>): questions that must not be missed, such as closing a
// tab with changes or files a loaded workflow needs. Resolves to the value of the button pressed.
import { element } from "./widgets.js";

export function showDialog({ title, body, buttons = [["OK", "ok"]], className = "" }) {
  const dialog = element("dialog", `vg-dialog ${className}`.trim());
  dialog.setAttribute("aria-label", title);
  const heading = element("h2", "vg-dialog-title", title);
  const content = element("div", "vg-dialog-body");
  if (typeof body === "string") content.append(element("p", "", body));
  else if (body) content.append(body);
  const row = element("div", "vg-dialog-buttons");
  return new Promise((resolve) => {
    const done = (value) => { dialog.close(); dialog.remove(); resolve(value); };
    buttons.forEach(([label, value, kind], i) => {
      const b = element("button", kind ?? (i === 0 ? "primary" : ""), label);
      b.type = "button";
      b.dataset.value = value;
      b.addEventListener("click", () => done(value));
      row.append(b);
    });
    // Escape (the dialog's cancel event) answers with the last button: the harmless one.
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); done(buttons.at(-1)?.[1] ?? null); });
    dialog.append(heading, content, row);
    document.body.append(dialog);
    dialog.showModal();
    row.querySelector("button")?.focus();
  });
}
