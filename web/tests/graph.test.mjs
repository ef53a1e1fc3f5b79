import test from "node:test";
import assert from "node:assert/strict";
import { Graph, MODE } from "../js/graph.js";
import { defs, fixtureJson } from "./helpers.mjs";

test("a node built from its definition has sockets, outputs and widgets in ComfyUI's order", () => {
  const g = new Graph(defs());
  const ks = g.addNode("KSampler", [10, 20]);
  assert.deepEqual(ks.inputs.map((i) => i.name), ["model", "positive", "negative", "latent_image"]);
  assert.deepEqual(ks.widgets.map((w) => w.name),
    ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"]);
  assert.deepEqual(ks.widgets.map((w) => w.value), [0, "randomize", 20, 8, "euler", "simple", 1]);
  assert.deepEqual(ks.outputs.map((o) => o.type), ["LATENT"]);
  const load = g.addNode("LoadImage");
  assert.deepEqual(load.widgets.map((w) => [w.name, w.value]), [["image", "example.png"], ["upload", "image"]]);
  const video = g.addNode("CreateVideo");
  assert.equal(video.inputs.find((i) => i.name === "audio").shape, 7, "optional inputs carry shape 7");
});

test("connect refuses mismatched types and cycles, accepts *, and replaces the old link", () => {
  const g = new Graph(defs());
  const ckpt = g.addNode("ImageOnlyCheckpointLoader");
  const dec = g.addNode("VAEDecode");
  const ks = g.addNode("KSampler");
  assert.equal(g.connect(ckpt.id, 1, dec.id, "vae"), null, "CLIP_VISION into VAE is refused");
  const first = g.connect(ckpt.id, 2, dec.id, "vae");
  assert.equal(first.type, "VAE");
  assert.equal(g.connect(ks.id, 0, dec.id, "samples").type, "LATENT");
  const any = g.addNode("AnyPassthrough");
  assert.ok(g.connect(ckpt.id, 0, any.id, "value"), "* input accepts MODEL");
  assert.ok(g.connect(any.id, 0, ks.id, "model"), "* output goes into MODEL");
  assert.equal(g.connect(ks.id, 0, any.id, "value"), null, "a cycle is refused");
  const ckpt2 = g.addNode("ImageOnlyCheckpointLoader");
  const second = g.connect(ckpt2.id, 2, dec.id, "vae");
  assert.ok(second);
  assert.equal(g.links.has(first.id), false, "old link removed");
  assert.deepEqual(ckpt.outputs[2].links, []);
  assert.equal(dec.inputs.find((i) => i.name === "vae").link, second.id);
});

test("linking into a widget converts it into an input; converting back drops the link", () => {
  const g = new Graph(defs());
  const ks = g.addNode("KSampler");
  const any = g.addNode("AnyPassthrough");
  const link = g.connect(any.id, 0, ks.id, "seed");
  assert.ok(link);
  const seedInput = ks.inputs.find((i) => i.name === "seed");
  assert.deepEqual(seedInput.widget, { name: "seed" });
  assert.equal(link.target_slot, ks.inputs.indexOf(seedInput));
  assert.ok(g.widgetIsLinked(ks, "seed"));
  g.convertInputToWidget(ks.id, "seed");
  assert.equal(g.links.size, 0);
  assert.equal(ks.inputs.find((i) => i.name === "seed"), undefined);
});

test("removing a node removes its links on both sides", () => {
  const g = new Graph(defs());
  const a = g.addNode("ImageOnlyCheckpointLoader");
  const b = g.addNode("VAEDecode");
  const c = g.addNode("VideoLinearCFGGuidance");
  g.connect(a.id, 2, b.id, "vae");
  g.connect(a.id, 0, c.id, "model");
  g.removeNode(a.id);
  assert.equal(g.links.size, 0);
  assert.equal(b.inputs[1].link, null);
});

test("UI format round-trips: serialize → load → serialize is identical", () => {
  const wf = fixtureJson("svd_workflow.json");
  const g = Graph.fromWorkflow(wf, defs());
  assert.deepEqual(g.serialize(), wf);
  assert.equal(wf.version, 0.4);
  assert.equal(wf.links.length, 11);
  assert.ok(wf.links.every((l) => l.length === 6));
});

test("a ComfyUI-style file without the frontend-only widget values still loads by position", () => {
  const wf = fixtureJson("svd_workflow.json");
  const ks = wf.nodes.find((n) => n.type === "KSampler");
  ks.widgets_values = [7, 3, 2.5, "euler", "karras", 1];
  const g = Graph.fromWorkflow(wf, defs());
  const node = g.nodes.get(ks.id);
  assert.deepEqual(node.widgets.map((w) => w.value), [7, "randomize", 3, 2.5, "euler", "karras", 1]);
});

test("version-1 workflows (links as objects) and unknown node types load without loss", () => {
  const wf = fixtureJson("svd_workflow.json");
  wf.version = 1;
  wf.links = wf.links.map(([id, origin_id, origin_slot, target_id, target_slot, type]) => ({ id, origin_id, origin_slot, target_id, target_slot, type }));
  wf.nodes.push({ id: 99, type: "SomePluginNode", pos: [0, 0], size: [200, 80], flags: {}, order: 0, mode: 0,
    inputs: [{ name: "x", type: "FOO", link: null }], outputs: [{ name: "y", type: "BAR", links: [] }], properties: {}, widgets_values: [1, "a"] });
  const g = Graph.fromWorkflow(wf, defs());
  assert.equal(g.links.size, 11);
  const plugin = g.serialize().nodes.find((n) => n.id === 99);
  assert.deepEqual(plugin.widgets_values, [1, "a"]);
  assert.equal(plugin.inputs[0].type, "FOO");
  assert.equal(g.nodes.get(99).missing, true);
});

test("reroutes pass the source type on to their links and refuse mismatches downstream", () => {
  const g = new Graph(defs());
  const ckpt = g.addNode("ImageOnlyCheckpointLoader");
  const reroute = g.addNode("Reroute");
  const dec = g.addNode("VAEDecode");
  assert.ok(g.connect(ckpt.id, 2, reroute.id, ""));
  assert.equal(g.connect(reroute.id, 0, dec.id, "samples"), null, "VAE through a reroute is not a LATENT");
  assert.equal(g.connect(reroute.id, 0, dec.id, "vae").type, "VAE");
});

test("group membership is by bounding box", () => {
  const g = new Graph(defs());
  const inside = g.addNode("VAEDecode", [10, 40]);
  g.addNode("VAEDecode", [900, 900]);
  const group = g.addGroup("G", [0, 0, 400, 300]);
  assert.deepEqual(g.nodesInGroup(group).map((n) => n.id), [inside.id]);
  inside.mode = MODE.BYPASS;
  assert.equal(g.serialize().nodes[0].mode, 4);
});
