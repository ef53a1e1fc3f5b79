import test from "node:test";
import assert from "node:assert/strict";
import { Graph, MODE } from "../js/graph.js";
import { graphToPrompt, promptToGraph, looksLikeApiPrompt } from "../js/convert.js";
import { defs, fixtureJson } from "./helpers.mjs";

test("UI → API: links as [id, slot], widget values by name, frontend-only widgets left out", () => {
  const g = Graph.fromWorkflow(fixtureJson("svd_workflow.json"), defs());
  const prompt = graphToPrompt(g);
  assert.deepEqual(prompt, fixtureJson("svd_prompt.json"));
  const ks = Object.values(prompt).find((n) => n.class_type === "KSampler");
  assert.deepEqual(ks.inputs, {
    seed: 42, steps: 2, cfg: 8, sampler_name: "euler", scheduler: "simple", denoise: 1,
    model: ["4", 0], positive: ["3", 0], negative: ["3", 1], latent_image: ["3", 2],
  });
  assert.equal(prompt["2"].inputs.upload, undefined);
  assert.equal(prompt["2"].inputs.image, "example.png");
  assert.equal(ks._meta.title, "KSampler");
});

test("bypassed nodes pass their matching input through; muted nodes and their links disappear", () => {
  const g = Graph.fromWorkflow(fixtureJson("svd_workflow.json"), defs());
  const guidance = [...g.nodes.values()].find((n) => n.type === "VideoLinearCFGGuidance");
  guidance.mode = MODE.BYPASS;
  let prompt = graphToPrompt(g);
  assert.equal(prompt[guidance.id], undefined);
  assert.deepEqual(prompt["5"].inputs.model, ["1", 0], "KSampler takes the checkpoint's MODEL directly");
  guidance.mode = MODE.NEVER;
  prompt = graphToPrompt(g);
  assert.equal(prompt["5"].inputs.model, undefined, "a link into a muted node is dropped");
});

test("reroutes and notes are virtual: links are resolved through reroutes", () => {
  const g = new Graph(defs());
  const ckpt = g.addNode("ImageOnlyCheckpointLoader");
  const r1 = g.addNode("Reroute");
  const r2 = g.addNode("Reroute");
  const dec = g.addNode("VAEDecode");
  g.addNode("Note");
  g.connect(ckpt.id, 2, r1.id, "");
  g.connect(r1.id, 0, r2.id, "");
  g.connect(r2.id, 0, dec.id, "vae");
  const prompt = graphToPrompt(g);
  assert.deepEqual(Object.keys(prompt).sort(), [String(ckpt.id), String(dec.id)]);
  assert.deepEqual(prompt[dec.id].inputs.vae, [String(ckpt.id), 2]);
});

test("a widget converted to an input sends the link, not the value", () => {
  const g = new Graph(defs());
  const ks = g.addNode("KSampler");
  const any = g.addNode("AnyPassthrough");
  g.connect(any.id, 0, ks.id, "seed");
  assert.deepEqual(graphToPrompt(g)[ks.id].inputs.seed, [String(any.id), 0]);
});

test("API → UI → API gives the same prompt back, laid out left to right", () => {
  const prompt = fixtureJson("svd_prompt.json");
  assert.ok(looksLikeApiPrompt(prompt));
  assert.equal(looksLikeApiPrompt(fixtureJson("svd_workflow.json")), false);
  const g = promptToGraph(prompt, defs());
  assert.deepEqual(graphToPrompt(g), prompt);
  const x = (type) => [...g.nodes.values()].find((n) => n.type === type).pos[0];
  assert.ok(x("ImageOnlyCheckpointLoader") < x("KSampler") && x("KSampler") < x("SaveAnimatedWEBP"));
});

test("a legacy PrimitiveNode feeding a converted widget sends its value", () => {
  const wf = fixtureJson("svd_workflow.json");
  const ks = wf.nodes.find((n) => n.type === "KSampler");
  ks.inputs.push({ name: "seed", type: "INT", widget: { name: "seed" }, link: 50 });
  wf.nodes.push({ id: 20, type: "PrimitiveNode", pos: [0, 0], size: [200, 80], flags: {}, order: 0, mode: 0, inputs: [],
    outputs: [{ name: "INT", type: "INT", links: [50], widget: { name: "seed" } }], properties: { "Run widget replace on values": false },
    widgets_values: [123456, "fixed"] });
  wf.links.push([50, 20, 0, ks.id, ks.inputs.length - 1, "INT"]);
  const g = Graph.fromWorkflow(wf, defs());
  const prompt = graphToPrompt(g);
  assert.equal(prompt[ks.id].inputs.seed, 123456);
  assert.equal(prompt["20"], undefined, "the primitive itself is not sent");
  const saved = g.serialize().nodes.find((n) => n.id === 20);
  assert.deepEqual(saved.widgets_values, [123456, "fixed"]);
  assert.equal(saved.outputs[0].type, "INT");
});
