// Reads the workflow/prompt JSON that vidgraph and ComfyUI embed in saved files:
// PNG tEXt/iTXt/"comf" chunks, WEBP EXIF "key:json" strings, MP4 "mdta" metadata.
// Works on Uint8Array, no DOM, so it runs under node --test too.

const latin1 = (bytes) => {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return s;
};
const utf8 = (bytes) => new TextDecoder().decode(bytes);
const ascii4 = (bytes, at) => String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export function sniffFormat(bytes) {
  if (bytes.length >= 8 && bytes[0] === 0x89 && ascii4(bytes, 1).startsWith("PNG")) return "png";
  if (bytes.length >= 12 && ascii4(bytes, 0) === "RIFF" && ascii4(bytes, 8) === "WEBP") return "webp";
  if (bytes.length >= 12 && ascii4(bytes, 4) === "ftyp") return "mp4";
  return null;
}

export async function readPngText(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const found = {};
  let at = 8;
  while (at + 8 <= bytes.length) {
    const length = view.getUint32(at);
    const type = ascii4(bytes, at + 4);
    const data = bytes.subarray(at + 8, at + 8 + length);
    const nul = data.indexOf(0);
    if (nul > 0) {
      const key = latin1(data.subarray(0, nul));
      if (type === "tEXt") found[key] = latin1(data.subarray(nul + 1));
      else if (type === "comf") found[key] = utf8(data.subarray(nul + 1));
      else if (type === "iTXt") {
        const compressed = data[nul + 1] === 1;
        const langEnd = data.indexOf(0, nul + 3);
        const transEnd = data.indexOf(0, langEnd + 1);
        const text = data.subarray(transEnd + 1);
        found[key] = utf8(compressed ? await inflate(text) : text);
      }
    }
    if (type === "IEND") break;
    at += 12 + length;
  }
  return found;
}

// Calls fn(type, start, end) for each top-level RIFF chunk of a WEBP; fn returning true stops.
function webpChunks(bytes, fn) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 12;
  while (at + 8 <= bytes.length) {
    const size = view.getUint32(at + 4, true);
    if (fn(ascii4(bytes, at), at + 8, Math.min(bytes.length, at + 8 + size))) return;
    at += 8 + size + (size & 1);
  }
}

export function readWebpExif(bytes) {
  let found = {};
  webpChunks(bytes, (type, start, end) => {
    if (type !== "EXIF") return false;
    found = readExifStrings(bytes.subarray(start, end));
    return true;
  });
  return found;
}

// ComfyUI stores "workflow:{...}" and "prompt:{...}" as ASCII values of IFD0 tags.
export function readExifStrings(exif) {
  let tiff = exif;
  if (latin1(tiff.subarray(0, 6)) === "Exif\0\0") tiff = tiff.subarray(6);
  if (tiff.length < 8) return {};
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const little = tiff[0] === 0x49;
  const u16 = (o) => view.getUint16(o, little);
  const u32 = (o) => view.getUint32(o, little);
  const found = {};
  let ifd = u32(4);
  const visited = new Set();
  while (ifd && ifd + 2 <= tiff.length && !visited.has(ifd)) {
    visited.add(ifd);
    const count = u16(ifd);
    for (let i = 0; i < count; i++) {
      const entry = ifd + 2 + i * 12;
      if (entry + 12 > tiff.length) break;
      const type = u16(entry + 2);
      const n = u32(entry + 4);
      if (type !== 2 && type !== 7) continue;
      const start = n <= 4 ? entry + 8 : u32(entry + 8);
      let text = utf8(tiff.subarray(start, start + n));
      text = text.replace(/\0+$/, "");
      const colon = text.indexOf(":");
      if (colon > 0) found[text.slice(0, colon)] = text.slice(colon + 1);
    }
    ifd = u32(ifd + 2 + count * 12);
  }
  return found;
}

// MP4/MOV written with movflags=use_metadata_tags: moov/udta?/meta/{keys, ilst}.
// A walker over ISO-BMFF boxes: boxes(start, end, fn) calls fn(type, payloadStart, boxEnd).
function mp4Walker(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const boxes = (start, end, fn) => {
    let at = start;
    while (at + 8 <= end) {
      let size = view.getUint32(at);
      const type = ascii4(bytes, at + 4);
      let header = 8;
      if (size === 1) { size = Number(view.getBigUint64(at + 8)); header = 16; }
      else if (size === 0) size = end - at;
      if (size < header || at + size > end) break;
      fn(type, at + header, at + size);
      at += size;
    }
  };
  return { view, boxes };
}

export function readMp4Tags(bytes) {
  const { view, boxes } = mp4Walker(bytes);
  const found = {};
  const readMeta = (start, end) => {
    // "meta" is a full box in ISO files but not always in QuickTime ones.
    if (ascii4(bytes, start + 4) !== "hdlr") start += 4;
    let keys = [];
    boxes(start, end, (type, s, e) => {
      if (type === "keys") {
        keys = [];
        let at = s + 8;
        for (let i = 0; i < view.getUint32(s + 4) && at + 8 <= e; i++) {
          const size = view.getUint32(at);
          keys.push(utf8(bytes.subarray(at + 8, at + size)));
          at += size;
        }
      } else if (type === "ilst") {
        boxes(s, e, (_item, is, ie) => {
          const index = view.getUint32(is - 4);
          boxes(is, ie, (inner, ds, de) => {
            if (inner === "data" && keys[index - 1] !== undefined) found[keys[index - 1]] = utf8(bytes.subarray(ds + 8, de));
          });
        });
      }
    });
  };
  const walk = (start, end) => boxes(start, end, (type, s, e) => {
    if (type === "moov" || type === "udta") walk(s, e);
    else if (type === "meta") readMeta(s, e);
  });
  walk(0, bytes.length);
  return found;
}

// Frame count and timing of an animation, for a player that steps frame by frame:
// {frames, fps} from an MP4's video track (mdhd timescale, stts deltas) or an animated WEBP's
// ANMF chunks (24-bit little-endian durations in ms); null when the file says neither.
export function readFrameTiming(bytes) {
  const format = sniffFormat(bytes);
  if (format === "webp") {
    const durations = [];
    webpChunks(bytes, (type, start) => {
      if (type === "ANMF") durations.push(bytes[start + 12] | (bytes[start + 13] << 8) | (bytes[start + 14] << 16));
      return false;
    });
    if (!durations.length) return { frames: 1, fps: null };
    const mean = durations.reduce((a, b) => a + b, 0) / durations.length;
    return { frames: durations.length, fps: mean > 0 ? Math.round((1000 / mean) * 1000) / 1000 : null };
  }
  if (format !== "mp4") return null;
  const { view, boxes } = mp4Walker(bytes);
  let result = null;
  const track = (start, end) => {
    let handler = null, timescale = null, frames = 0, ticks = 0;
    const visit = (s, e) => boxes(s, e, (type, ps, pe) => {
      if (["mdia", "minf", "stbl"].includes(type)) visit(ps, pe);
      else if (type === "hdlr") handler = ascii4(bytes, ps + 8);
      else if (type === "mdhd") timescale = view.getUint32(ps + (bytes[ps] === 1 ? 20 : 12));
      else if (type === "stts") {
        for (let i = 0, at = ps + 8; i < view.getUint32(ps + 4) && at + 8 <= pe; i++, at += 8) {
          frames += view.getUint32(at);
          ticks += view.getUint32(at) * view.getUint32(at + 4);
        }
      }
    });
    visit(start, end);
    if (handler === "vide" && !result && frames) {
      result = { frames, fps: timescale && ticks ? Math.round((frames * timescale / ticks) * 1000) / 1000 : null };
    }
  };
  boxes(0, bytes.length, (type, s, e) => { if (type === "moov") boxes(s, e, (t, ts, te) => { if (t === "trak") track(ts, te); }); });
  return result;
}

function parseJsonField(text) {
  if (typeof text !== "string") return null;
  try { return JSON.parse(text); } catch { return null; }
}

// {workflow, prompt} parsed from any supported file; either may be null.
export async function readEmbeddedWorkflow(bytes) {
  const format = sniffFormat(bytes);
  let fields = {};
  if (format === "png") fields = await readPngText(bytes);
  else if (format === "webp") fields = readWebpExif(bytes);
  else if (format === "mp4") fields = readMp4Tags(bytes);
  return { format, workflow: parseJsonField(fields.workflow), prompt: parseJsonField(fields.prompt) };
}
