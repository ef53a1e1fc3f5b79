// Binary websocket frames (big-endian uint32 event type, then payload). No DOM here.
export const BINARY = { PREVIEW_IMAGE: 1, TEXT: 3, PREVIEW_IMAGE_WITH_METADATA: 4 };

// Returns {kind: "preview", mime, image: Uint8Array, nodeId?, promptId?}
// or {kind: "text", nodeId, text} or null for frames the editor does not use.
export function parseBinaryFrame(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = view.getUint32(0);
  if (type === BINARY.PREVIEW_IMAGE) {
    const format = view.getUint32(4);
    return { kind: "preview", mime: format === 2 ? "image/png" : "image/jpeg", image: bytes.subarray(8) };
  }
  if (type === BINARY.PREVIEW_IMAGE_WITH_METADATA) {
    const length = view.getUint32(4);
    const meta = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length)));
    return {
      kind: "preview", mime: meta.image_type || "image/jpeg", image: bytes.subarray(8 + length),
      nodeId: meta.display_node_id ?? meta.node_id, promptId: meta.prompt_id,
    };
  }
  if (type === BINARY.TEXT) {
    const length = view.getUint32(4);
    const decoder = new TextDecoder();
    return { kind: "text", nodeId: decoder.decode(bytes.subarray(8, 8 + length)), text: decoder.decode(bytes.subarray(8 + length)) };
  }
  return null;
}
