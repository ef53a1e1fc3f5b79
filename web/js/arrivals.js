// What happens as a workflow arrives: the results a server start asks to show (`vidgraph serve
// --show`, ?show= in the address) open in a tab with their workflow, and model files a loaded
// workflow names but the server lacks are listed with the folder each goes in.
import { Graph } from "./graph.js";
import { graphToPrompt } from "./convert.js";
import { readEmbeddedWorkflow } from "./metadata.js";
import { outputsForFiles } from "./runs.js";
import { findMissingModels } from "./modelcheck.js";
import { showDialog } from "./dialog.js";
import { element } from "./widgets.js";

const STARTUP_KEY = "vidgraph.startup"; // the server start whose --show results this browser opened

// Results to open with: `vidgraph serve --show` (once per server start and browser) or
// ?show=output/path in the address. Their embedded workflow opens in a tab, the files as its results.
export async function openStartup(app) {
  const params = new URLSearchParams(location.search);
  const asked = params.getAll("show");
  let startup;
  try {
    startup = await app.api.json(`/vidgraph/startup${asked.length ? `?${new URLSearchParams(asked.map((w) => ["show", w]))}` : ""}`);
  } catch { return; }
  if (asked.length) {
    params.delete("show"); // a reload must not open them again
    history.replaceState(null, "", `${location.pathname}${params.size ? `?${params}` : ""}`);
  } else if (!startup.show.length || localStorage.getItem(STARTUP_KEY) === startup.id) return;
  localStorage.setItem(STARTUP_KEY, startup.id);
  if (!startup.show.length) { app.toast(`Nothing to show at ${asked.join(", ")}`, "warning"); return; }
  let found = {};
  for (const file of startup.show) {
    try {
      found = await readEmbeddedWorkflow(new Uint8Array(await (await fetch(app.api.viewUrl(file))).arrayBuffer()));
    } catch { found = {}; }
    if (found.workflow || found.prompt) break;
  }
  const json = found.workflow ?? found.prompt;
  if (!json) { app.toast(`${startup.show[0].filename}: no workflow found in this file`, "warning"); return; }
  const prompt = found.prompt ?? graphToPrompt(Graph.fromWorkflow(json, app.graph.defs));
  const name = startup.show[0].filename.replace(/_\d+_?\.\w+$/, "");
  app.loadAny(json, name, { outputs: outputsForFiles(prompt, startup.show) });
}

// Model files the workflow names that are not here: said when it loads, not after Queue.
export async function checkModels(app) {
  if (!findMissingModels(app.graph, {}).length) return [];
  const folderFiles = {};
  let paths = {};
  try {
    paths = await app.api.json("/internal/folder_paths");
    const names = Object.keys(paths);
    const lists = await Promise.all(names.map((n) => app.api.json(`/models/${encodeURIComponent(n)}`).catch(() => [])));
    names.forEach((n, i) => { folderFiles[n] = lists[i]; });
  } catch { /* the folders stay unnamed */ }
  const missing = findMissingModels(app.graph, folderFiles);
  if (!missing.length) return missing;
  const answer = await showDialog({
    title: `This workflow needs ${missing.length === 1 ? "a model file" : `${missing.length} model files`} that ${missing.length === 1 ? "is" : "are"} not here`,
    body: missingModelsTable(missing, paths, app.graph),
    buttons: [["Check again", "recheck"], ["Close", "close"]],
    className: "missing-models",
  });
  if (answer === "recheck") { await app.refreshDefinitions(); return checkModels(app); }
  return missing;
}

// One row per missing file: the file, the folder it goes in (with the paths searched), the node.
function missingModelsTable(missing, paths, graph) {
  const table = element("table", "missing-models-table");
  const head = table.createTHead().insertRow();
  for (const text of ["file", "put it in", "used by"]) head.append(element("th", "", text));
  const body = table.createTBody();
  for (const m of missing) {
    const row = body.insertRow();
    row.dataset.file = m.file;
    row.append(element("td", "file", m.file));
    const where = element("td", "folder");
    where.append(element("strong", "", m.folder ? `models/${m.folder}/` : "a models folder"));
    for (const path of (m.folder && paths[m.folder]) || []) where.append(element("div", "path", path));
    row.append(where);
    const node = graph.nodes.get(m.nodeId);
    row.append(element("td", "used-by", `${node ? graph.displayName(node) : m.nodeType} #${m.nodeId} (${m.input})`));
  }
  const wrap = element("div", "");
  wrap.append(table, element("p", "hint", "Copy or link the files there (extra_model_paths.yaml can point at another tool's folders), then press Check again."));
  return wrap;
}
