// The graph model, kept in ComfyUI's UI ("workflow") format so that saving is a copy
// and loading a ComfyUI file needs no translation. No DOM here.
import { describeNode, isVirtualType, VIRTUAL_DEFS, CONTROL_MODES } from "./nodedefs.js";
import { typesCompatible, normaliseType } from "./types.js";

export const MODE = { ALWAYS: 0, NEVER: 2, BYPASS: 4 };
const NODE_WIDTH = 300;

function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

export class Graph {
  constructor(defs = {}) {
    this.setDefs(defs);
    this.clear();
  }

  setDefs(defs) {
    this.defs = { ...defs, ...VIRTUAL_DEFS };
  }

  clear() {
    this.nodes = new Map();
    this.links = new Map();
    this.groups = [];
    this.lastNodeId = 0;
    this.lastLinkId = 0;
    this.lastGroupId = 0;
    this.extra = {};
    this.id = randomId();
  }

  // ---- nodes -------------------------------------------------------------
  addNode(type, pos = [0, 0], { id } = {}) {
    const def = this.defs[type];
    const nodeId = id ?? ++this.lastNodeId;
    this.lastNodeId = Math.max(this.lastNodeId, nodeId);
    const node = {
      id: nodeId, type, pos: [Math.round(pos[0]), Math.round(pos[1])], size: [NODE_WIDTH, 0],
      flags: {}, order: 0, mode: MODE.ALWAYS, inputs: [], outputs: [], widgets: [],
      properties: { "Node name for S&R": type },
    };
    if (def) {
      const layout = describeNode(def);
      node.inputs = layout.sockets.map((s) => ({ name: s.name, type: s.type, link: null, ...(s.optional ? { shape: 7 } : {}) }));
      node.outputs = layout.outputs.map((o, i) => ({ name: o.name, type: o.type, links: [], slot_index: i, ...(o.isList ? { shape: 6 } : {}) }));
      node.widgets = layout.widgets;
    } else {
      node.missing = true;
    }
    node.size[1] = estimateHeight(node);
    this.nodes.set(nodeId, node);
    return node;
  }

  removeNode(id) {
    const node = this.nodes.get(id);
    if (!node) return;
    for (const input of node.inputs) if (input.link != null) this.removeLink(input.link);
    for (const output of node.outputs) for (const linkId of [...output.links]) this.removeLink(linkId);
    this.nodes.delete(id);
  }

  displayName(node) {
    return node.title || this.defs[node.type]?.display_name || node.type;
  }

  isVirtual(node) {
    return isVirtualType(node.type);
  }

  widget(node, name) {
    return node.widgets.find((w) => w.name === name && w.kind !== "CONTROL" && w.kind !== "UPLOAD");
  }

  setWidgetValue(nodeId, name, value) {
    const node = this.nodes.get(nodeId);
    const w = node && this.widget(node, name);
    if (w) w.value = value;
    return w;
  }

  // ---- links -------------------------------------------------------------
  inputIndex(node, name) {
    return node.inputs.findIndex((i) => i.name === name);
  }

  // The type a link from this output actually carries: a reroute passes its source's type on.
  outputType(node, slot, seen = new Set()) {
    const declared = node.outputs[slot]?.type ?? "*";
    if (node.type !== "Reroute" || seen.has(node.id)) return declared;
    seen.add(node.id);
    const link = this.links.get(node.inputs[0]?.link);
    if (!link) return declared;
    return this.outputType(this.nodes.get(link.origin_id), link.origin_slot, seen);
  }

  // The slot an input name refers to; a widget name yields its widget type so a link can convert it.
  inputSlotType(node, name) {
    const input = node.inputs.find((i) => i.name === name);
    if (input) return input.type;
    const w = this.widget(node, name);
    return w ? normaliseType(w.kind) : null;
  }

  canConnect(originId, originSlot, targetId, inputName) {
    const origin = this.nodes.get(originId);
    const target = this.nodes.get(targetId);
    if (!origin || !target || originId === targetId || !origin.outputs[originSlot]) return false;
    const inType = this.inputSlotType(target, inputName);
    if (inType == null) return false;
    if (!typesCompatible(this.outputType(origin, originSlot), inType)) return false;
    return !this.reaches(targetId, originId);
  }

  // Would following outputs from `fromId` arrive at `toId`? (refuses cycles)
  reaches(fromId, toId) {
    const stack = [fromId];
    const seen = new Set();
    while (stack.length) {
      const id = stack.pop();
      if (id === toId) return true;
      if (seen.has(id)) continue;
      seen.add(id);
      for (const out of this.nodes.get(id)?.outputs ?? []) {
        for (const linkId of out.links) stack.push(this.links.get(linkId)?.target_id);
      }
    }
    return false;
  }

  // One link per input: a new link replaces the old one. Returns the link or null if refused.
  connect(originId, originSlot, targetId, inputName) {
    if (!this.canConnect(originId, originSlot, targetId, inputName)) return null;
    const origin = this.nodes.get(originId);
    const target = this.nodes.get(targetId);
    let index = this.inputIndex(target, inputName);
    if (index < 0) index = this.convertWidgetToInput(targetId, inputName);
    const input = target.inputs[index];
    if (input.link != null) this.removeLink(input.link);
    const link = {
      id: ++this.lastLinkId, origin_id: originId, origin_slot: originSlot,
      target_id: targetId, target_slot: index, type: normaliseType(this.outputType(origin, originSlot)) || "*",
    };
    this.links.set(link.id, link);
    input.link = link.id;
    origin.outputs[originSlot].links.push(link.id);
    if (origin.type === "Reroute" || target.type === "Reroute") this.retypeReroutes();
    return link;
  }

  removeLink(linkId) {
    const link = this.links.get(linkId);
    if (!link) return;
    this.links.delete(linkId);
    const origin = this.nodes.get(link.origin_id);
    const out = origin?.outputs[link.origin_slot];
    if (out) out.links = out.links.filter((id) => id !== linkId);
    const target = this.nodes.get(link.target_id);
    const input = target?.inputs[link.target_slot];
    if (input && input.link === linkId) input.link = null;
  }

  disconnectInput(nodeId, inputName) {
    const node = this.nodes.get(nodeId);
    const input = node?.inputs.find((i) => i.name === inputName);
    if (input?.link != null) this.removeLink(input.link);
  }

  linkToInput(nodeId, inputName) {
    const node = this.nodes.get(nodeId);
    const input = node?.inputs.find((i) => i.name === inputName);
    return input?.link != null ? this.links.get(input.link) : null;
  }

  // Link types shown on links leaving reroutes follow whatever feeds them.
  retypeReroutes() {
    for (const link of this.links.values()) {
      const origin = this.nodes.get(link.origin_id);
      if (origin?.type === "Reroute") link.type = normaliseType(this.outputType(origin, 0)) || "*";
    }
  }

  // ---- widgets as inputs -------------------------------------------------
  convertWidgetToInput(nodeId, name) {
    const node = this.nodes.get(nodeId);
    const existing = this.inputIndex(node, name);
    if (existing >= 0) return existing;
    const w = this.widget(node, name);
    if (!w) return -1;
    node.inputs.push({ name, type: normaliseType(w.kind), link: null, widget: { name } });
    return node.inputs.length - 1;
  }

  convertInputToWidget(nodeId, name) {
    const node = this.nodes.get(nodeId);
    const index = this.inputIndex(node, name);
    if (index < 0 || !node.inputs[index].widget) return;
    if (node.inputs[index].link != null) this.removeLink(node.inputs[index].link);
    node.inputs.splice(index, 1);
    this.reindexInputs(node);
  }

  reindexInputs(node) {
    node.inputs.forEach((input, i) => {
      const link = this.links.get(input.link);
      if (link) link.target_slot = i;
    });
  }

  widgetIsLinked(node, name) {
    const input = node.inputs.find((i) => i.name === name && i.widget);
    return Boolean(input && input.link != null);
  }

  // ---- groups ------------------------------------------------------------
  addGroup(title, bounding) {
    const group = { id: ++this.lastGroupId, title, bounding: bounding.map(Math.round), color: "#3f789e", font_size: 24, flags: {} };
    this.groups.push(group);
    return group;
  }

  nodesInGroup(group) {
    const [gx, gy, gw, gh] = group.bounding;
    return [...this.nodes.values()].filter((n) =>
      n.pos[0] >= gx && n.pos[1] >= gy && n.pos[0] + n.size[0] <= gx + gw && n.pos[1] + n.size[1] <= gy + gh);
  }

  // ---- (de)serialisation: ComfyUI UI format 0.4 ------------------------------
  serialize() {
    const nodes = [...this.nodes.values()].sort((a, b) => a.id - b.id).map((n) => {
      const out = {
        id: n.id, type: n.type, pos: [...n.pos], size: [...n.size], flags: clone(n.flags), order: n.order, mode: n.mode,
        inputs: n.inputs.map((i) => clone(i)), outputs: n.outputs.map((o) => clone(o)),
        properties: clone(n.properties), widgets_values: n.widgets.map((w) => clone(w.value)),
      };
      if (n.title) out.title = n.title;
      if (n.color) out.color = n.color;
      if (n.bgcolor) out.bgcolor = n.bgcolor;
      return out;
    });
    this.assignOrder(nodes);
    return {
      id: this.id, revision: 0, last_node_id: this.lastNodeId, last_link_id: this.lastLinkId,
      nodes,
      links: [...this.links.values()].sort((a, b) => a.id - b.id)
        .map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]),
      groups: clone(this.groups),
      config: {},
      extra: clone(this.extra),
      version: 0.4,
    };
  }

  // `order` is litegraph's execution order; other tools read it, so keep it meaningful.
  assignOrder(serialisedNodes) {
    const depth = new Map();
    const visit = (id, trail = new Set()) => {
      if (depth.has(id)) return depth.get(id);
      if (trail.has(id)) return 0;
      trail.add(id);
      const node = this.nodes.get(id);
      let d = 0;
      for (const input of node?.inputs ?? []) {
        const link = this.links.get(input.link);
        if (link) d = Math.max(d, visit(link.origin_id, trail) + 1);
      }
      depth.set(id, d);
      return d;
    };
    const ranked = serialisedNodes.map((n) => [visit(n.id), n.id, n]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    ranked.forEach(([, , n], i) => { n.order = i; });
  }

  static fromWorkflow(workflow, defs) {
    const graph = new Graph(defs);
    graph.load(workflow);
    return graph;
  }

  load(workflow) {
    this.clear();
    const wf = normaliseWorkflow(workflow);
    if (wf.id) this.id = wf.id;
    for (const saved of wf.nodes) this.loadNode(saved);
    for (const [id, originId, originSlot, targetId, targetSlot, type] of wf.links) {
      const origin = this.nodes.get(originId);
      const target = this.nodes.get(targetId);
      const savedTarget = wf.nodes.find((n) => n.id === targetId);
      const inputName = savedTarget?.inputs?.[targetSlot]?.name;
      if (!origin || !target || inputName === undefined || !origin.outputs[originSlot]) continue;
      let index = this.inputIndex(target, inputName);
      if (index < 0) index = this.convertWidgetToInput(targetId, inputName);
      if (index < 0) continue;
      this.links.set(id, { id, origin_id: originId, origin_slot: originSlot, target_id: targetId, target_slot: index, type: type ?? "*" });
      target.inputs[index].link = id;
      origin.outputs[originSlot].links.push(id);
    }
    this.lastNodeId = Math.max(wf.last_node_id ?? 0, ...[...this.nodes.keys()], 0);
    this.lastLinkId = Math.max(wf.last_link_id ?? 0, ...[...this.links.keys()], 0);
    this.groups = clone(wf.groups ?? []).map((g, i) => ({ ...g, id: g.id ?? i + 1 }));
    this.lastGroupId = Math.max(0, ...this.groups.map((g) => g.id));
    this.extra = clone(wf.extra ?? {});
    this.retypeReroutes();
  }

  loadNode(saved) {
    const node = this.addNode(saved.type, saved.pos ?? [0, 0], { id: saved.id });
    if (Array.isArray(saved.size) && saved.size.length === 2) {
      node.size = [...saved.size];
      node.savedHeight = saved.size[1]; // the room the file's layout gives it (output nodes: for previews)
    }
    node.flags = clone(saved.flags ?? {});
    node.mode = saved.mode ?? 0;
    node.properties = { ...node.properties, ...clone(saved.properties ?? {}) };
    for (const key of ["title", "color", "bgcolor"]) if (saved[key]) node[key] = saved[key];
    if (node.missing || this.defs[saved.type]?.keepsSavedSlots) {
      // Unknown type (a plugin not installed here): keep its slots and values so saving loses nothing.
      node.inputs = (saved.inputs ?? []).map((i) => ({ ...clone(i), link: null }));
      node.outputs = (saved.outputs ?? []).map((o, i) => ({ ...clone(o), links: [], slot_index: i }));
      node.widgets = (Array.isArray(saved.widgets_values) ? saved.widgets_values : []).map((value, i) => ({ name: `value_${i}`, kind: "RAW", value }));
      return node;
    }
    // Converted widgets (saved as inputs carrying "widget") get their sockets back.
    for (const input of saved.inputs ?? []) {
      if (input.widget && this.inputIndex(node, input.name) < 0) this.convertWidgetToInput(node.id, input.widget.name ?? input.name);
    }
    applyWidgetValues(node, saved.widgets_values);
    return node;
  }
}

// Values are positional. Files written without the frontend-only widgets (control
// mode, upload button) are shorter: match them against the real widgets only.
export function applyWidgetValues(node, values) {
  if (!values) return;
  if (!Array.isArray(values)) {
    for (const w of node.widgets) if (w.name in values) w.value = values[w.name];
    return;
  }
  let widgets = node.widgets;
  if (values.length !== widgets.length) {
    const real = widgets.filter((w) => w.serialize !== false);
    if (values.length === real.length) widgets = real;
  }
  widgets.forEach((w, i) => {
    if (i >= values.length || values[i] === undefined) return;
    if (w.kind === "CONTROL" && !CONTROL_MODES.includes(values[i])) return;
    w.value = values[i];
  });
}

// Version-1 workflows keep links as objects; reduce them to the 0.4 arrays.
function normaliseWorkflow(workflow) {
  const wf = typeof workflow === "string" ? JSON.parse(workflow) : workflow;
  if (!wf || !Array.isArray(wf.nodes)) throw new Error("not a workflow: no nodes list");
  const links = (wf.links ?? []).map((l) => (Array.isArray(l) ? l
    : [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]));
  return { ...wf, links, last_node_id: wf.last_node_id ?? wf.state?.lastNodeId, last_link_id: wf.last_link_id ?? wf.state?.lastLinkId };
}

export function estimateHeight(node) {
  const slotRows = Math.max(node.inputs.filter((i) => !i.widget).length, node.outputs.length);
  const multiline = node.widgets.filter((w) => w.spec?.options?.multiline).length;
  return 34 + slotRows * 22 + node.widgets.length * 28 + multiline * 50;
}

function randomId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return "xxxxxxxx-xxxx-4xxx-8xxx-xxxxxxxxxxxx".replace(/x/g, () => Math.floor(Math.random() * 16).toString(16));
}
