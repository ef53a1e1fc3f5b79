import test from "node:test";
import assert from "node:assert/strict";
import { Graph } from "../js/graph.js";
import { findMissingModels, folderFor } from "../js/modelcheck.js";
import { defs } from "./helpers.mjs";

test("a model file the server lacks is found, with the folder it belongs in", () => {
  const d = defs();
  const graph = new Graph(d);
  const loader = graph.addNode("ImageOnlyCheckpointLoader", [0, 0]);
  const choices = loader.widgets[0].spec.options.values;
  const folders = { checkpoints: [...choices], vae: ["other.safetensors"] };
  assert.deepEqual(findMissingModels(graph, folders), [], "a file that is there is not reported");
  loader.widgets[0].value = "not_here_xt.safetensors";
  assert.deepEqual(findMissingModels(graph, folders), [{
    nodeId: loader.id, nodeType: "ImageOnlyCheckpointLoader", input: "ckpt_name", file: "not_here_xt.safetensors", folder: "checkpoints" }]);
  loader.mode = 2;
  assert.deepEqual(findMissingModels(graph, folders), [], "a muted node never runs");
});

test("the folder comes from the file lists, else from the input's name", () => {
  assert.equal(folderFor("whatever", ["a.pt"], { upscale_models: ["a.pt"], vae: [] }), "upscale_models");
  assert.equal(folderFor("vae_name", [], { vae: [], checkpoints: [] }), "vae");
  assert.equal(folderFor("clip_name", ["x.safetensors"], { clip_vision: ["x.safetensors"], text_encoders: ["x.safetensors"] }), "clip_vision");
  assert.equal(folderFor("mystery", ["q.bin"], { a: ["z"] }), null);
});
