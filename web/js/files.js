// Getting workflows in and out: download, file picker, drag-and-drop, browser autosave.
import { readEmbeddedWorkflow, sniffFormat } from "./metadata.js";

const AUTOSAVE_KEY = "vidgraph.workflow";

export function downloadJson(data, filename) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// What a file holds: {workflow} (UI JSON), {prompt} (API JSON), {image: File} for a plain
// image to upload, or {} when nothing usable was found.
export async function readWorkflowFile(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (file.name.endsWith(".json") || file.type === "application/json" || bytes[0] === 0x7b) {
    const json = JSON.parse(new TextDecoder().decode(bytes));
    return Array.isArray(json.nodes) ? { workflow: json } : { prompt: json };
  }
  const format = sniffFormat(bytes);
  const found = await readEmbeddedWorkflow(bytes);
  if (found.workflow) return { workflow: found.workflow };
  if (found.prompt) return { prompt: found.prompt };
  if (format === "png" || format === "webp" || file.type.startsWith("image/")) return { image: file };
  return {};
}

// Each tab keeps its own graph (sessionStorage survives a reload of that tab); localStorage
// holds the last one saved by any tab, for new tabs. Two open tabs never overwrite each other's restore.
export function saveToBrowser(workflow) {
  const text = JSON.stringify(workflow);
  try {
    sessionStorage.setItem(AUTOSAVE_KEY, text);
    localStorage.setItem(AUTOSAVE_KEY, text);
    return true;
  } catch {
    return false; // quota: keep working, the toolbar save still works
  }
}

export function loadFromBrowser() {
  try {
    const text = sessionStorage.getItem(AUTOSAVE_KEY) ?? localStorage.getItem(AUTOSAVE_KEY);
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

export function installDropTarget(target, onFiles) {
  const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes("Files");
  target.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    document.body.classList.add("dragging-file");
  });
  target.addEventListener("dragleave", (e) => {
    if (e.target === target || e.relatedTarget === null) document.body.classList.remove("dragging-file");
  });
  target.addEventListener("drop", (e) => {
    document.body.classList.remove("dragging-file");
    if (!e.dataTransfer?.files?.length) return;
    e.preventDefault();
    onFiles([...e.dataTransfer.files], e);
  });
}
