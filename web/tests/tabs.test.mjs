import test from "node:test";
import assert from "node:assert/strict";
import { TabSet } from "../js/tabs.js";

test("tabs round-trip through JSON with their undo histories, results and prompt owners", () => {
  const set = new TabSet();
  const a = set.add({ name: "clip" });
  a.undo.reset("a0");
  a.undo.record("a1");
  a.saved = "a0";
  a.outputs.set(7, { images: [{ filename: "x.webp" }] });
  const b = set.add({ name: "clip" });
  assert.equal(b.name, "clip (2)", "names stay unique");
  b.undo.reset("b0");
  set.rememberPrompt("p1", a.id);
  const back = TabSet.fromJSON(JSON.parse(JSON.stringify(set.toJSON())));
  assert.deepEqual(back.tabs.map((t) => t.name), ["clip", "clip (2)"]);
  assert.equal(back.active.id, b.id);
  const a2 = back.get(a.id);
  assert.equal(a2.changed, true);
  assert.equal(a2.undo.undo(), "a0");
  assert.equal(a2.changed, false);
  assert.equal(a2.outputs.get(7).images[0].filename, "x.webp");
  assert.equal(back.tabForPrompt("p1"), a2);
  assert.equal(back.tabForPrompt("unknown"), back.active);
});

test("removing the last tab leaves an empty one; the stored undo is bounded", () => {
  const set = new TabSet();
  const only = set.add({ name: "x" });
  only.undo.reset("0");
  for (let i = 1; i < 50; i++) only.undo.record(String(i));
  assert.equal(set.toJSON(5).tabs[0].undo.past.length, 5);
  set.remove(only.id);
  assert.equal(set.tabs.length, 1);
  assert.notEqual(set.active.id, only.id);
  assert.equal(TabSet.fromJSON({ format: 99 }).tabs.length, 0, "an unknown format is not guessed at");
});
