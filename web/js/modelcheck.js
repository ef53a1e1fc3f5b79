// Which model files a workflow names that this server does not have, and which folder each belongs
// in: checked when a workflow loads, as ComfyUI's missing-models dialog does. No DOM here.

export const MODEL_EXTENSIONS = /\.(safetensors|sft|ckpt|pt|pth|bin|gguf|onnx)$/i;

// ComfyUI's input names for its loaders' folders: the fallback when the file lists cannot tell.
const FOLDER_BY_INPUT = {
  ckpt_name: "checkpoints", vae_name: "vae", clip_name: "clip_vision", unet_name: "diffusion_models",
  lora_name: "loras", control_net_name: "controlnet", upscale_model: "upscale_models",
  style_model_name: "style_models", gligen_name: "gligen", model_name: "upscale_models",
};

// folderFiles: {folder: [file names]} for the server's model folders.
// Returns [{nodeId, nodeType, input, file, folder | null}], one per missing file use.
export function findMissingModels(graph, folderFiles) {
  const missing = [];
  for (const node of graph.nodes.values()) {
    if (node.mode === 2) continue; // muted: never runs
    for (const w of node.widgets) {
      const choices = w.spec?.options?.values;
      if (w.kind !== "COMBO" || !Array.isArray(choices) || typeof w.value !== "string") continue;
      if (choices.includes(w.value) || !MODEL_EXTENSIONS.test(w.value)) continue;
      if (graph.widgetIsLinked(node, w.name)) continue;
      missing.push({ nodeId: node.id, nodeType: node.type, input: w.name, file: w.value, folder: folderFor(w.name, choices, folderFiles) });
    }
  }
  return missing;
}

// The folder whose files are exactly this combo's choices; ties and empty lists go by the input's name.
export function folderFor(inputName, choices, folderFiles) {
  const wanted = [...choices].sort().join("\n");
  const same = Object.entries(folderFiles).filter(([, files]) => [...files].sort().join("\n") === wanted).map(([f]) => f);
  const byName = FOLDER_BY_INPUT[inputName];
  if (same.length === 1 && choices.length) return same[0];
  if (byName && (same.includes(byName) || !same.length || !choices.length)) return byName;
  return same[0] ?? byName ?? null;
}
