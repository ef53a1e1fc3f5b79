// Queueing, live progress, output previews, error display and the queue/history panel.
import { graphToPrompt } from "./convert.js";
import { nextControlledValue } from "./nodedefs.js";
import { describeValidationError, describeRuntimeError } from "./errors.js";
import { RunProgress, ProgressBar } from "./progress.js";

const VIDEO_EXTENSIONS = /\.(mp4|webm|mov|mkv)$/i;

export class Execution {
  constructor(app) {
    this.app = app;
    this.runningNode = null;
    this.runningTab = null; // the tab whose prompt runs now: its nodes get the live marks
    this.promptSizes = new Map(); // prompt id → node count, for the whole-workflow percentage
    this.progress = null;
    this.bar = new ProgressBar(app.canvas);
    this.promptId = null;
    const { api } = app;
    api.addEventListener("status", (e) => this.onStatus(e.detail));
    api.addEventListener("execution_start", (e) => this.onStart(e.detail));
    api.addEventListener("execution_cached", (e) => {
      this.progress?.onCached(e.detail.nodes?.length ?? 0);
      this.markNodes(e.detail.nodes, "cached");
    });
    api.addEventListener("executing", (e) => this.onExecuting(e.detail));
    api.addEventListener("progress", (e) => this.onProgress(e.detail));
    api.addEventListener("executed", (e) => this.onExecuted(e.detail));
    api.addEventListener("execution_error", (e) => this.onRuntimeError(e.detail));
    api.addEventListener("execution_interrupted", () => this.finish("interrupted"));
    api.addEventListener("execution_success", () => this.finish("success"));
    api.addEventListener("b_preview", (e) => this.onSamplerPreview(e.detail));
    api.addEventListener("disconnected", () => this.app.setStatus("disconnected: reconnecting…"));
  }

  // The active tab's results (node id → last ui output) and errors (node id → [{message, details, input}]).
  get outputs() { return this.app.workspace.active.outputs; }
  get errors() { return this.app.workspace.active.errors; }

  // Events of a prompt queued from another tab update that tab, not the nodes on screen.
  get runningHere() { return this.runningTab === this.app.workspace.active; }

  showTab(tab) {
    for (const id of tab.outputs.keys()) this.paintPreview(id);
  }

  // ---- queueing -----------------------------------------------------------------
  async queue({ front = false, prompt = null } = {}) {
    const { graph, api } = this.app;
    prompt = prompt ?? graphToPrompt(graph);
    const workflow = graph.serialize();
    this.clearErrors();
    let response;
    try {
      response = await api.queuePrompt(prompt, workflow, { front, name: this.app.workspace.active.name });
    } catch (err) {
      this.app.toast(`Could not reach the server: ${err.message}`, "error");
      return null;
    }
    const body = response.data ?? {};
    if (!response.ok) {
      const lines = this.showValidationErrors(body);
      this.app.queuePanel.recordRefused({ name: this.app.workspace.active.name, body, lines, workflow });
      return null;
    }
    if (body.node_errors && Object.keys(body.node_errors).length) this.showValidationErrors(body, { partial: true });
    this.app.workspace.set.rememberPrompt(body.prompt_id, this.app.workspace.active.id);
    this.promptSizes.set(body.prompt_id, Object.keys(prompt).length);
    if (this.promptId === body.prompt_id) {
      // The run started (websocket) before this answer arrived: give it its size and tab now.
      this.runningTab = this.app.workspace.set.tabForPrompt(body.prompt_id);
      if (this.progress) this.progress.total ??= this.promptSizes.get(body.prompt_id);
    }
    this.applySeedControls();
    this.app.setStatus(`queued ${String(body.prompt_id).slice(0, 8)}`);
    this.refreshPanel();
    return body.prompt_id;
  }

  // control_after_generate: the queued prompt used the current value; the next one gets a new one.
  applySeedControls() {
    const { graph, view } = this.app;
    let changed = false;
    for (const node of graph.nodes.values()) {
      for (const control of node.widgets.filter((w) => w.kind === "CONTROL")) {
        const target = graph.widget(node, control.target);
        if (!target || control.value === "fixed" || graph.widgetIsLinked(node, target.name)) continue;
        const next = nextControlledValue(control.value, target.value, target.spec);
        if (next === target.value) continue;
        target.value = next;
        changed = true;
        const field = view.nodeEl(node.id)?.querySelector(`.widget[data-widget="${CSS.escape(target.name)}"] :is(input, select)`);
        if (field) field.value = String(next);
      }
    }
    if (changed) this.app.commit();
  }

  // ---- errors --------------------------------------------------------------------
  clearErrors() {
    this.errors.clear();
    this.app.toasts.clearGroup("run");
    for (const el of document.querySelectorAll(".node.error, .widget.error, .slot.error")) el.classList.remove("error");
    for (const el of document.querySelectorAll(".node-errors")) el.replaceChildren();
  }

  showValidationErrors(body, { partial = false } = {}) {
    const nodeErrors = body.node_errors ?? {};
    // A refused prompt ran nothing: the marks of the previous run no longer describe this graph.
    if (!partial) for (const el of document.querySelectorAll(".node.cached, .node.executed")) el.classList.remove("cached", "executed");
    const lines = [];
    for (const [id, entry] of Object.entries(nodeErrors)) {
      const node = this.app.graph.nodes.get(Number(id));
      const errors = (entry.errors ?? []).map((err) => {
        const described = describeValidationError(err);
        return { ...described, key: node && errorKey(this.app.graph, node, described.input) };
      });
      this.errors.set(Number(id), errors);
      this.paintErrors(Number(id));
      const name = node ? this.app.graph.displayName(node) : entry.class_type;
      for (const err of errors) lines.push(`${name} #${id}: ${err.text}`);
    }
    const top = body.error;
    const summary = typeof top === "string" ? top : top?.message;
    const count = Object.keys(nodeErrors).length;
    if (summary || count) {
      const headline = count
        ? `${partial ? "Some outputs were dropped" : "Not queued"}: ${count} node${count > 1 ? "s" : ""} with errors (marked in red)`
        : summary ?? "Prompt failed validation";
      const details = [...lines, top?.details].filter(Boolean).join("\n");
      this.app.toast(headline, "error", { details, group: "run" });
    }
    return lines;
  }

  paintErrors(nodeId) {
    const el = this.app.view.nodeEl(nodeId);
    const errors = this.errors.get(nodeId);
    if (!el || !errors?.length) return;
    el.classList.add("error");
    const list = el.querySelector(".node-errors");
    list.replaceChildren(...errors.map((err) => {
      const p = document.createElement("p");
      p.textContent = err.text;
      if (err.more && err.more !== err.text) p.title = err.more;
      return p;
    }));
    for (const err of errors) {
      if (!err.input) continue;
      const target = el.querySelector(`.widget[data-widget="${CSS.escape(err.input)}"], .slot.input[data-input="${CSS.escape(err.input)}"]`);
      if (target) { target.classList.add("error"); target.title = err.text; }
    }
  }

  // After an edit: an error goes once the input it is about (or, without one, its node) changed.
  pruneErrors() {
    const { graph, view } = this.app;
    for (const [id, errors] of [...this.errors]) {
      const node = graph.nodes.get(id);
      const left = node ? errors.filter((err) => err.key == null || err.key === errorKey(graph, node, err.input)) : [];
      if (left.length === errors.length) continue;
      if (left.length) this.errors.set(id, left); else this.errors.delete(id);
      const el = view.nodeEl(id);
      if (!el) continue;
      el.classList.remove("error");
      for (const mark of el.querySelectorAll(".widget.error, .slot.error")) { mark.classList.remove("error"); mark.removeAttribute("title"); }
      el.querySelector(".node-errors").replaceChildren();
      this.paintErrors(id);
    }
  }

  onRuntimeError(data) {
    const { where, text, traceback } = describeRuntimeError(data);
    const tab = this.app.workspace.set.tabForPrompt(data.prompt_id);
    if (data.node_id != null) {
      const id = Number(data.node_id);
      const node = tab === this.app.workspace.active ? this.app.graph.nodes.get(id) : null;
      tab.errors.set(id, [{ text, more: traceback, key: node ? errorKey(this.app.graph, node, null) : null }]);
      // The failed node's old result would pass for this run's.
      tab.outputs.delete(id);
      if (tab === this.app.workspace.active) {
        this.app.view.nodeEl(id)?.querySelector(".node-preview")?.replaceChildren();
        this.paintPreview(id);
        this.paintErrors(id);
      }
    }
    this.app.toast(`${where} failed: ${text}`, "error", { details: traceback, group: "run" });
    this.finish("error");
  }

  // ---- progress --------------------------------------------------------------------
  onStatus(data) {
    const remaining = data?.status?.exec_info?.queue_remaining;
    if (remaining !== undefined) document.querySelector("#queue-size").textContent = `queue: ${remaining}`;
    this.refreshPanel();
  }

  onStart(data) {
    this.promptId = data.prompt_id;
    this.runningTab = this.app.workspace.set.tabForPrompt(data.prompt_id);
    this.outcome = null;
    this.progress = new RunProgress({ total: this.promptSizes.get(data.prompt_id) ?? null });
    if (this.runningHere) for (const el of document.querySelectorAll(".node.cached, .node.executed, .node.running")) el.classList.remove("cached", "executed", "running");
    this.showProgress();
    document.body.classList.add("executing");
  }

  markNodes(ids, cls) {
    if (!this.runningHere) return;
    for (const id of ids ?? []) this.app.view.nodeEl(Number(id))?.classList.add(cls);
  }

  onExecuting(data) {
    if (this.runningNode != null && this.runningHere) {
      const prev = this.app.view.nodeEl(this.runningNode);
      prev?.classList.remove("running");
      prev?.classList.add("executed");
    }
    this.runningNode = data.node == null ? null : Number(data.node);
    this.progress?.onNode(this.runningNode, this.nodeLabel(this.runningNode));
    if (this.runningNode == null) { this.finish("done"); return; }
    this.showProgress();
    if (!this.runningHere) return;
    const el = this.app.view.nodeEl(this.runningNode);
    el?.classList.add("running");
    el?.style.setProperty("--progress", "0");
  }

  onProgress(data) {
    this.progress?.onStep(data.value, data.max);
    this.showProgress();
    if (!this.runningHere) return;
    const el = this.app.view.nodeEl(Number(data.node ?? this.runningNode));
    if (!el) return;
    el.classList.add("running");
    el.style.setProperty("--progress", String(data.max ? data.value / data.max : 0));
    el.querySelector(".node-progress").title = `${data.value} / ${data.max}`;
    el.querySelector(".node-progress .steps").textContent = `${data.value}/${data.max}`;
    el.dataset.progress = `${data.value}/${data.max}`;
  }

  nodeLabel(id) {
    const node = this.runningHere ? this.app.graph.nodes.get(id) : null;
    const where = this.runningTab && !this.runningHere ? ` in “${this.runningTab.name}”` : "";
    return `${node ? this.app.graph.displayName(node) : "node"} #${id}${where}`;
  }

  // The strip over the canvas, the status line and the browser tab's title all say the same.
  showProgress() {
    if (!this.progress) return;
    this.bar.show(this.progress, this.app.baseTitle());
    this.app.setStatus(this.progress.describe());
  }

  // how: "success" | "error" | "interrupted" from their events, then "done" when the
  // final `executing: null` arrives; "done" must not hide an error reported just before it.
  finish(how) {
    if (this.runningNode != null && this.runningHere) this.app.view.nodeEl(this.runningNode)?.classList.remove("running");
    this.runningNode = null;
    this.progress = null;
    this.bar.hide(this.app.baseTitle());
    document.body.classList.remove("executing");
    if (how !== "done") this.outcome = how;
    this.app.setStatus(how === "done" && this.outcome === "success" ? "idle" : (this.outcome ?? how));
    this.refreshPanel();
  }

  // ---- previews ------------------------------------------------------------------------
  onExecuted(data) {
    const id = Number(data.display_node ?? data.node);
    const tab = this.app.workspace.set.tabForPrompt(data.prompt_id);
    tab.outputs.set(id, data.output);
    this.app.scheduleAutosave();
    if (tab === this.app.workspace.active) this.paintPreview(id);
  }

  paintPreview(nodeId) {
    const el = this.app.view.nodeEl(nodeId);
    const output = this.outputs.get(nodeId);
    if (el && !output) this.paintInputPreview(nodeId, el);
    if (!el || !output) return;
    const box = el.querySelector(".node-preview");
    const files = outputFiles(output);
    box.replaceChildren(...files.map((file) => previewElement(this.app.api.viewUrl(file), file.filename)));
    if (files.length) box.prepend(this.previewActions(nodeId, files[0]));
    // A layout with room for the result (a saved height) keeps it: the preview fits that room
    // rather than growing the node over the one below (Enlarge shows it big).
    const saved = this.app.graph.nodes.get(nodeId)?.savedHeight;
    if (saved) {
      const above = el.querySelector(".node-title").offsetHeight + el.querySelector(".node-progress").offsetHeight
        + el.querySelector(".node-body").offsetHeight - box.offsetHeight; // the node's min-height aside
      box.style.setProperty("--preview-max", `${Math.max(120, saved - above - 16)}px`);
    }
    const texts = output.text ?? output.string;
    if (Array.isArray(texts)) for (const t of texts) { const p = document.createElement("pre"); p.textContent = String(t); box.append(p); }
    el.classList.toggle("has-preview", box.children.length > 0);
  }

  // Over a preview: open it large (also a double-click on it), download it, open it in a browser tab.
  previewActions(nodeId, file) {
    const url = this.app.api.viewUrl(file);
    const bar = document.createElement("div");
    bar.className = "preview-actions";
    const enlarge = button("Enlarge", "enlarge");
    enlarge.title = "Open in the player: frame by frame, download (double-click the preview)";
    enlarge.addEventListener("click", () => this.openPlayer(nodeId));
    const download = Object.assign(document.createElement("a"), { href: url, download: file.filename, textContent: "Download", title: `Download ${file.filename}` });
    const open = Object.assign(document.createElement("a"), { href: url, target: "_blank", rel: "noopener", textContent: "Open", title: "Open in a new browser tab" });
    bar.append(enlarge, download, open);
    return bar;
  }

  openPlayer(nodeId) {
    const output = this.outputs.get(nodeId);
    const files = output ? outputFiles(output) : [];
    if (!files.length) return;
    const node = this.app.graph.nodes.get(nodeId);
    const stills = files.length > 1 && files.every((f) => !/\.(mp4|webm|mov|mkv|webp|gif)$/i.test(f.filename));
    const title = `${node ? this.app.graph.displayName(node) : "Node"} #${nodeId}`;
    this.app.player.open([{ files: stills ? files : [files[0]], label: stills ? null : files[0].filename }],
      { title, urlOf: (f) => this.app.api.viewUrl(f) });
  }

  // Load Image and friends show the file their upload widget points at.
  paintInputPreview(nodeId, el) {
    const node = this.app.graph.nodes.get(nodeId);
    const upload = node?.widgets.find((w) => w.kind === "UPLOAD");
    const filename = upload && this.app.graph.widget(node, upload.target)?.value;
    if (!filename) return;
    const slash = filename.lastIndexOf("/");
    const file = { filename: filename.slice(slash + 1), subfolder: slash > 0 ? filename.slice(0, slash) : "", type: "input" };
    const preview = previewElement(this.app.api.viewUrl(file), file.filename);
    preview.classList.add("input-preview");
    const size = document.createElement("p");
    size.className = "image-size";
    preview.addEventListener("load", () => { size.textContent = `${preview.naturalWidth} × ${preview.naturalHeight} px`; }, { once: true });
    preview.addEventListener("error", () => {
      // a workflow from elsewhere may name a file this server's input folder lacks
      const note = document.createElement("p");
      note.className = "missing-file";
      note.textContent = `${filename} is not in the input folder`;
      preview.replaceWith(note);
      size.remove();
    }, { once: true });
    el.querySelector(".node-preview").replaceChildren(preview, size);
  }

  onSamplerPreview(frame) {
    if (!this.runningHere) return;
    const id = frame.nodeId != null ? Number(frame.nodeId) : this.runningNode;
    const el = this.app.view.nodeEl(id);
    if (!el) return;
    const box = el.querySelector(".node-preview");
    let img = box.querySelector("img.sampler-preview");
    if (!img) {
      img = document.createElement("img");
      img.className = "sampler-preview";
      img.alt = "sampler preview";
      box.replaceChildren(img);
    }
    const old = img.src;
    img.src = URL.createObjectURL(new Blob([frame.image], { type: frame.mime }));
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  }

  // Called whenever the view rebuilds a node (undo, load): state survives.
  restoreNode(node) {
    this.paintPreview(node.id);
    this.paintErrors(node.id);
    if (node.id === this.runningNode && this.runningHere) this.app.view.nodeEl(node.id)?.classList.add("running");
  }

  refreshPanel() {
    this.app.queuePanel?.refresh();
  }
}

// What an error was about, as it stood: an input's value or link, or the whole node's.
function errorKey(graph, node, inputName) {
  if (inputName == null) return JSON.stringify([node.widgets.map((w) => w.value), node.inputs.map((i) => i.link), node.mode]);
  const widget = graph.widget(node, inputName);
  const input = node.inputs.find((i) => i.name === inputName);
  return JSON.stringify([widget?.value ?? null, input?.link ?? null]);
}

export function outputFiles(output) {
  return [...(output.images ?? []), ...(output.gifs ?? []), ...(output.videos ?? [])];
}

function button(text, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.dataset.action = action;
  return b;
}

export function previewElement(url, filename, small = false) {
  if (VIDEO_EXTENSIONS.test(filename)) {
    const video = document.createElement("video");
    Object.assign(video, { src: url, controls: !small, loop: true, muted: true, autoplay: true, playsInline: true });
    video.className = "preview-video";
    return video;
  }
  const img = document.createElement("img");
  img.src = url;
  img.alt = filename;
  img.className = "preview-image";
  img.loading = "lazy";
  return img;
}
