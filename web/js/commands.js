// Keyboard shortcuts, the toolbar, the context menu and the clipboard.
import { MODE } from "./graph.js";
import { downloadJson } from "./files.js";
import { graphToPrompt } from "./convert.js";

const CLIPBOARD_KEY = "vidgraph.clipboard";

// Shortcut → action. Keys follow ComfyUI's so muscle memory carries over.
const KEYMAP = {
  "Ctrl+Enter": (app) => app.queue(),
  "Ctrl+Shift+Enter": (app) => app.queue({ front: true }),
  "Ctrl+Alt+Enter": (app) => app.api.interrupt(),
  "Ctrl+z": (app) => app.undoStep(),
  "Ctrl+y": (app) => app.redoStep(),
  "Ctrl+Shift+z": (app) => app.redoStep(),
  "Ctrl+c": (app) => copySelection(app),
  "Ctrl+v": (app) => paste(app, false),
  "Ctrl+Shift+v": (app) => paste(app, true),
  "Ctrl+a": (app) => app.view.setSelection([...app.graph.nodes.keys()]),
  "Delete": (app) => app.deleteSelected(),
  "Backspace": (app) => app.deleteSelected(),
  "Ctrl+b": (app) => app.toggleMode(MODE.BYPASS),
  "Ctrl+m": (app) => app.toggleMode(MODE.NEVER),
  "Alt+c": (app) => app.toggleCollapse(),
  "Ctrl+g": (app) => app.groupSelected(),
  "Ctrl+s": (app) => saveWorkflow(app),
  "Ctrl+o": () => document.querySelector("#file-input").click(),
  ".": (app) => app.view.fitView(app.selectedNodes()),
  "Alt+=": (app) => zoomCentre(app, 1.2),
  "Alt+-": (app) => zoomCentre(app, 1 / 1.2),
  "Shift+a": (app) => openSearchAtCentre(app),
  "r": (app) => app.refreshDefinitions(),
  "ArrowLeft": (app) => nudge(app, -10, 0),
  "ArrowRight": (app) => nudge(app, 10, 0),
  "ArrowUp": (app) => nudge(app, 0, -10),
  "ArrowDown": (app) => nudge(app, 0, 10),
  "Escape": (app) => { app.view.setSelection([]); hideMenu(); },
};

// Shortcuts that still apply while typing in a widget.
const WHILE_TYPING = new Set(["Ctrl+Enter", "Ctrl+Shift+Enter", "Ctrl+Alt+Enter", "Ctrl+s"]);

export function keyName(e) {
  const mods = [e.ctrlKey || e.metaKey ? "Ctrl" : "", e.altKey ? "Alt" : "", e.shiftKey ? "Shift" : ""].filter(Boolean);
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  return [...mods, key === "+" ? "=" : key].join("+");
}

export function installCommands(app) {
  document.addEventListener("keydown", (e) => {
    const name = keyName(e);
    const action = KEYMAP[name];
    if (!action) return;
    const typing = e.target.closest?.("input, textarea, select, [contenteditable=true]");
    // Ctrl+Z inside a textarea is the textarea's own undo, never the graph's.
    if (typing && !WHILE_TYPING.has(name)) return;
    if (app.search.isOpen && name !== "Escape") return;
    e.preventDefault();
    // Leaving the field fires its change event first, so Ctrl+Enter queues what was just typed.
    if (typing && e.target.closest(".node")) e.target.blur();
    action(app);
  });

  const on = (selector, fn) => document.querySelector(selector).addEventListener("click", fn);
  on("#queue-button", () => app.queue());
  on("#add-node-button", () => openSearchAtCentre(app));
  on("#interrupt-button", () => app.api.interrupt());
  on("#undo-button", () => app.undoStep());
  on("#redo-button", () => app.redoStep());
  on("#fit-button", () => app.view.fitView());
  on("#save-button", () => saveWorkflow(app));
  on("#export-api-button", () => downloadJson(graphToPrompt(app.graph), "workflow_api.json"));
  on("#open-button", () => document.querySelector("#file-input").click());
  on("#new-button", () => app.workspace.newTab());
  on("#panel-button", () => app.queuePanel.toggle());
  document.querySelector("#file-input").addEventListener("change", async (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    await app.onFilesDropped(files, null);
  });
  const menu = document.querySelector("#workflows-menu");
  menu.addEventListener("change", async () => {
    if (menu.value) await app.openBundledWorkflow(menu.value);
    menu.value = "";
  });

  app.canvas.addEventListener("focusin", (e) => {
    if (e.target.classList?.contains("node") && !app.view.selected.has(Number(e.target.dataset.nodeId))) {
      app.view.setSelection([Number(e.target.dataset.nodeId)]);
    }
  });
  app.canvas.addEventListener("contextmenu", (e) => {
    e.preventDefault();
    showMenu(app, e);
  });
  document.addEventListener("pointerdown", (e) => { if (!e.target.closest("#context-menu")) hideMenu(); });
}

// The keyboard way to add a node (Blender's Shift+A): the palette opens mid-canvas.
function openSearchAtCentre(app) {
  const r = app.canvas.getBoundingClientRect();
  app.openSearch({ clientX: r.left + r.width / 2 - 170, clientY: r.top + r.height / 3 });
}

// Arrow keys move the selected nodes: node placement without a mouse.
function nudge(app, dx, dy) {
  const nodes = app.selectedNodes();
  if (!nodes.length) return;
  for (const node of nodes) {
    node.pos = [node.pos[0] + dx, node.pos[1] + dy];
    app.view.positionNode(node);
  }
  app.view.updateLinks(nodes.map((n) => n.id));
  app.commit();
}

function zoomCentre(app, factor) {
  const r = app.canvas.getBoundingClientRect();
  app.view.zoomAt(r.left + r.width / 2, r.top + r.height / 2, factor);
  app.scheduleAutosave();
}

function saveWorkflow(app) {
  app.syncSizes();
  downloadJson(app.graph.serialize(), `${app.workspace.active.name.replace(/[\\/:*?"<>|]+/g, "_")}.json`);
  app.markSaved();
}

// ---- clipboard ------------------------------------------------------------------------
function copySelection(app) {
  const ids = new Set(app.view.selected);
  if (!ids.size) return;
  const wf = app.graph.serialize();
  const clip = {
    nodes: wf.nodes.filter((n) => ids.has(n.id)),
    links: wf.links.filter((l) => ids.has(l[3])),
  };
  localStorage.setItem(CLIPBOARD_KEY, JSON.stringify(clip));
}

// Pasted nodes land at the pointer; links among them are kept, and with
// keepIncoming (Ctrl+Shift+V) so are links from nodes outside the selection.
export function paste(app, keepIncoming) {
  const clip = JSON.parse(localStorage.getItem(CLIPBOARD_KEY) || "null");
  if (!clip?.nodes?.length) return;
  const { graph } = app;
  const x0 = Math.min(...clip.nodes.map((n) => n.pos[0]));
  const y0 = Math.min(...clip.nodes.map((n) => n.pos[1]));
  const [px, py] = app.pointerWorld;
  const newId = new Map();
  for (const saved of clip.nodes) {
    const copy = JSON.parse(JSON.stringify(saved));
    copy.id = graph.lastNodeId + 1;
    copy.pos = [saved.pos[0] - x0 + px, saved.pos[1] - y0 + py];
    for (const input of copy.inputs ?? []) input.link = null;
    graph.loadNode(copy);
    newId.set(saved.id, copy.id);
  }
  for (const [, originId, originSlot, targetId, targetSlot] of clip.links) {
    const target = clip.nodes.find((n) => n.id === targetId);
    const name = target?.inputs?.[targetSlot]?.name;
    if (name === undefined) continue;
    const origin = newId.get(originId) ?? (keepIncoming && graph.nodes.has(originId) ? originId : null);
    if (origin != null) graph.connect(origin, originSlot, newId.get(targetId), name);
  }
  app.view.renderAll();
  app.view.setSelection([...newId.values()]);
  app.commit();
}

// ---- context menu -------------------------------------------------------------------------
function hideMenu() {
  const menu = document.querySelector("#context-menu");
  if (menu) menu.hidden = true;
}

function showMenu(app, e) {
  const menu = document.querySelector("#context-menu");
  const nodeEl = e.target.closest(".node");
  const groupEl = e.target.closest(".group");
  const items = [];
  const world = app.view.clientToWorld(e.clientX, e.clientY);
  if (nodeEl) {
    const node = app.graph.nodes.get(Number(nodeEl.dataset.nodeId));
    if (!app.view.selected.has(node.id)) app.view.setSelection([node.id]);
    items.push(["Collapse / expand", () => app.toggleCollapse()]);
    items.push([node.mode === MODE.BYPASS ? "Stop bypassing" : "Bypass", () => app.toggleMode(MODE.BYPASS)]);
    items.push([node.mode === MODE.NEVER ? "Unmute" : "Mute", () => app.toggleMode(MODE.NEVER)]);
    items.push([node.flags.pinned ? "Unpin" : "Pin", () => { node.flags.pinned = !node.flags.pinned || undefined; app.commit(); }]);
    for (const w of node.widgets.filter((x) => !["CONTROL", "UPLOAD", "RAW"].includes(x.kind))) {
      const converted = node.inputs.some((i) => i.widget && i.name === w.name);
      items.push([converted ? `Convert ${w.name} back to a widget` : `Convert ${w.name} to an input`, () => {
        if (converted) app.graph.convertInputToWidget(node.id, w.name);
        else app.graph.convertWidgetToInput(node.id, w.name);
        app.view.renderNode(node);
        app.view.updateLinks();
        app.commit();
      }]);
    }
    items.push(["Group selected nodes", () => app.groupSelected()]);
    items.push(["Delete", () => app.deleteSelected()]);
  } else if (groupEl) {
    const group = app.graph.groups.find((g) => g.id === Number(groupEl.dataset.groupId));
    items.push(["Select nodes in group", () => app.view.setSelection(app.graph.nodesInGroup(group).map((n) => n.id))]);
    items.push(["Bypass group", () => { app.view.setSelection(app.graph.nodesInGroup(group).map((n) => n.id)); app.toggleMode(MODE.BYPASS); }]);
    items.push(["Mute group", () => { app.view.setSelection(app.graph.nodesInGroup(group).map((n) => n.id)); app.toggleMode(MODE.NEVER); }]);
    items.push(["Remove group", () => { app.graph.groups = app.graph.groups.filter((g) => g !== group); app.view.renderGroups(); app.commit(); }]);
  } else {
    items.push(["Add node…", () => app.openSearch({ clientX: e.clientX, clientY: e.clientY })]);
    items.push(["Add reroute", () => app.addNode("Reroute", world)]);
    items.push(["Add note", () => app.addNode("Note", world)]);
    items.push(["Add group", () => { app.graph.addGroup("Group", [world[0], world[1], 400, 300]); app.view.renderGroups(); app.commit(); }]);
    items.push(["Fit view", () => app.view.fitView()]);
    items.push(["Refresh node definitions (R)", () => app.refreshDefinitions()]);
  }
  menu.replaceChildren(...items.map(([label, action]) => {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "menuitem");
    b.textContent = label;
    b.addEventListener("click", () => { hideMenu(); action(); });
    return b;
  }));
  menu.hidden = false;
  Object.assign(menu.style, { left: `${Math.min(e.clientX, innerWidth - 260)}px`, top: `${Math.min(e.clientY, innerHeight - items.length * 30 - 10)}px` });
  menu.querySelector("button")?.focus();
}

