// Draws the graph: one absolutely positioned <div> per node, one SVG layer for links,
// all inside a single CSS-transformed "world" (pan/zoom never touches the nodes).
import { typeColour } from "./types.js";
import { MODE } from "./graph.js";
import { buildWidget, element } from "./widgets.js";

const SVG = "http://www.w3.org/2000/svg";
export const MIN_SCALE = 0.1;
export const MAX_SCALE = 4;

export class GraphView {
  constructor(canvas, graph, hooks) {
    this.canvas = canvas;
    this.graph = graph;
    this.hooks = hooks; // {onWidgetInput, onUpload, onNodeRendered}
    this.scale = 1;
    this.offset = [0, 0];
    this.selected = new Set();
    this.nodeEls = new Map();
    this.linkEls = new Map();
    this.slotOffsets = new Map(); // nodeId → {in: {name: [dx,dy]}, out: [[dx,dy]]}
    this.world = canvas.querySelector("#world");
    this.groupsLayer = this.world.querySelector("#groups-layer");
    this.linksLayer = this.world.querySelector("#links");
    this.nodesLayer = this.world.querySelector("#nodes-layer");
  }

  // ---- coordinates --------------------------------------------------------
  applyTransform() {
    const [ox, oy] = this.offset;
    this.world.style.transform = `scale(${this.scale}) translate(${ox}px, ${oy}px)`;
    this.canvas.style.setProperty("--grid-size", `${20 * this.scale}px`);
    this.canvas.style.backgroundPosition = `${ox * this.scale}px ${oy * this.scale}px`;
    this.graph.extra.ds = { scale: this.scale, offset: [...this.offset] };
  }

  clientToWorld(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    return [(clientX - rect.left) / this.scale - this.offset[0], (clientY - rect.top) / this.scale - this.offset[1]];
  }

  zoomAt(clientX, clientY, factor) {
    const before = this.clientToWorld(clientX, clientY);
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    const rect = this.canvas.getBoundingClientRect();
    this.offset = [(clientX - rect.left) / this.scale - before[0], (clientY - rect.top) / this.scale - before[1]];
    this.applyTransform();
  }

  panBy(dxScreen, dyScreen) {
    this.offset = [this.offset[0] + dxScreen / this.scale, this.offset[1] + dyScreen / this.scale];
    this.applyTransform();
  }

  fitView(nodes = null) {
    const list = nodes?.length ? nodes : [...this.graph.nodes.values()];
    const rect = this.canvas.getBoundingClientRect();
    if (!list.length) { this.scale = 1; this.offset = [0, 0]; this.applyTransform(); return; }
    const x0 = Math.min(...list.map((n) => n.pos[0]));
    const y0 = Math.min(...list.map((n) => n.pos[1]));
    const x1 = Math.max(...list.map((n) => n.pos[0] + n.size[0]));
    const y1 = Math.max(...list.map((n) => n.pos[1] + this.nodeHeight(n)));
    const margin = 40;
    this.scale = Math.min(1.5, Math.max(MIN_SCALE, Math.min((rect.width - 2 * margin) / (x1 - x0 || 1), (rect.height - 2 * margin) / (y1 - y0 || 1))));
    this.offset = [(rect.width / this.scale - (x1 - x0)) / 2 - x0, (rect.height / this.scale - (y1 - y0)) / 2 - y0];
    this.applyTransform();
  }

  // Is every node wholly inside the canvas as it is drawn now?
  allNodesVisible() {
    const area = this.canvas.getBoundingClientRect();
    return [...this.nodeEls.values()].every((el) => {
      const r = el.getBoundingClientRect();
      return r.left >= area.left - 1 && r.right <= area.right + 1 && r.top >= area.top - 1 && r.bottom <= area.bottom + 1;
    });
  }

  nodeHeight(node) {
    return this.nodeEls.get(node.id)?.offsetHeight || node.size[1];
  }

  // ---- nodes --------------------------------------------------------------
  renderAll() {
    this.applyTransform();
    this.nodesLayer.replaceChildren();
    this.linksLayer.replaceChildren();
    this.nodeEls.clear();
    this.linkEls.clear();
    this.slotOffsets.clear();
    // The selection survives a rebuild (undo/redo bring nodes back under the same ids).
    const fragment = document.createDocumentFragment();
    for (const node of this.graph.nodes.values()) fragment.append(this.buildNode(node));
    this.nodesLayer.append(fragment);
    // Measure after every node is in place: one layout pass instead of one per node.
    for (const node of this.graph.nodes.values()) this.measureSlots(node);
    this.renderGroups();
    this.updateLinks();
    this.applyTransform();
  }

  renderNode(node) {
    const old = this.nodeEls.get(node.id);
    const el = this.buildNode(node);
    if (old) old.replaceWith(el); else this.nodesLayer.append(el);
    this.measureSlots(node);
    this.updateLinks([node.id]);
    return el;
  }

  removeNodeElement(id) {
    this.nodeEls.get(id)?.remove();
    this.nodeEls.delete(id);
    this.slotOffsets.delete(id);
    this.selected.delete(id);
  }

  buildNode(node) {
    const el = element("div", "node");
    el.dataset.nodeId = String(node.id);
    el.dataset.type = node.type;
    el.setAttribute("role", "group");
    el.tabIndex = 0; // keyboard users reach nodes with Tab; focusing one selects it
    el.setAttribute("aria-label", this.graph.displayName(node));
    el.classList.toggle("selected", this.selected.has(node.id));
    el.classList.toggle("collapsed", Boolean(node.flags.collapsed));
    el.classList.toggle("bypassed", node.mode === MODE.BYPASS);
    el.classList.toggle("muted", node.mode === MODE.NEVER);
    el.classList.toggle("missing", Boolean(node.missing));
    el.classList.toggle("reroute", node.type === "Reroute");
    if (node.bgcolor) el.style.setProperty("--node-bg", node.bgcolor);
    if (node.color) el.style.setProperty("--node-title-bg", node.color);
    this.positionNode(node, el);
    if (node.type !== "Reroute") el.style.width = `${node.size[0]}px`;
    if (node.savedHeight > 0 && node.type !== "Reroute") el.style.minHeight = `${node.savedHeight}px`;

    const title = element("div", "node-title");
    const collapse = document.createElement("button");
    collapse.type = "button";
    collapse.className = "collapse";
    collapse.setAttribute("aria-label", node.flags.collapsed ? "Expand node" : "Collapse node");
    collapse.textContent = node.flags.collapsed ? "▸" : "▾";
    const text = element("span", "title-text", this.graph.displayName(node));
    text.title = node.title && node.title !== node.type ? `${node.title} (${node.type})` : this.graph.displayName(node);
    const badge = element("span", "node-badge", `#${node.id}`);
    title.append(collapse, text, badge);

    const progress = element("div", "node-progress");
    progress.innerHTML = '<div class="bar"></div><span class="steps"></span>';

    const slots = element("div", "slots");
    const ins = element("div", "inputs");
    for (const input of node.inputs) {
      if (input.widget) continue; // converted widgets keep their socket on the widget row
      ins.append(slotEl("input", input.name, input.type, input.name || "", input.link != null, input.shape === 7));
    }
    const outs = element("div", "outputs");
    node.outputs.forEach((output, i) => {
      outs.append(slotEl("output", String(i), this.graph.outputType(node, i), output.name, output.links.length > 0));
    });
    slots.append(ins, outs);

    const widgets = element("div", "widgets");
    for (const widget of node.widgets) {
      const row = buildWidget(node, widget, {
        onInput: (w, value) => this.hooks.onWidgetInput(node, w, value),
        onUpload: (w, file) => this.hooks.onUpload(node, w, file),
      });
      if (this.graph.widgetIsLinked(node, widget.name)) {
        row.classList.add("linked");
        row.querySelector("input, select, textarea")?.setAttribute("disabled", "");
      }
      if (node.inputs.some((i) => i.widget && i.name === widget.name)) row.classList.add("converted");
      widgets.append(row);
    }

    const errors = element("div", "node-errors");
    errors.setAttribute("role", "alert");
    const preview = element("div", "node-preview");

    const body = element("div", "node-body");
    body.append(slots, widgets, errors, preview);
    const resize = element("div", "node-resize");
    el.append(title, progress, body, resize);
    this.nodeEls.set(node.id, el);
    this.hooks.onNodeRendered?.(node, el);
    return el;
  }

  positionNode(node, el = this.nodeEls.get(node.id)) {
    if (el) el.style.transform = `translate(${node.pos[0]}px, ${node.pos[1]}px)`;
  }

  // Slot centres relative to the node's corner, in world units; links use them
  // while a node moves, so dragging never forces layout.
  measureSlots(node) {
    const el = this.nodeEls.get(node.id);
    if (!el) return;
    const base = el.getBoundingClientRect();
    // The scale the world is drawn at right now, read from the layout itself: right after a load
    // the view's scale is set before the world's transform is, and dividing by it garbled every link.
    const scale = el.offsetWidth ? base.width / el.offsetWidth : this.scale;
    const centre = (dot) => {
      const r = dot.getBoundingClientRect();
      return [(r.left + r.width / 2 - base.left) / scale, (r.top + r.height / 2 - base.top) / scale];
    };
    const collapsed = node.flags.collapsed;
    // The drawn height is the node's height (a new node's was a guess): saved files keep it.
    if (!collapsed && el.offsetHeight) node.size[1] = el.offsetHeight;
    const titleRect = el.querySelector(".node-title").getBoundingClientRect();
    const titleY = (titleRect.height / 2) / scale;
    const width = base.width / scale;
    const offsets = { in: {}, out: [] };
    for (const dot of el.querySelectorAll(".slot.input")) {
      offsets.in[dot.dataset.input] = collapsed || dot.offsetParent === null ? [0, titleY] : centre(dot.querySelector(".dot"));
    }
    for (const dot of el.querySelectorAll(".slot.output")) {
      offsets.out[Number(dot.dataset.output)] = collapsed ? [width, titleY] : centre(dot.querySelector(".dot"));
    }
    this.slotOffsets.set(node.id, offsets);
  }

  slotPosition(nodeId, side, key) {
    const node = this.graph.nodes.get(nodeId);
    const offsets = this.slotOffsets.get(nodeId);
    const [dx, dy] = (side === "in" ? offsets?.in[key] : offsets?.out[key]) ?? [side === "in" ? 0 : node.size[0], 15];
    return [node.pos[0] + dx, node.pos[1] + dy];
  }

  // ---- links --------------------------------------------------------------
  updateLinks(nodeIds) {
    const touched = nodeIds ? new Set(nodeIds) : null;
    for (const [id, path] of this.linkEls) {
      if (!this.graph.links.has(id)) { path.remove(); this.linkEls.delete(id); }
    }
    for (const link of this.graph.links.values()) {
      if (touched && !touched.has(link.origin_id) && !touched.has(link.target_id) && this.linkEls.has(link.id)) continue;
      const target = this.graph.nodes.get(link.target_id);
      const inputName = target?.inputs[link.target_slot]?.name;
      if (inputName === undefined) continue;
      const from = this.slotPosition(link.origin_id, "out", link.origin_slot);
      const to = this.slotPosition(link.target_id, "in", inputName);
      let path = this.linkEls.get(link.id);
      if (!path) {
        path = document.createElementNS(SVG, "path");
        path.setAttribute("class", "link");
        path.dataset.linkId = String(link.id);
        this.linksLayer.append(path);
        this.linkEls.set(link.id, path);
      }
      path.dataset.from = `${link.origin_id}:${link.origin_slot}`;
      path.dataset.to = `${link.target_id}:${inputName}`;
      path.setAttribute("stroke", typeColour(link.type));
      path.setAttribute("d", curve(from, to));
    }
  }

  // The link being dragged; `to` is the pointer in world coordinates.
  drawPendingLink(from, to, type, reversed) {
    let path = this.linksLayer.querySelector(".pending-link");
    if (!path) {
      path = document.createElementNS(SVG, "path");
      path.setAttribute("class", "link pending-link");
      this.linksLayer.append(path);
    }
    path.setAttribute("stroke", typeColour(type));
    path.setAttribute("d", reversed ? curve(to, from) : curve(from, to));
  }

  clearPendingLink() {
    this.linksLayer.querySelector(".pending-link")?.remove();
  }

  // ---- groups ---------------------------------------------------------------
  renderGroups() {
    this.groupsLayer.replaceChildren();
    for (const group of this.graph.groups) {
      const el = element("div", "group");
      el.dataset.groupId = String(group.id);
      const [x, y, w, h] = group.bounding;
      Object.assign(el.style, { transform: `translate(${x}px, ${y}px)`, width: `${w}px`, height: `${h}px` });
      el.style.setProperty("--group-colour", group.color || "#3f789e");
      const title = element("div", "group-title", group.title);
      title.style.fontSize = `${group.font_size || 24}px`;
      const handle = element("div", "group-resize");
      el.append(title, handle);
      this.groupsLayer.append(el);
    }
  }

  // ---- selection -------------------------------------------------------------
  setSelection(ids) {
    for (const id of this.selected) this.nodeEls.get(id)?.classList.remove("selected");
    this.selected = new Set(ids);
    for (const id of this.selected) this.nodeEls.get(id)?.classList.add("selected");
    this.hooks.onSelectionChange?.(this.selected);
  }

  nodeEl(id) {
    return this.nodeEls.get(id);
  }
}

function slotEl(side, key, type, label, connected, optional = false) {
  const slot = element("div", `slot ${side}`);
  if (side === "input") slot.dataset.input = key; else slot.dataset.output = key;
  slot.dataset.slotType = Array.isArray(type) ? "COMBO" : String(type);
  slot.title = `${label || "value"}: ${slot.dataset.slotType}`;
  slot.classList.toggle("connected", connected);
  slot.classList.toggle("optional", optional);
  slot.style.setProperty("--slot-colour", typeColour(type));
  const dot = element("span", "dot");
  const text = element("span", "label", label);
  if (side === "input") slot.append(dot, text); else slot.append(text, dot);
  return slot;
}

export function curve([x1, y1], [x2, y2]) {
  const d = Math.max(40, Math.abs(x2 - x1) * 0.5);
  return `M ${x1.toFixed(1)} ${y1.toFixed(1)} C ${(x1 + d).toFixed(1)} ${y1.toFixed(1)}, ${(x2 - d).toFixed(1)} ${y2.toFixed(1)}, ${x2.toFixed(1)} ${y2.toFixed(1)}`;
}
