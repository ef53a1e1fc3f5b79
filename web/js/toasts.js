// Short messages in the corner. The same message again counts up instead of stacking; each goes
// away by itself (errors after longer; never while the pointer is on it) or with its × button.
import { element } from "./widgets.js";

const LIFETIME_MS = { info: 5000, warning: 9000, error: 15000 };
const MAX_SHOWN = 4;

export class Toasts {
  constructor(box) {
    this.box = box;
  }

  // details: longer text (a traceback) kept folded under the message.
  show(message, kind = "info", { details = "", group = null } = {}) {
    const same = [...this.box.children].find((t) => t.dataset.message === message && t.dataset.kind === kind);
    if (same) {
      const count = Number(same.dataset.count) + 1;
      same.dataset.count = String(count);
      same.querySelector(".toast-count").textContent = `×${count}`;
      this.arm(same);
      return same;
    }
    const item = element("div", `toast toast-${kind}`);
    Object.assign(item.dataset, { message, kind, count: "1", group: group ?? "" });
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    const body = element("div", "toast-body");
    body.append(element("pre", "toast-text", message));
    if (details) {
      const more = element("details", "toast-details");
      more.append(element("summary", "", "details"), element("pre", "", details));
      body.append(more);
    }
    const count = element("span", "toast-count");
    const close = element("button", "toast-close", "×");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss");
    close.addEventListener("click", () => item.remove());
    item.append(body, count, close);
    item.addEventListener("pointerenter", () => clearTimeout(item.timer));
    item.addEventListener("pointerleave", () => this.arm(item));
    item.addEventListener("toggle", () => clearTimeout(item.timer), true); // opened details: the user is reading
    this.box.append(item);
    while (this.box.children.length > MAX_SHOWN) this.box.firstChild.remove();
    this.arm(item);
    return item;
  }

  arm(item) {
    clearTimeout(item.timer);
    item.timer = setTimeout(() => item.remove(), LIFETIME_MS[item.dataset.kind] ?? LIFETIME_MS.info);
  }

  // Messages about an earlier attempt go when a new one starts (a new queue clears old errors).
  clearGroup(group) {
    for (const item of [...this.box.querySelectorAll(".toast")]) if (item.dataset.group === group) item.remove();
  }
}
