import test from "node:test";
import assert from "node:assert/strict";
import { readEmbeddedWorkflow, sniffFormat, readExifStrings, readFrameTiming } from "../js/metadata.js";
import { fixture, fixtureJson } from "./helpers.mjs";

const expected = { workflow: fixtureJson("svd_workflow.json"), prompt: fixtureJson("svd_prompt.json") };

for (const [file, format] of [["embedded_text.png", "png"], ["embedded_itxt.png", "png"], ["embedded.webp", "webp"], ["embedded.mp4", "mp4"]]) {
  test(`workflow and prompt come back out of ${file}`, async () => {
    const bytes = new Uint8Array(fixture(file));
    assert.equal(sniffFormat(bytes), format);
    const found = await readEmbeddedWorkflow(bytes);
    assert.deepEqual(found.workflow, expected.workflow);
    assert.deepEqual(found.prompt, expected.prompt);
  });
}

test("a file without metadata gives nulls, not an exception", async () => {
  const png = new Uint8Array(fixture("embedded_text.png"));
  const bare = png.slice(0, 8 + 25); // signature + IHDR only
  const found = await readEmbeddedWorkflow(bare);
  assert.deepEqual([found.workflow, found.prompt], [null, null]);
  assert.deepEqual(await readEmbeddedWorkflow(new Uint8Array([1, 2, 3])), { format: null, workflow: null, prompt: null });
});

test("big-endian EXIF with the Exif\\0\\0 prefix is read", () => {
  const text = new TextEncoder().encode("workflow:{\"a\":1}\0");
  const tiff = new Uint8Array(8 + 2 + 12 + 4 + text.length);
  const view = new DataView(tiff.buffer);
  tiff.set([0x4d, 0x4d]); view.setUint16(2, 42); view.setUint32(4, 8);
  view.setUint16(8, 1); view.setUint16(10, 0x010f); view.setUint16(12, 2); view.setUint32(14, text.length); view.setUint32(18, 26);
  tiff.set(text, 26);
  const exif = new Uint8Array([...new TextEncoder().encode("Exif\0\0"), ...tiff]);
  assert.deepEqual(readExifStrings(exif), { workflow: "{\"a\":1}" });
});

test("frame count and rate of MP4 and animated WEBP files, for the player", () => {
  assert.deepEqual(readFrameTiming(new Uint8Array(fixture("embedded.mp4"))), { frames: 3, fps: 6 });
  assert.deepEqual(readFrameTiming(new Uint8Array(fixture("embedded.webp"))), { frames: 3, fps: 10 });
  assert.equal(readFrameTiming(new Uint8Array(fixture("embedded_text.png"))), null);
});
