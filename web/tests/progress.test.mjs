import test from "node:test";
import assert from "node:assert/strict";
import { RunProgress, formatSeconds } from "../js/progress.js";

test("progress counts nodes done, cached ones aside, plus the running node's steps", () => {
  let t = 0;
  const p = new RunProgress({ total: 6, now: () => t });
  p.onCached(2);
  p.onNode("1", "Loader #1");
  p.onNode("5", "KSampler #5"); // node 1 done
  assert.equal(p.fraction, 1 / 4);
  p.onStep(1, 10); t = 2000;
  p.onStep(3, 10);
  assert.equal(p.secondsLeft, 7, "1 s per step, 7 steps to go");
  assert.equal(p.fraction, (1 + 0.3) / 4);
  assert.equal(p.describe(), "KSampler #5 · step 3/10 · about 7 s left · 33% of the workflow");
});

test("a prompt of unknown size shows the node's own fraction", () => {
  const p = new RunProgress();
  p.onNode("3", "VAE decode #3");
  p.onStep(2, 8);
  assert.equal(p.fraction, 0.25);
  assert.equal(p.secondsLeft, null, "no pace from one step");
  assert.equal(formatSeconds(125), "2 min 5 s");
});
