// The add-node palette: opened by double-click on the canvas or by dropping a link on empty space.
import { searchDefs } from "./nodedefs.js";

const MAX_RESULTS = 60;

export class SearchPalette {
  constructor(root, { getDefs, onPick }) {
    this.root = root;
    this.getDefs = getDefs;
    this.onPick = onPick;
    this.input = root.querySelector("#search-input");
    this.list = root.querySelector("#search-results");
    this.hint = root.querySelector("#search-hint");
    this.accepts = () => true;
    this.context = null;
    this.active = 0;
    this.input.addEventListener("input", () => this.refresh());
    this.input.addEventListener("keydown", (e) => this.onKey(e));
    this.list.addEventListener("pointerdown", (e) => e.preventDefault()); // keep focus in the input
    this.list.addEventListener("click", (e) => {
      const item = e.target.closest("li");
      if (item) this.pick(item.dataset.nodeType);
    });
    root.addEventListener("focusout", (e) => { if (!root.contains(e.relatedTarget)) this.close(); });
  }

  get isOpen() { return !this.root.hidden; }

  // context is handed back to onPick (e.g. the pending link to complete).
  open({ clientX, clientY, accepts = () => true, hint = "", context = null }) {
    this.accepts = accepts;
    this.context = context;
    this.hint.textContent = hint;
    this.root.hidden = false;
    Object.assign(this.root.style, { left: `${clientX}px`, top: `${clientY}px` });
    this.input.value = "";
    this.refresh();
    // Measured, not guessed: the whole palette (hint and list included) stays inside the window.
    const box = this.root.getBoundingClientRect();
    const x = Math.min(clientX, window.innerWidth - box.width - 8);
    const y = Math.min(clientY, window.innerHeight - box.height - 8);
    Object.assign(this.root.style, { left: `${Math.max(8, x)}px`, top: `${Math.max(8, y)}px` });
    this.input.focus();
  }

  close() {
    if (this.root.hidden) return;
    this.root.hidden = true;
    const context = this.context;
    this.context = null;
    this.onClose?.(context);
  }

  refresh() {
    const hits = searchDefs(this.getDefs(), this.input.value, this.accepts).slice(0, MAX_RESULTS);
    this.list.replaceChildren(...hits.map((def, i) => {
      const li = document.createElement("li");
      li.setAttribute("role", "option");
      li.id = `search-option-${i}`;
      li.dataset.nodeType = def.name;
      const name = document.createElement("span");
      name.className = "search-name";
      name.textContent = def.display_name || def.name;
      const category = document.createElement("span");
      category.className = "search-category";
      category.textContent = def.category || "";
      li.append(name, category);
      return li;
    }));
    this.setActive(0);
  }

  setActive(index) {
    const items = this.list.children;
    if (!items.length) { this.input.removeAttribute("aria-activedescendant"); return; }
    this.active = (index + items.length) % items.length;
    [...items].forEach((li, i) => li.setAttribute("aria-selected", String(i === this.active)));
    items[this.active].scrollIntoView({ block: "nearest" });
    this.input.setAttribute("aria-activedescendant", items[this.active].id);
  }

  onKey(e) {
    if (e.key === "ArrowDown") { e.preventDefault(); this.setActive(this.active + 1); }
    else if (e.key === "ArrowUp") { e.preventDefault(); this.setActive(this.active - 1); }
    else if (e.key === "Enter") {
      e.preventDefault();
      const item = this.list.children[this.active];
      if (item) this.pick(item.dataset.nodeType);
    } else if (e.key === "Escape") { e.preventDefault(); this.close(); }
    e.stopPropagation();
  }

  pick(type) {
    const context = this.context;
    this.context = null; // picked: closing must not cancel the pending action
    this.root.hidden = true;
    this.onPick(type, context);
  }
}
