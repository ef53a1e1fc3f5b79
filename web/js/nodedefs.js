// Turns /object_info node definitions into the slot and widget layout of a node (no DOM here).

export const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
export const CONTROL_MODES = ["fixed", "increment", "decrement", "randomize"];

// Frontend-only node types: they shape the graph but never reach the API prompt.
export const VIRTUAL_DEFS = {
  Reroute: {
    name: "Reroute", display_name: "Reroute", category: "utils", description: "", output_node: false,
    python_module: "frontend", input: { required: { "": ["*"] } }, input_order: { required: [""] },
    output: ["*"], output_name: [""], output_is_list: [false], virtual: true,
  },
  Note: {
    name: "Note", display_name: "Note", category: "utils", description: "", output_node: false,
    python_module: "frontend", input: { required: { text: ["STRING", { multiline: true }] } },
    input_order: { required: ["text"] }, output: [], output_name: [], output_is_list: [], virtual: true,
  },
};
VIRTUAL_DEFS.MarkdownNote = { ...VIRTUAL_DEFS.Note, name: "MarkdownNote", display_name: "Markdown Note" };
// ComfyUI's legacy PrimitiveNode: one value feeding widget inputs of other nodes. Only loaded
// from files (its slots and values are kept as saved), never offered in the search.
VIRTUAL_DEFS.PrimitiveNode = {
  name: "PrimitiveNode", display_name: "Primitive", category: "utils", description: "", output_node: false,
  python_module: "frontend", input: { required: {} }, output: ["*"], output_name: ["connect to widget input"],
  output_is_list: [false], virtual: true, deprecated: true, keepsSavedSlots: true,
};

export function isVirtualType(type) {
  return Object.prototype.hasOwnProperty.call(VIRTUAL_DEFS, type);
}

// Both combo spellings: [["a","b"], {...}] and ["COMBO", {options: [...]}].
export function parseInputSpec(name, spec, optional) {
  const [rawType, options = {}] = Array.isArray(spec) ? spec : [spec, {}];
  const opts = options && typeof options === "object" ? options : {};
  if (Array.isArray(rawType)) {
    return { name, type: "COMBO", optional, options: { ...opts, values: rawType } };
  }
  const type = String(rawType);
  if (type === "COMBO") return { name, type, optional, options: { ...opts, values: opts.options ?? [] } };
  return { name, type, optional, options: opts };
}

function orderedNames(def, category) {
  const declared = Object.keys(def.input?.[category] ?? {});
  const order = def.input_order?.[category];
  return Array.isArray(order) ? order.filter((n) => declared.includes(n)) : declared;
}

export function defaultWidgetValue(spec) {
  const o = spec.options;
  switch (spec.type) {
    case "INT":
    case "FLOAT": return clampNumber(o.default ?? o.min ?? 0, spec);
    case "STRING": return o.default ?? "";
    case "BOOLEAN": return o.default ?? false;
    case "COMBO": return o.default ?? o.values[0] ?? "";
    default: return null;
  }
}

export function hasSeedControl(spec) {
  if (spec.options.control_after_generate) return true;
  // Older definitions never flagged it: ComfyUI's frontend guesses from the name.
  return spec.type === "INT" && (spec.name === "seed" || spec.name === "noise_seed");
}

// The layout of a node of this definition: socket inputs, outputs and widgets in
// widgets_values order (extra frontend-only widgets included, as ComfyUI stores them).
export function describeNode(def) {
  const sockets = [];
  const widgets = [];
  for (const category of ["required", "optional"]) {
    for (const name of orderedNames(def, category)) {
      const spec = parseInputSpec(name, def.input[category][name], category === "optional");
      const isWidget = WIDGET_TYPES.has(spec.type) && !spec.options.forceInput;
      if (!isWidget) {
        sockets.push({ name, type: spec.type, optional: spec.optional });
        continue;
      }
      widgets.push({ name, kind: spec.type, spec, value: defaultWidgetValue(spec) });
      if (hasSeedControl(spec)) {
        widgets.push({ name: "control_after_generate", kind: "CONTROL", target: name, value: "randomize", serialize: false });
      }
      if (spec.options.image_upload || spec.options.video_upload) {
        widgets.push({ name: "upload", kind: "UPLOAD", target: name, value: "image", serialize: false });
      }
    }
  }
  const outputs = (def.output ?? []).map((type, i) => ({
    name: def.output_name?.[i] ?? String(type),
    type: Array.isArray(type) ? "COMBO" : type,
    isList: Boolean(def.output_is_list?.[i]),
  }));
  return { sockets, widgets, outputs };
}

export function clampNumber(value, spec) {
  let n = Number(value);
  if (!Number.isFinite(n)) n = Number(spec.options.default ?? 0);
  const { min, max } = spec.options;
  if (typeof min === "number" && n < min) n = min;
  // 2**64-1 seeds cannot be represented exactly; stay inside what a JS number holds.
  const upper = typeof max === "number" ? Math.min(max, Number.MAX_SAFE_INTEGER) : undefined;
  if (upper !== undefined && n > upper) n = upper;
  if (spec.type === "INT") {
    // ComfyUI snaps to the step counted from min's remainder: width (step 8) 100 → 104.
    const step = Number(spec.options.step);
    if (Number.isFinite(step) && step > 1) {
      const shift = (typeof min === "number" ? min : 0) % step;
      n = Math.round((n - shift) / step) * step + shift;
      if (upper !== undefined && n > upper) n -= step;
      if (typeof min === "number" && n < min) n += step;
    }
    return Math.round(n);
  }
  // ComfyUI rounds FLOATs to `round`, which defaults to the step; `round: false` turns it off.
  const round = spec.options.round === false ? null : (spec.options.round ?? spec.options.step);
  if (typeof round === "number" && round > 0) {
    const decimals = Math.max(0, Math.ceil(-Math.log10(round)));
    n = Number((Math.round(n / round) * round).toFixed(decimals));
  }
  return n;
}

// control_after_generate: the value the seed takes for the *next* queue.
export function nextControlledValue(mode, value, spec, random = Math.random) {
  if (spec.type === "COMBO") {
    const values = spec.options.values;
    const i = values.indexOf(value);
    if (mode === "increment") return values[Math.min(values.length - 1, i + 1)];
    if (mode === "decrement") return values[Math.max(0, i - 1)];
    if (mode === "randomize") return values[Math.floor(random() * values.length)];
    return value;
  }
  const step = spec.type === "INT" ? 1 : (spec.options.step ?? 1);
  if (mode === "increment") return clampNumber(Number(value) + step, spec);
  if (mode === "decrement") return clampNumber(Number(value) - step, spec);
  if (mode === "randomize") {
    const min = spec.options.min ?? 0;
    const max = Math.min(spec.options.max ?? 0xffffffff, Number.MAX_SAFE_INTEGER);
    return clampNumber(min + Math.floor(random() * (max - min + 1)), spec);
  }
  return value;
}

// Test-only and deprecated nodes come last in any list.
const BACKSTAGE = /(^|\/)(_for_testing|deprecated|experimental)/i;

// Nodes people reach for next: offered first among equally fitting ones.
const COMMON = new Set(["KSampler", "KSamplerAdvanced", "VAEDecode", "VAEEncode", "PreviewImage", "SaveImage",
  "SaveAnimatedWEBP", "CreateVideo", "SaveVideo", "LoadImage", "ImageOnlyCheckpointLoader", "CheckpointLoaderSimple",
  "SVD_img2vid_Conditioning", "VideoLinearCFGGuidance", "EmptyLatentImage", "ImageScale"]);

// How well a node fits a link dropped on empty space (lower is better; null: it does not fit).
// wantInput: the link comes from an output and needs an input of `type`; else it needs an output.
export function linkFitRank(def, type, wantInput, compatible) {
  const slots = wantInput
    ? ["required", "optional"].flatMap((c) => Object.values(def.input?.[c] ?? {}).map((spec) => [c, Array.isArray(spec[0]) ? "COMBO" : String(spec[0])]))
    : (def.output ?? []).map((t) => ["required", Array.isArray(t) ? "COMBO" : String(t)]);
  const index = slots.findIndex(([, t]) => compatible(wantInput ? type : t, wantInput ? t : type));
  if (index < 0) return null;
  const [category, slotType] = slots[index];
  const exact = slotType.split(",").map((t) => t.trim().toUpperCase()).includes(String(type).toUpperCase());
  const tier = BACKSTAGE.test(def.category ?? "") ? 3 : !exact ? 2 : category === "optional" ? 1 : 0;
  return tier * 1000 + (COMMON.has(def.name) ? 0 : 100) + (index === 0 ? 0 : 10);
}

// Fuzzy search for the add-node palette: every query word must appear in the
// name, display name or category; earlier and tighter matches rank first.
// fit(def): false/null leaves a node out; a number ranks it (lower first); true is 0.
export function searchDefs(defs, query, fit = () => true) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const hits = [];
  for (const def of Object.values(defs)) {
    const rank = def.deprecated ? null : fit(def);
    if (rank === false || rank == null) continue;
    const display = (def.display_name || def.name).toLowerCase();
    const haystack = `${display} ${def.name.toLowerCase()} ${(def.category || "").toLowerCase()}`;
    let score = 0;
    let matched = true;
    for (const word of words) {
      const at = haystack.indexOf(word);
      if (at < 0) { matched = false; break; }
      score += at + (display.startsWith(word) ? -50 : 0) + (display === word ? -100 : 0);
    }
    const backstage = BACKSTAGE.test(def.category ?? "") ? 1000 : 0;
    if (matched) hits.push({ def, score: score + display.length / 100 + (typeof rank === "number" ? rank : backstage) });
  }
  hits.sort((a, b) => a.score - b.score || a.def.name.localeCompare(b.def.name));
  return hits.map((h) => h.def);
}
