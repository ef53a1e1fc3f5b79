import test from "node:test";
import assert from "node:assert/strict";
import { typesCompatible, typeColour } from "../js/types.js";
import { clampNumber, nextControlledValue, parseInputSpec, searchDefs, describeNode } from "../js/nodedefs.js";
import { parseBinaryFrame } from "../js/protocol.js";
import { defs } from "./helpers.mjs";

test("type matching: exact, case-insensitive, wildcard, comma lists", () => {
  assert.ok(typesCompatible("IMAGE", "IMAGE"));
  assert.ok(typesCompatible("image", "IMAGE"));
  assert.ok(!typesCompatible("IMAGE", "LATENT"));
  assert.ok(typesCompatible("*", "LATENT"));
  assert.ok(typesCompatible("MODEL", "*"));
  assert.ok(typesCompatible("IMAGE", "MASK,IMAGE"));
  assert.ok(!typesCompatible("VAE", "MASK,IMAGE"));
  assert.notEqual(typeColour("IMAGE"), typeColour("LATENT"));
  assert.equal(typeColour("MY_PLUGIN_TYPE"), typeColour("my_plugin_type"));
});

test("number widgets honour min, max, step rounding and int-ness", () => {
  const width = parseInputSpec("width", ["INT", { default: 1024, min: 16, max: 16384, step: 8 }]);
  assert.equal(clampNumber(5, width), 16);
  assert.equal(clampNumber(99999, width), 16384);
  assert.equal(clampNumber(20.6, width), 24, "snapped to the step, as ComfyUI does");
  assert.equal(clampNumber(100, width), 104);
  assert.equal(clampNumber(7, parseInputSpec("n", ["INT", { min: 1, max: 100, step: 3 }])), 7, "counted from min: 1, 4, 7");
  const cfg = parseInputSpec("cfg", ["FLOAT", { default: 8, min: 0, max: 100, step: 0.1, round: 0.01 }]);
  assert.equal(clampNumber(2.5049, cfg), 2.5);
  assert.equal(clampNumber("abc", cfg), 8);
  const aug = parseInputSpec("a", ["FLOAT", { default: 0, min: 0, max: 10, step: 0.01 }]);
  assert.equal(clampNumber(0.123456, aug), 0.12, "round defaults to the step");
  const free = parseInputSpec("f", ["FLOAT", { default: 0, step: 0.01, round: false }]);
  assert.equal(clampNumber(0.123456, free), 0.123456);
  const seed = parseInputSpec("seed", ["INT", { default: 0, min: 0, max: 18446744073709551615 }]);
  assert.equal(clampNumber(1e30, seed), Number.MAX_SAFE_INTEGER);
});

test("control after generate: fixed, increment, decrement, randomize within range", () => {
  const seed = parseInputSpec("seed", ["INT", { default: 0, min: 0, max: 10 }]);
  assert.equal(nextControlledValue("fixed", 5, seed), 5);
  assert.equal(nextControlledValue("increment", 5, seed), 6);
  assert.equal(nextControlledValue("increment", 10, seed), 10);
  assert.equal(nextControlledValue("decrement", 0, seed), 0);
  assert.equal(nextControlledValue("randomize", 5, seed, () => 0.999), 10);
  assert.equal(nextControlledValue("randomize", 5, seed, () => 0), 0);
  const combo = parseInputSpec("s", [["a", "b", "c"]]);
  assert.equal(nextControlledValue("increment", "a", combo), "b");
});

test("combo specs in both spellings list their values", () => {
  const d = defs();
  const save = describeNode(d.SaveVideo);
  assert.deepEqual(save.widgets.find((w) => w.name === "format").spec.options.values, ["auto", "mp4"]);
  assert.equal(save.widgets.find((w) => w.name === "codec").value, "auto");
});

test("search ranks display-name prefixes first and filters by accepted slot type", () => {
  const d = defs();
  const hits = searchDefs(d, "ksam");
  assert.equal(hits[0].name, "KSampler");
  assert.ok(searchDefs(d, "video").map((x) => x.name).includes("SVD_img2vid_Conditioning"), "category matches");
  const takesLatent = searchDefs(d, "", (def) => Object.values(def.input.required).some((s) => s[0] === "LATENT"));
  assert.deepEqual(takesLatent.map((x) => x.name).sort(), ["KSampler", "VAEDecode"]);
  assert.deepEqual(searchDefs(d, "zzzz"), []);
});

test("binary preview frames: legacy type 1 and type 4 with metadata", () => {
  const image = [0xff, 0xd8, 0xff];
  const legacy = new Uint8Array([0, 0, 0, 1, 0, 0, 0, 2, ...image]);
  assert.deepEqual({ ...parseBinaryFrame(legacy.buffer), image: [...parseBinaryFrame(legacy.buffer).image] },
    { kind: "preview", mime: "image/png", image });
  const meta = new TextEncoder().encode(JSON.stringify({ node_id: "5", prompt_id: "p", image_type: "image/jpeg" }));
  const framed = new Uint8Array([0, 0, 0, 4, 0, 0, 0, meta.length, ...meta, ...image]);
  const parsed = parseBinaryFrame(framed.buffer);
  assert.equal(parsed.nodeId, "5");
  assert.equal(parsed.mime, "image/jpeg");
  assert.deepEqual([...parsed.image], image);
  assert.equal(parseBinaryFrame(new Uint8Array([0, 0, 0, 9, 0, 0, 0, 0]).buffer), null);
});

test("a dropped LATENT link ranks exact, common fits first and test-only nodes last", async () => {
  const { linkFitRank } = await import("../js/nodedefs.js");
  const { typesCompatible } = await import("../js/types.js");
  const def = (name, category, inputs) => ({ name, category, input: { required: inputs } });
  const rank = (d) => linkFitRank(d, "LATENT", true, typesCompatible);
  const decode = rank(def("VAEDecode", "latent", { samples: ["LATENT"], vae: ["VAE"] }));
  const sampler = rank(def("KSampler", "sampling", { model: ["MODEL"], latent_image: ["LATENT"] }));
  const batch = rank(def("LatentFromBatch", "latent/batch", { samples: ["LATENT"] }));
  const any = rank(def("PreviewAny", "utils", { source: ["*"] }));
  const testing = rank(def("SaveLatent", "_for_testing", { samples: ["LATENT"] }));
  assert.ok(decode < sampler && sampler < batch && batch < any && any < testing, [decode, sampler, batch, any, testing].join());
  assert.equal(rank(def("VAEEncode", "latent", { pixels: ["IMAGE"] })), null);
});
