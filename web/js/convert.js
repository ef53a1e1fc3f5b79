// UI graph → API prompt (what POST /prompt wants) and API prompt → UI graph. No DOM here.
import { Graph, MODE, estimateHeight } from "./graph.js";
import { typesCompatible } from "./types.js";

// Follows a link back to the node that really produces the value: through
// reroutes, and through bypassed nodes (which pass on their first input of the
// requested type). Returns [originId, slot], {value} for a PrimitiveNode's constant, or null
// when nothing feeds it.
export function resolveLinkSource(graph, linkId, seen = new Set()) {
  const link = graph.links.get(linkId);
  if (!link || seen.has(link.id)) return null;
  seen.add(link.id);
  const origin = graph.nodes.get(link.origin_id);
  if (!origin) return null;
  if (origin.type === "Reroute") return resolveLinkSource(graph, origin.inputs[0]?.link, seen);
  if (origin.type === "PrimitiveNode") return origin.widgets.length ? { value: origin.widgets[0].value } : null;
  if (origin.mode === MODE.NEVER) return null;
  if (origin.mode === MODE.BYPASS) {
    const wanted = graph.outputType(origin, link.origin_slot);
    const passthrough = origin.inputs.find((i) => i.link != null && typesCompatible(graph.links.get(i.link)?.type, wanted));
    return passthrough ? resolveLinkSource(graph, passthrough.link, seen) : null;
  }
  if (graph.isVirtual(origin)) return null;
  return [String(origin.id), link.origin_slot];
}

export function graphToPrompt(graph) {
  const prompt = {};
  const nodes = [...graph.nodes.values()].sort((a, b) => a.id - b.id);
  for (const node of nodes) {
    if (graph.isVirtual(node) || node.mode === MODE.NEVER || node.mode === MODE.BYPASS) continue;
    const inputs = {};
    for (const w of node.widgets) {
      if (w.serialize === false || w.kind === "RAW") continue;
      inputs[w.name] = Array.isArray(w.value) ? { __value__: w.value } : w.value;
    }
    for (const input of node.inputs) {
      if (input.link == null) continue;
      const source = resolveLinkSource(graph, input.link);
      if (Array.isArray(source)) inputs[input.name] = source;
      else if (source) inputs[input.name] = source.value;
      // A widget fed by a link that leads nowhere keeps its own value.
      else if (!input.widget) delete inputs[input.name];
    }
    prompt[String(node.id)] = { inputs, class_type: node.type, _meta: { title: graph.displayName(node) } };
  }
  // Links into nodes left out (muted, virtual) would only fail validation.
  for (const entry of Object.values(prompt)) {
    for (const [name, value] of Object.entries(entry.inputs)) {
      if (Array.isArray(value) && value.length === 2 && !(value[0] in prompt)) delete entry.inputs[name];
    }
  }
  return prompt;
}

const isLink = (v) => Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "number";

// An API prompt has no positions: lay nodes out in columns by their distance from the sources.
export function promptToGraph(prompt, defs) {
  const graph = new Graph(defs);
  const ids = Object.keys(prompt);
  const column = new Map();
  const depthOf = (id, trail = new Set()) => {
    if (column.has(id)) return column.get(id);
    if (trail.has(id) || !prompt[id]) return 0;
    trail.add(id);
    let d = 0;
    for (const v of Object.values(prompt[id].inputs ?? {})) if (isLink(v)) d = Math.max(d, depthOf(v[0], trail) + 1);
    column.set(id, d);
    return d;
  };
  ids.forEach((id) => depthOf(id));
  const nextY = new Map();
  const numericId = (id, i) => (/^\d+$/.test(id) ? Number(id) : 100000 + i);
  const idMap = new Map();
  ids.forEach((id, i) => {
    const entry = prompt[id];
    const col = column.get(id) ?? 0;
    const y = nextY.get(col) ?? 0;
    const node = graph.addNode(entry.class_type, [col * 360, y], { id: numericId(id, i) });
    idMap.set(id, node.id);
    if (entry._meta?.title && entry._meta.title !== graph.displayName(node)) node.title = entry._meta.title;
    for (const [name, value] of Object.entries(entry.inputs ?? {})) {
      if (isLink(value)) continue;
      const w = graph.widget(node, name);
      if (w) w.value = value && typeof value === "object" && "__value__" in value ? value.__value__ : value;
    }
    // An API prompt records one run: queueing it again should give that run again, not a new seed.
    for (const control of node.widgets.filter((x) => x.kind === "CONTROL")) control.value = "fixed";
    nextY.set(col, y + estimateHeight(node) + 40);
  });
  ids.forEach((id) => {
    for (const [name, value] of Object.entries(prompt[id].inputs ?? {})) {
      if (!isLink(value) || !idMap.has(value[0])) continue;
      const target = graph.nodes.get(idMap.get(id));
      const origin = graph.nodes.get(idMap.get(value[0]));
      // Types may be unknown for missing node classes: link anyway rather than lose the edge.
      if (!graph.connect(origin.id, value[1], target.id, name) && origin.outputs[value[1]] === undefined) {
        origin.outputs[value[1]] = { name: `out_${value[1]}`, type: "*", links: [], slot_index: value[1] };
        graph.connect(origin.id, value[1], target.id, name);
      }
    }
  });
  return graph;
}

// Which of the two formats is this JSON? API prompts map ids to {class_type, inputs}.
export function looksLikeApiPrompt(json) {
  if (!json || typeof json !== "object" || Array.isArray(json) || Array.isArray(json.nodes)) return false;
  const values = Object.values(json);
  return values.length > 0 && values.every((v) => v && typeof v === "object" && "class_type" in v);
}
