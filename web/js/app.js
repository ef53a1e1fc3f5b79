// The editor application: owns the graph, the view and the server connection, and
// turns user actions into graph changes that are recorded for undo and autosaved.
import { Api } from "./api.js";
import { Graph, MODE } from "./graph.js";
import { GraphView } from "./view.js";
import { installGestures } from "./gestures.js";
import { SearchPalette } from "./search.js";
import { Execution } from "./execution.js";
import { Extensions } from "./extensions.js";
import { Workspace } from "./workspace.js";
import { promptToGraph, looksLikeApiPrompt, graphToPrompt } from "./convert.js";
import { typesCompatible } from "./types.js";
import { installDropTarget, readWorkflowFile } from "./files.js";
import { installCommands } from "./commands.js";
import { Toasts } from "./toasts.js";
import { Player } from "./player.js";
import { QueuePanel } from "./queuepanel.js";
import { linkFitRank } from "./nodedefs.js";
import { checkModels, openStartup } from "./arrivals.js";

export class App {
  constructor() {
    this.api = new Api();
    this.defs = {};
    this.graph = new Graph({});
    this.extensions = new Extensions(this);
    this.pointerWorld = [0, 0];
    this.canvas = document.querySelector("#canvas");
    this.toasts = new Toasts(document.querySelector("#toasts"));
    this.player = new Player();
  }

  // Each tab has its own undo history.
  get undo() { return this.workspace.active.undo; }

  async start() {
    globalThis.vidgraph = this;
    this.workspace = new Workspace(this);
    this.view = new GraphView(this.canvas, this.graph, {
      onWidgetInput: (node, widget, value) => {
        widget.value = value;
        if (node.widgets.some((w) => w.kind === "UPLOAD")) this.execution.paintPreview(node.id);
        this.commit();
      },
      onUpload: (node, widget, file) => this.uploadInto(node, widget.target, file),
      onNodeRendered: (node, el) => { this.execution?.restoreNode(node); this.extensions.callSync("nodeRendered", node, el); },
      onSelectionChange: (ids) => this.canvas.classList.toggle("has-selection", ids.size > 0),
    });
    this.execution = new Execution(this);
    this.queuePanel = new QueuePanel(this);
    this.search = new SearchPalette(document.querySelector("#search"), {
      getDefs: () => this.graph.defs,
      onPick: (type, context) => this.addNodeFromSearch(type, context),
    });
    this.search.onClose = (context) => {
      // A link picked up from an input and dropped on empty space stays removed.
      if (context?.pending) { this.view.updateLinks(); this.commit(); }
      this.canvas.focus({ preventScroll: true });
    };
    installGestures(this.view, {
      commit: () => this.commit(),
      viewChanged: () => this.scheduleAutosave(),
      openSearch: (at) => this.openSearch(at),
      openPreview: (id) => this.execution.openPlayer(id),
      toggleCollapse: (ids) => this.toggleCollapse(ids),
      rename: (id, el) => this.renameInline(el, (title) => { this.graph.nodes.get(id).title = title; }),
      renameGroup: (id, el) => this.renameInline(el, (title) => { this.graph.groups.find((g) => g.id === id).title = title; }),
      refused: (type) => this.setStatus(`link refused: ${type} does not fit there`),
    });
    this.canvas.addEventListener("pointermove", (e) => { this.pointerWorld = this.view.clientToWorld(e.clientX, e.clientY); });
    // A reload or close inside the autosave's debounce would drop the last change (or the results
    // that just arrived): write it now.
    window.addEventListener("pagehide", () => { if (this.autosaveTimer) this.autosave(); });
    installCommands(this);
    installDropTarget(document.body, (files, e) => this.onFilesDropped(files, e));

    await this.loadDefinitions();
    // Extensions come before any graph is built, so that their definition edits apply to it.
    await this.loadExtensions();
    this.workspace.restore();
    this.showTab(this.workspace.active);
    await this.openStartup();
    await this.extensions.call("setup");
    // A server started again (./dev demo once more) may have a new result to show.
    this.api.addEventListener("connected", () => { this.setStatus("connected"); this.openStartup(); });
    this.api.connect();
    this.populateWorkflowMenu();
    document.body.dataset.ready = "true";
  }

  async loadDefinitions() {
    try {
      this.defs = await this.api.getObjectInfo();
    } catch (err) {
      this.toast(`Could not load node definitions: ${err.message}`, "error");
    }
    this.graph.setDefs(this.defs);
  }

  async loadExtensions() {
    let urls = [];
    try { urls = await this.api.getExtensions(); } catch { return; }
    await this.extensions.loadAll(urls);
    await this.extensions.call("beforeRegisterNodeDefs", this.defs);
    this.graph.setDefs(this.defs);
  }

  // Re-reads /object_info (new model files, changed packs) and rebuilds the nodes with it;
  // widget values and links are kept because the graph goes through its saved form.
  async refreshDefinitions() {
    await this.loadDefinitions();
    await this.extensions.call("beforeRegisterNodeDefs", this.defs);
    this.graph.setDefs(this.defs);
    const ds = this.graph.extra.ds;
    this.graph.load(this.graph.serialize());
    if (ds) this.graph.extra.ds = ds;
    this.view.renderAll();
    this.setStatus("node definitions refreshed");
  }

  // ComfyUI's name for it, so extensions written for ComfyUI find it where they expect.
  registerExtension(extension) {
    this.extensions.register(extension);
  }

  // ---- recording -----------------------------------------------------------------
  snapshot() {
    const wf = this.graph.serialize();
    delete wf.extra.ds; // moving the view is not an undoable edit
    return JSON.stringify(wf);
  }

  // Every finished user action ends here: one undo step, one autosave.
  commit() {
    if (this.undo.record(this.snapshot())) {
      this.scheduleAutosave();
      this.workspace.render(); // the tab's "changed" mark
      this.execution.pruneErrors();
      document.body.dataset.revision = String(Number(document.body.dataset.revision ?? 0) + 1);
    }
  }

  scheduleAutosave() {
    clearTimeout(this.autosaveTimer);
    this.autosaveTimer = setTimeout(() => this.autosave(), 250);
  }

  autosave() {
    clearTimeout(this.autosaveTimer);
    this.autosaveTimer = null;
    this.workspace.save();
  }

  // The tab's graph on the canvas, at its saved view (fitted when it has none, or when asked),
  // with its own undo history and last results.
  showTab(tab, { fit = false } = {}) {
    try {
      this.graph.load(tab.workflow ?? { nodes: [], links: [] });
    } catch (err) {
      this.toast(`Could not restore ${tab.name}: ${err.message}`, "error");
      this.graph.load({ nodes: [], links: [] });
    }
    this.view.selected.clear();
    const ds = this.graph.extra.ds;
    const hasView = ds && Number.isFinite(ds.scale) && Array.isArray(ds.offset);
    if (hasView) { this.view.scale = ds.scale; this.view.offset = [...ds.offset]; }
    this.view.renderAll();
    if (fit || !hasView) this.view.fitView();
    const state = this.snapshot();
    if (tab.undo.current === null) tab.undo.reset(state);
    else tab.undo.current = state; // the same graph; node definitions may have filled in defaults
    if (tab.saved === null) tab.saved = state;
    this.execution.showTab(tab);
    this.workspace.render();
    document.title = this.baseTitle();
  }

  baseTitle() {
    return `${this.workspace.active.name} · vidgraph`;
  }

  // After saving to a file, the tab's graph counts as unchanged.
  markSaved() {
    const tab = this.workspace.active;
    tab.saved = this.undo.current;
    this.workspace.render();
  }

  restore(state) {
    if (state == null) return;
    const ds = this.graph.extra.ds;
    this.graph.load(JSON.parse(state));
    if (ds) this.graph.extra.ds = ds;
    this.view.renderAll();
    this.scheduleAutosave();
  }

  undoStep() { this.restore(this.undo.undo()); }
  redoStep() { this.restore(this.undo.redo()); }

  // ---- loading ---------------------------------------------------------------------
  // A loaded workflow opens in the active tab only when that one is empty, else in a new tab:
  // loading never replaces work. `outputs` are results to show with it (from the history).
  loadWorkflow(workflow, { name = "workflow", outputs = null } = {}) {
    try {
      new Graph(this.graph.defs).load(workflow); // unreadable: say so before touching any tab
    } catch (err) {
      this.toast(`Could not load ${name}: ${err.message}`, "error");
      return false;
    }
    const tab = this.workspace.tabForLoad(name.replace(/\.(json|png|webp|mp4)$/i, ""));
    tab.workflow = workflow;
    tab.undo.reset(null);
    tab.saved = null;
    tab.outputs = new Map(Object.entries(outputs ?? {}).map(([id, out]) => [Number(id), out]));
    tab.errors.clear();
    this.showTab(tab, { fit: true });
    const missing = [...new Set([...this.graph.nodes.values()].filter((n) => n.missing).map((n) => n.type))];
    if (missing.length) this.toast(`Node types not installed here: ${missing.join(", ")}`, "warning");
    this.autosave();
    this.setStatus(`loaded ${name}`);
    this.checkModels();
    return true;
  }

  // Results to open with (`vidgraph serve --show`, ?show=...) and model files a loaded workflow lacks.
  openStartup() { return openStartup(this); }
  checkModels() { return checkModels(this); }

  loadAny(json, name, options = {}) {
    if (!json) return false;
    const workflow = looksLikeApiPrompt(json) ? promptToGraph(json, this.defs).serialize() : json;
    return this.loadWorkflow(workflow, { name, ...options });
  }

  async onFilesDropped(files, e) {
    for (const file of files) {
      let found;
      try { found = await readWorkflowFile(file); } catch (err) { this.toast(`${file.name}: ${err.message}`, "error"); continue; }
      if (found.workflow) this.loadWorkflow(found.workflow, { name: file.name });
      else if (found.prompt) this.loadAny(found.prompt, file.name);
      else if (found.image) {
        // Onto a node with an upload widget: that node takes the image; elsewhere a new Load Image.
        const hit = e && document.elementFromPoint(e.clientX, e.clientY)?.closest(".node");
        const target = hit && this.graph.nodes.get(Number(hit.dataset.nodeId));
        const upload = target?.widgets.find((w) => w.kind === "UPLOAD");
        if (upload) { await this.uploadInto(target, upload.target, file); continue; }
        const at = e ? this.view.clientToWorld(e.clientX, e.clientY) : this.pointerWorld;
        const node = this.addNode("LoadImage", at);
        if (node) await this.uploadInto(node, "image", file);
      } else this.toast(`${file.name}: no workflow found in this file`, "warning");
    }
  }

  async uploadInto(node, widgetName, file) {
    try {
      const result = await this.api.uploadImage(file);
      const name = result.subfolder ? `${result.subfolder}/${result.name}` : result.name;
      const widget = this.graph.widget(node, widgetName);
      if (!widget) return;
      if (widget.spec?.options?.values && !widget.spec.options.values.includes(name)) widget.spec.options.values.push(name);
      widget.value = name;
      this.view.renderNode(node);
      this.commit();
      this.setStatus(`uploaded ${name}`);
    } catch (err) {
      this.toast(`Upload failed: ${err.message}`, "error");
    }
  }

  // ---- editing -----------------------------------------------------------------------
  addNode(type, worldPos = this.pointerWorld, { commit = true } = {}) {
    if (!this.graph.defs[type]) { this.toast(`Unknown node type ${type}`, "error"); return null; }
    const node = this.graph.addNode(type, this.freeSpotNear(worldPos));
    this.view.renderNode(node);
    this.view.setSelection([node.id]);
    if (commit) this.commit();
    return node;
  }

  // Nodes added at the same spot (keyboard, repeated drops) step aside instead of stacking.
  freeSpotNear([x, y]) {
    const taken = [...this.graph.nodes.values()].map((n) => n.pos);
    while (taken.some(([nx, ny]) => Math.abs(nx - x) < 30 && Math.abs(ny - y) < 30)) { x += 40; y += 40; }
    return [x, y];
  }

  openSearch({ clientX, clientY, pending = null }) {
    const world = this.view.clientToWorld(clientX, clientY);
    let accepts = () => true;
    let hint = "";
    if (pending) {
      // A dropped link: only nodes that can take (or give) that type, the obvious ones first.
      const wantInput = Boolean(pending.from);
      accepts = (def) => linkFitRank(def, pending.type, wantInput, typesCompatible);
      hint = `${wantInput ? "takes" : "gives"} ${pending.type}`;
    }
    this.search.open({ clientX, clientY, accepts, hint, context: { world, pending } });
  }

  addNodeFromSearch(type, context) {
    const node = this.addNode(type, context?.world ?? this.pointerWorld, { commit: false });
    const pending = context?.pending;
    if (node && pending) {
      if (pending.from) {
        const input = [...node.inputs, ...node.widgets.map((w) => ({ name: w.name, type: w.kind }))]
          .find((i) => typesCompatible(pending.type, i.type));
        if (input) this.graph.connect(pending.from.nodeId, pending.from.slot, node.id, input.name);
      } else if (pending.into) {
        const slot = node.outputs.findIndex((o) => typesCompatible(o.type, pending.type));
        if (slot >= 0) this.graph.connect(node.id, slot, pending.into.nodeId, pending.into.name);
      }
      this.view.renderAll();
    }
    this.commit();
    this.canvas.focus({ preventScroll: true });
  }

  selectedNodes() {
    return [...this.view.selected].map((id) => this.graph.nodes.get(id)).filter(Boolean);
  }

  deleteSelected() {
    const nodes = this.selectedNodes();
    if (!nodes.length) return;
    for (const node of nodes) this.graph.removeNode(node.id);
    this.view.renderAll();
    this.commit();
  }

  toggleMode(mode) {
    const nodes = this.selectedNodes();
    if (!nodes.length) return;
    const next = nodes.every((n) => n.mode === mode) ? MODE.ALWAYS : mode;
    for (const node of nodes) { node.mode = next; this.view.renderNode(node); }
    this.commit();
  }

  toggleCollapse(ids = [...this.view.selected]) {
    for (const id of ids) {
      const node = this.graph.nodes.get(id);
      if (!node) continue;
      node.flags.collapsed = !node.flags.collapsed;
      if (!node.flags.collapsed) delete node.flags.collapsed;
      this.view.renderNode(node);
    }
    this.view.updateLinks();
    this.commit();
  }

  groupSelected(title = "Group") {
    const nodes = this.selectedNodes();
    if (!nodes.length) return null;
    const pad = 20;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])) - pad;
    const y0 = Math.min(...nodes.map((n) => n.pos[1])) - pad - 40;
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + pad;
    const y1 = Math.max(...nodes.map((n) => n.pos[1] + this.view.nodeHeight(n))) + pad;
    const group = this.graph.addGroup(title, [x0, y0, x1 - x0, y1 - y0]);
    this.view.renderGroups();
    this.commit();
    return group;
  }

  // Keeps each node's size in step with what is drawn, so groups and box-select see real heights.
  syncSizes() {
    for (const node of this.graph.nodes.values()) {
      const el = this.view.nodeEl(node.id);
      if (el && !node.flags.collapsed) node.size[1] = el.offsetHeight;
    }
  }

  renameInline(el, apply) {
    el.contentEditable = "true";
    el.focus();
    document.getSelection().selectAllChildren(el);
    const done = (keep) => {
      el.contentEditable = "false";
      el.removeEventListener("keydown", onKey);
      if (keep && el.textContent.trim()) apply(el.textContent.trim());
      this.view.renderAll();
      this.commit();
    };
    const onKey = (e) => {
      e.stopPropagation();
      if (e.key === "Enter") { e.preventDefault(); el.blur(); }
      if (e.key === "Escape") { el.removeEventListener("blur", onBlur); done(false); }
    };
    const onBlur = () => done(true);
    el.addEventListener("keydown", onKey);
    el.addEventListener("blur", onBlur, { once: true });
  }

  // Batch count: each run gets its own seed (control_after_generate applies between them).
  async queue(options = {}) {
    this.syncSizes();
    const count = Math.max(1, Math.min(100, Number(document.querySelector("#batch-count").value) || 1));
    let last = null;
    for (let i = 0; i < count; i++) {
      const prompt = graphToPrompt(this.graph);
      await this.extensions.call("beforeQueue", prompt, this.graph);
      last = await this.execution.queue({ ...options, prompt });
      if (last == null) break;
    }
    return last;
  }

  // ---- feedback ------------------------------------------------------------------------
  setStatus(text) {
    const status = document.querySelector("#status");
    status.textContent = text;
    status.title = text;
  }

  toast(message, kind = "info", options = {}) {
    return this.toasts.show(message, kind, options);
  }

  async populateWorkflowMenu() {
    const select = document.querySelector("#workflows-menu");
    let list;
    try { list = await this.api.getWorkflowList(); } catch { select.hidden = true; return; }
    this.bundled = new Map((Array.isArray(list) ? list : []).map((w) => (typeof w === "string" ? [w, {}] : [w.name, w])));
    for (const name of this.bundled.keys()) {
      const option = document.createElement("option");
      option.value = option.textContent = name;
      select.append(option);
    }
  }

  // The editor's laid-out twin (workflows/ui/) when there is one: room for previews, seed control kept.
  async openBundledWorkflow(name) {
    try {
      const entry = this.bundled?.get(name) ?? {};
      this.loadAny(await this.api.getWorkflow(entry.ui_file ?? name), name);
    } catch (err) {
      this.toast(`Could not open ${name}: ${err.message}`, "error");
    }
  }
}

