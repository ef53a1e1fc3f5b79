import test from "node:test";
import assert from "node:assert/strict";
import { UndoStack } from "../js/undo.js";
import { Graph } from "../js/graph.js";
import { defs } from "./helpers.mjs";

test("undo/redo walk the recorded states; a new action clears redo", () => {
  const stack = new UndoStack();
  stack.reset("a");
  assert.equal(stack.record("a"), false, "an unchanged state is not a step");
  assert.equal(stack.record("b"), true);
  stack.record("c");
  assert.equal(stack.undo(), "b");
  assert.equal(stack.undo(), "a");
  assert.equal(stack.undo(), null);
  assert.equal(stack.redo(), "b");
  stack.record("d");
  assert.equal(stack.canRedo, false);
  assert.equal(stack.undo(), "b");
});

test("the stack is bounded", () => {
  const stack = new UndoStack(3);
  stack.reset("0");
  for (const s of ["1", "2", "3", "4", "5"]) stack.record(s);
  let steps = 0;
  while (stack.undo() !== null) steps++;
  assert.equal(steps, 3);
  assert.equal(stack.current, "2");
});

test("adding three nodes in one action is one undo step that removes all three", () => {
  const g = new Graph(defs());
  const stack = new UndoStack();
  stack.reset(JSON.stringify(g.serialize()));
  for (let i = 0; i < 3; i++) g.addNode("VAEDecode", [i * 10, 0]);
  stack.record(JSON.stringify(g.serialize()));
  g.load(JSON.parse(stack.undo()));
  assert.equal(g.nodes.size, 0);
  g.load(JSON.parse(stack.redo()));
  assert.equal(g.nodes.size, 3);
});
