// The open workflows as tabs above the canvas: switching, opening, closing (never silently
// discarding changes), and keeping all of them, with their undo histories, in the browser.
import { TabSet } from "./tabs.js";
import { element } from "./widgets.js";
import { showDialog } from "./dialog.js";

const TABS_KEY = "vidgraph.tabs";
const LEGACY_KEY = "vidgraph.workflow"; // one graph, before tabs

// sessionStorage keeps each browser tab's own set across its reloads; localStorage holds the
// last set any browser tab saved, for a new browser tab. Two browser tabs never overwrite each other's restore.
function readStored() {
  const read = (store, key) => { try { return JSON.parse(store.getItem(key) ?? "null"); } catch { return null; } };
  const tabs = read(sessionStorage, TABS_KEY) ?? read(localStorage, TABS_KEY);
  if (tabs) return TabSet.fromJSON(tabs);
  const legacy = read(sessionStorage, LEGACY_KEY) ?? read(localStorage, LEGACY_KEY);
  const set = new TabSet();
  if (legacy?.nodes) set.add({ name: "Restored", workflow: legacy });
  return set;
}

function writeStored(set) {
  // A full store drops old undo steps before giving up: the graphs themselves matter most.
  for (const steps of [undefined, 5, 0]) {
    const text = JSON.stringify(set.toJSON(steps));
    try {
      sessionStorage.setItem(TABS_KEY, text);
      localStorage.setItem(TABS_KEY, text);
      return true;
    } catch { /* quota: try with less */ }
  }
  return false;
}

export class Workspace {
  constructor(app) {
    this.app = app;
    this.set = new TabSet();
    this.bar = document.querySelector("#tabs");
    this.bar.addEventListener("click", (e) => this.onClick(e));
    this.bar.addEventListener("auxclick", (e) => {
      const tab = e.target.closest("[data-tab-id]");
      if (e.button === 1 && tab) this.close(tab.dataset.tabId);
    });
  }

  get active() {
    return this.set.active;
  }

  // The tabs saved by this browser; false when there were none (a first visit).
  restore() {
    this.set = readStored();
    if (!this.set.tabs.length) {
      this.set.add({ name: "Untitled" });
      this.render();
      return false;
    }
    this.render();
    return true;
  }

  // The current graph into its tab, then every tab into the browser.
  save() {
    const tab = this.active;
    if (tab) tab.workflow = this.app.graph.serialize();
    writeStored(this.set);
    this.render();
  }

  // Where a loaded workflow goes: the active tab when it is empty, else a new tab.
  // Loading never replaces a graph that has nodes.
  tabForLoad(name) {
    const tab = this.active;
    // (an emptied tab whose undo could bring nodes back is not empty)
    if (tab && this.app.graph.nodes.size === 0 && !tab.undo.canUndo) {
      tab.name = this.set.freeName(name, tab);
      return tab;
    }
    this.save();
    return this.set.add({ name });
  }

  newTab() {
    this.save();
    const tab = this.set.add({ name: "Untitled" });
    this.app.showTab(tab, { fit: true });
    return tab;
  }

  activate(id) {
    if (id === this.active?.id || !this.set.get(id)) return;
    this.save();
    this.set.activeId = id;
    this.app.showTab(this.active);
  }

  // A tab with changes since it was opened or saved asks first.
  async close(id) {
    const tab = this.set.get(id);
    if (!tab) return false;
    if (tab.id === this.active?.id) tab.workflow = this.app.graph.serialize();
    if (tab.changed && !tab.isEmpty) {
      const answer = await showDialog({
        title: `Close “${tab.name}”?`,
        body: "It has changes that were not saved to a file. Closing the tab discards them and its undo history.",
        buttons: [["Close and discard", "discard", "danger"], ["Keep it open", "keep"]],
        className: "confirm-close",
      });
      if (answer !== "discard") return false;
    }
    const wasActive = tab.id === this.active?.id;
    this.set.remove(id);
    if (wasActive) this.app.showTab(this.active, { fit: this.active.isEmpty });
    this.save();
    return true;
  }

  rename(id, name) {
    const tab = this.set.get(id);
    if (tab && name.trim()) { tab.name = this.set.freeName(name.trim(), tab); this.save(); }
  }

  onClick(e) {
    const closeButton = e.target.closest(".tab-close");
    const tabEl = e.target.closest("[data-tab-id]");
    if (closeButton && tabEl) this.close(tabEl.dataset.tabId);
    else if (e.target.closest("#new-tab-button")) this.newTab();
    else if (tabEl) this.activate(tabEl.dataset.tabId);
  }

  render() {
    const items = this.set.tabs.map((tab) => {
      const item = element("div", "tab");
      item.dataset.tabId = tab.id;
      item.setAttribute("role", "tab");
      item.setAttribute("aria-selected", String(tab.id === this.active?.id));
      item.classList.toggle("changed", tab.changed);
      item.title = tab.changed ? `${tab.name} (changed since opened or saved)` : tab.name;
      const label = element("span", "tab-name", tab.name);
      label.addEventListener("dblclick", () => this.renameInline(tab, label));
      const close = element("button", "tab-close", "×");
      close.type = "button";
      close.setAttribute("aria-label", `Close ${tab.name}`);
      item.append(element("span", "tab-changed", "●"), label, close);
      return item;
    });
    const add = element("button", "", "+");
    add.type = "button";
    add.id = "new-tab-button";
    add.title = "New tab (an empty workflow)";
    add.setAttribute("aria-label", "New tab");
    this.bar.replaceChildren(...items, add);
  }

  renameInline(tab, label) {
    this.app.renameInline(label, (name) => this.rename(tab.id, name));
  }
}
