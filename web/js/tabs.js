// Several open workflows, each with its own undo history and last results, kept in one
// serialisable object so that a reload brings all of them back. No DOM here.
import { UndoStack } from "./undo.js";

export const TABS_FORMAT = 1;
const KEPT_UNDO_STEPS = 30; // per tab, in storage (the live stack keeps more)
const KEPT_PROMPTS = 50;

let counter = 0;
function newTabId() {
  return `t${Date.now().toString(36)}${(++counter).toString(36)}`;
}

export class Tab {
  constructor({ id = newTabId(), name = "Untitled", workflow = null, outputs = [], saved = null } = {}) {
    this.id = id;
    this.name = name;
    this.workflow = workflow; // the latest full graph (view included), as the app serialised it
    this.undo = new UndoStack();
    this.outputs = new Map(outputs); // node id → last `executed` output
    this.saved = saved; // undo snapshot when last loaded or saved to a file: "changed" is relative to it
    this.errors = new Map(); // node id → errors of the last queue or run (not kept across reloads)
  }

  get changed() {
    return this.undo.current !== null && this.saved !== null && this.undo.current !== this.saved;
  }

  get isEmpty() {
    return !this.workflow?.nodes?.length;
  }

  toJSON(keptSteps = KEPT_UNDO_STEPS) {
    return {
      id: this.id, name: this.name, workflow: this.workflow, saved: this.saved, outputs: [...this.outputs],
      undo: { past: this.undo.past.slice(-keptSteps), current: this.undo.current, future: this.undo.future.slice(-keptSteps) },
    };
  }

  static fromJSON(data) {
    const tab = new Tab(data);
    if (data.undo) {
      tab.undo.past = [...(data.undo.past ?? [])];
      tab.undo.current = data.undo.current ?? null;
      tab.undo.future = [...(data.undo.future ?? [])];
    }
    return tab;
  }
}

export class TabSet {
  constructor() {
    this.tabs = [];
    this.activeId = null;
    this.promptTabs = new Map(); // prompt id → id of the tab that queued it
  }

  get active() {
    return this.tabs.find((t) => t.id === this.activeId) ?? this.tabs[0] ?? null;
  }

  get(id) {
    return this.tabs.find((t) => t.id === id) ?? null;
  }

  // A new tab goes at the end and becomes the active one.
  add(options = {}) {
    const tab = new Tab({ ...options, name: this.freeName(options.name ?? "Untitled") });
    this.tabs.push(tab);
    this.activeId = tab.id;
    return tab;
  }

  // Two tabs never share a name: "svd_img2vid", "svd_img2vid (2)", ...
  freeName(name, except = null) {
    const taken = new Set(this.tabs.filter((t) => t !== except).map((t) => t.name));
    if (!taken.has(name)) return name;
    let i = 2;
    while (taken.has(`${name} (${i})`)) i++;
    return `${name} (${i})`;
  }

  // Removes a tab; the neighbour to its left (or the new first) becomes active. Never leaves zero tabs.
  remove(id) {
    const index = this.tabs.findIndex((t) => t.id === id);
    if (index < 0) return null;
    const [removed] = this.tabs.splice(index, 1);
    if (!this.tabs.length) this.tabs.push(new Tab({ name: "Untitled" }));
    if (this.activeId === id) this.activeId = this.tabs[Math.max(0, index - 1)].id;
    return removed;
  }

  rememberPrompt(promptId, tabId) {
    this.promptTabs.set(promptId, tabId);
    while (this.promptTabs.size > KEPT_PROMPTS) this.promptTabs.delete(this.promptTabs.keys().next().value);
  }

  // The tab a prompt's results belong to: the one that queued it, else the active one.
  tabForPrompt(promptId) {
    return this.get(this.promptTabs.get(promptId)) ?? this.active;
  }

  toJSON(keptSteps) {
    return {
      format: TABS_FORMAT, active: this.activeId,
      tabs: this.tabs.map((t) => t.toJSON(keptSteps)), prompts: [...this.promptTabs],
    };
  }

  static fromJSON(data) {
    const set = new TabSet();
    if (data?.format !== TABS_FORMAT || !Array.isArray(data.tabs)) return set;
    set.tabs = data.tabs.map((t) => Tab.fromJSON(t));
    set.activeId = set.get(data.active)?.id ?? set.tabs[0]?.id ?? null;
    set.promptTabs = new Map(Array.isArray(data.prompts) ? data.prompts : []);
    return set;
  }
}
