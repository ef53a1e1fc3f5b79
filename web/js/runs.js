// History entries as the queue panel shows them, and what differs between two runs of one
// workflow (the labels of a side-by-side comparison). No DOM here.

const END_EVENTS = ["execution_success", "execution_error", "execution_interrupted"];

// A ComfyUI history entry → {promptId, name, status, startedAt, seconds, files, error}.
export function summariseRun(promptId, entry) {
  const messages = entry.status?.messages ?? [];
  const at = (types) => messages.find(([type]) => types.includes(type))?.[1]?.timestamp ?? null;
  const startedAt = at(["execution_start"]);
  const endedAt = at(END_EVENTS);
  const extra = entry.prompt?.[3] ?? {};
  const failure = messages.find(([type]) => type === "execution_error")?.[1];
  return {
    promptId,
    name: extra.vidgraph_name ?? null,
    status: entry.status?.status_str ?? "unknown",
    startedAt,
    seconds: startedAt != null && endedAt != null ? (endedAt - startedAt) / 1000 : null,
    files: Object.entries(entry.outputs ?? {}).flatMap(([nodeId, out]) =>
      [...(out.images ?? []), ...(out.gifs ?? []), ...(out.videos ?? [])].map((file) => ({ ...file, nodeId }))),
    error: failure ? `${failure.node_type ?? "prompt"} #${failure.node_id ?? "?"}: ${failure.exception_type}: ${failure.exception_message}` : null,
  };
}

// Inputs that differ between two API prompts of the same graph: [{nodeId, classType, input, a, b}].
export function promptDifferences(a, b) {
  const found = [];
  for (const id of Object.keys(a ?? {})) {
    const x = a[id];
    const y = b?.[id];
    if (!y || x.class_type !== y.class_type) continue;
    for (const input of Object.keys({ ...x.inputs, ...y.inputs })) {
      const va = x.inputs?.[input];
      const vb = y.inputs?.[input];
      if (Array.isArray(va) || Array.isArray(vb)) continue; // links
      if (JSON.stringify(va) !== JSON.stringify(vb)) found.push({ nodeId: id, classType: x.class_type, input, a: va, b: vb });
    }
  }
  return found;
}

// "seed 42" / "seed 7" (or "KSampler #5 seed 42" when the same input name differs on two nodes).
export function comparisonLabels(differences) {
  if (!differences.length) return ["run A", "run B"];
  const names = differences.map((d) => d.input);
  const qualified = new Set(names).size !== names.length;
  const label = (side) => differences.slice(0, 3)
    .map((d) => `${qualified ? `${d.classType} #${d.nodeId} ` : ""}${d.input} ${JSON.stringify(d[side]).replace(/^"|"$/g, "")}`)
    .join(", ") + (differences.length > 3 ? ", …" : "");
  return [label("a"), label("b")];
}

// The output file to compare: one the two runs both wrote from the same node, moving pictures first.
export function filesToCompare(runA, runB) {
  const moving = (f) => /\.(webp|mp4|webm|gif)$/i.test(f.filename);
  for (const wantMoving of [true, false]) {
    for (const fa of runA.files) {
      if (moving(fa) !== wantMoving) continue;
      const fb = runB.files.find((f) => f.nodeId === fa.nodeId && f.filename.split(".").pop() === fa.filename.split(".").pop());
      if (fb) return [fa, fb];
    }
  }
  return null;
}

// Output files (as /view entries) → the saver nodes of `prompt` that wrote them, as a tab's
// outputs {nodeId: {images: [file], animated: [true]}}. A file "vidgraph/demo_00002_.webp" belongs
// to a node whose filename_prefix is "vidgraph/demo" and whose class saves that kind of file.
export function outputsForFiles(prompt, files) {
  const outputs = {};
  for (const file of files) {
    const path = file.subfolder ? `${file.subfolder}/${file.filename}` : file.filename;
    const ext = file.filename.split(".").pop().toLowerCase();
    const savers = Object.entries(prompt ?? {}).filter(([, node]) => {
      const prefix = node.inputs?.filename_prefix;
      return typeof prefix === "string" && path.startsWith(`${prefix}_`);
    });
    const kind = (type) => type.toLowerCase().includes(ext) ? 0
      : /^(mp4|webm|mov|mkv)$/.test(ext) && /video/i.test(type) ? 1 : /image/i.test(type) ? 2 : 3;
    const best = savers.sort(([, a], [, b]) => kind(a.class_type) - kind(b.class_type))[0];
    if (!best) continue;
    const entry = (outputs[best[0]] ??= { images: [], animated: [] });
    entry.images.push(file);
    entry.animated.push(ext !== "png" && ext !== "jpg");
  }
  return outputs;
}
