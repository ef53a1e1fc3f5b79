// Slot type rules shared by the graph model and the view (no DOM here).

// Colours follow the conventions ComfyUI users already read at a glance.
const TYPE_COLOURS = {
  MODEL: "#b39ddb", CLIP: "#ffd500", CLIP_VISION: "#a8dadc", CLIP_VISION_OUTPUT: "#ad7452",
  VAE: "#ff6e6e", LATENT: "#ff9cf9", IMAGE: "#64b5f6", MASK: "#81c784",
  CONDITIONING: "#ffa931", VIDEO: "#4dd0c4", SIGMAS: "#cdffcd", SAMPLER: "#ecb4b4",
  INT: "#9fd4a3", FLOAT: "#9fd4a3", STRING: "#9fd4a3", BOOLEAN: "#9fd4a3", COMBO: "#9fd4a3",
};

export function typeColour(type) {
  const key = normaliseType(type);
  if (TYPE_COLOURS[key]) return TYPE_COLOURS[key];
  if (key === "*" || key === "") return "#cccccc";
  // Unknown plugin types still get a stable, distinct hue.
  let hash = 0;
  for (const ch of key) hash = (hash * 31 + ch.charCodeAt(0)) | 0;
  return `hsl(${Math.abs(hash) % 360} 60% 65%)`;
}

export function normaliseType(type) {
  if (Array.isArray(type)) return "COMBO";
  return String(type ?? "").trim().toUpperCase();
}

// litegraph's rule: "*" or an empty type is a wildcard, comparison ignores case,
// and a comma-separated list matches when any member matches.
export function typesCompatible(outputType, inputType) {
  const out = normaliseType(outputType);
  const inp = normaliseType(inputType);
  if (out === "" || inp === "" || out === "*" || inp === "*") return true;
  if (out === inp) return true;
  const outs = out.split(",").map((t) => t.trim());
  const ins = inp.split(",").map((t) => t.trim());
  return outs.some((t) => ins.includes(t));
}
