import test from "node:test";
import assert from "node:assert/strict";
import { summariseRun, promptDifferences, comparisonLabels, filesToCompare } from "../js/runs.js";

const entry = (seed, outputs = {}) => ({
  prompt: [1, "p", { 5: { class_type: "KSampler", inputs: { seed, steps: 6, model: ["4", 0] } } }, { vidgraph_name: "demo" }, ["9"]],
  outputs,
  status: { status_str: "success", completed: true, messages: [
    ["execution_start", { prompt_id: "p", timestamp: 1000 }], ["execution_cached", { nodes: [], timestamp: 1001 }],
    ["execution_success", { prompt_id: "p", timestamp: 4500 }]] },
});

test("a history entry gives its name, time, duration and files", () => {
  const run = summariseRun("p", entry(42, { 7: { images: [{ filename: "a.webp", subfolder: "", type: "output" }] } }));
  assert.equal(run.name, "demo");
  assert.equal(run.startedAt, 1000);
  assert.equal(run.seconds, 3.5);
  assert.deepEqual(run.files, [{ filename: "a.webp", subfolder: "", type: "output", nodeId: "7" }]);
  assert.equal(run.error, null);
});

test("two runs compare by what differs between their prompts", () => {
  const diff = promptDifferences(entry(42).prompt[2], entry(7).prompt[2]);
  assert.deepEqual(diff, [{ nodeId: "5", classType: "KSampler", input: "seed", a: 42, b: 7 }]);
  assert.deepEqual(comparisonLabels(diff), ["seed 42", "seed 7"]);
  assert.deepEqual(comparisonLabels([]), ["run A", "run B"]);
  const a = summariseRun("a", entry(1, { 7: { images: [{ filename: "x.png" }, { filename: "x.webp" }] } }));
  const b = summariseRun("b", entry(2, { 7: { images: [{ filename: "y.png" }, { filename: "y.webp" }] } }));
  assert.deepEqual(filesToCompare(a, b).map((f) => f.filename), ["x.webp", "y.webp"]);
});

test("output files find the saver nodes that wrote them", async () => {
  const { outputsForFiles } = await import("../js/runs.js");
  const prompt = {
    7: { class_type: "SaveAnimatedWEBP", inputs: { filename_prefix: "vidgraph/demo" } },
    9: { class_type: "SaveVideo", inputs: { filename_prefix: "vidgraph/demo", video: ["8", 0] } },
    10: { class_type: "SaveImage", inputs: { filename_prefix: "other" } },
  };
  const webp = { filename: "demo_00002_.webp", subfolder: "vidgraph", type: "output" };
  const mp4 = { filename: "demo_00002_.mp4", subfolder: "vidgraph", type: "output" };
  const stray = { filename: "nobody_00001_.png", subfolder: "", type: "output" };
  assert.deepEqual(outputsForFiles(prompt, [webp, mp4, stray]), {
    7: { images: [webp], animated: [true] }, 9: { images: [mp4], animated: [true] } });
});
