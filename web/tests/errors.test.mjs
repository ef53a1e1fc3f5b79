import test from "node:test";
import assert from "node:assert/strict";
import { describeValidationError, describeRuntimeError } from "../js/errors.js";

test("a custom validation failure reads the node's reason first", () => {
  const d = describeValidationError({ type: "custom_validation_failed", message: "Custom validation failed for node",
    details: "width, height, video_frames - width must be a multiple of 8, got 100", extra_info: { input_name: "width" } });
  assert.equal(d.text, "width must be a multiple of 8, got 100");
  assert.equal(d.input, "width");
  assert.match(d.more, /^Custom validation failed for node: width, height/);
});

test("other validation errors name the input", () => {
  assert.equal(describeValidationError({ type: "required_input_missing", message: "Required input is missing",
    details: "images", extra_info: { input_name: "images" } }).text, "images: Required input is missing");
  assert.equal(describeValidationError({ type: "value_not_in_list", message: "Value not in list",
    details: "ckpt_name: 'x.safetensors' not in ['a']", extra_info: { input_name: "ckpt_name", received_value: "x.safetensors" } }).text,
  "ckpt_name: 'x.safetensors' is not one of the choices here");
});

test("a runtime error keeps its traceback apart", () => {
  const d = describeRuntimeError({ node_id: "5", node_type: "KSampler", exception_type: "RuntimeError",
    exception_message: "boom", traceback: ["a\n", "b\n"] });
  assert.deepEqual(d, { where: "KSampler #5", text: "RuntimeError: boom", traceback: "a\nb\n" });
  assert.equal(describeRuntimeError({ node_id: null, exception_type: "E", exception_message: "m" }).where, "The prompt");
});
