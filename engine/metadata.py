"""Workflow metadata embedded in output files: reading it back, and the byte layouts for writing it.

ComfyUI stores the API prompt ("prompt") and the editor graph ("workflow") in what it saves, so
a result dragged back into the editor reproduces it. The layouts (ComfyUI's):

- PNG: one text chunk per key (tEXt; iTXt and zTXt read too), value the JSON text; animated PNGs
  use a private ``comf`` chunk holding ``key\\0json``.
- WEBP: EXIF in the RIFF ``EXIF`` chunk; IFD0 ASCII tags hold ``"key:json"``, prompt at 0x0110
  (Model), workflow at 0x010F (Make), further keys at 0x010E, 0x010D, ... downwards.
- MP4/MOV: container tags "prompt" and "workflow", as ffmpeg writes them with
  ``movflags=use_metadata_tags`` (``moov/udta/meta`` with an ``mdta`` handler, a ``keys`` box and an
  ``ilst``). Plain iTunes/QuickTime tags (``©cmt`` and friends) are read too, so a comment holding
  ``{"prompt": ..., "workflow": ...}`` also works.
- ``.latent`` / safetensors: the header's ``__metadata__`` strings.

Everything here is pure bytes work (no PIL, no PyAV) so the engine stays free of media libraries.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping

WORKFLOW_KEYS = ("prompt", "workflow")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WEBP_EXIF_FIRST_TAG = 0x0110  # prompt; each further key takes the tag below the previous one
ASCII = 2


class MetadataError(ValueError):
    """A file that claims a container format but whose structure is broken."""


def sniff_format(data: bytes) -> str | None:
    """"png" | "webp" | "mp4" | "safetensors" | None, from the first bytes."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if len(data) >= 10 and data[8:10] == b"{\"" and 8 + struct.unpack("<Q", data[:8])[0] <= len(data):
        return "safetensors"
    return None


def read_embedded_metadata(source: str | Path | bytes) -> dict[str, Any]:
    """{"prompt": ..., "workflow": ...} from a PNG, WEBP, MP4/MOV or safetensors file.

    Values are parsed JSON where they parse, else the raw string; keys absent from the file are
    absent from the result (so an image without metadata gives {}).
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else metadata_bytes(Path(source))
    kind = sniff_format(data)
    if kind is None:
        raise MetadataError("not a PNG, WEBP, MP4/MOV or safetensors file: cannot read embedded metadata")
    reader = {"png": png_text, "webp": webp_exif_text, "mp4": mp4_tags, "safetensors": safetensors_metadata}[kind]
    try:
        raw = reader(data)
    except (struct.error, IndexError) as exc:  # a field cut short somewhere the checks did not foresee
        raise MetadataError(f"the {kind.upper()} file's structure is broken: {exc}") from None
    if kind == "mp4":
        raw = _unpack_comment(raw)
    return {key: _maybe_json(value) for key, value in raw.items() if key in WORKFLOW_KEYS}


def metadata_bytes(path: Path) -> bytes:
    """The part of a file that can hold the metadata: all of it, except for MP4/MOV, where only
    the ``moov`` box is read, and safetensors, where only the header is (the data around them
    can be gigabytes)."""
    with open(path, "rb") as f:
        head = f.read(16)
        end = f.seek(0, 2)
        f.seek(len(head))
        if head[8:10] == b'{"':  # safetensors: the header's length (8 bytes), then the header
            header_end = 8 + struct.unpack("<Q", head[:8])[0]  # as text, 8 bytes read as ~1e18
            if len(head) <= header_end <= end:
                return head + f.read(header_end - len(head))
        if sniff_format(head) != "mp4":
            return head + f.read()
        pos = 0
        while pos + 8 <= end:
            f.seek(pos)
            # boxes of a cut-short file may overrun its end: look for moov among those there are
            kind, _header, size = mp4_box_header(f.read(16), pos, end, must_fit=False)
            if kind == b"moov":
                f.seek(pos)
                return f.read(size)
            pos += size
        return _EMPTY_MP4  # no moov box: nothing to read


_EMPTY_MP4 = struct.pack(">I4s", 8, b"free")  # an MP4 of one empty box: no tags


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


# ---------------------------------------------------------------------------------------- PNG

def png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(chunk type, chunk data) for every chunk; CRCs are not checked (readers must be lenient)."""
    if not data.startswith(PNG_SIGNATURE):
        raise MetadataError("not a PNG file")
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length
        if end + 4 > len(data):
            raise MetadataError(f"PNG chunk {kind!r} at byte {pos} runs past the end of the file")
        yield kind, data[pos + 8:end]
        if kind == b"IEND":
            return
        pos = end + 4


def png_text(data: bytes) -> dict[str, str]:
    """All text chunks (tEXt, zTXt, iTXt) and ComfyUI's ``comf`` chunks as {keyword: text}."""
    texts: dict[str, str] = {}
    for kind, body in png_chunks(data):
        keyword, sep, rest = body.partition(b"\0")
        if not sep:
            continue
        key = keyword.decode("latin-1")
        try:
            if kind == b"tEXt":
                texts[key] = rest.decode("latin-1")
            elif kind == b"comf":
                texts[key] = rest.decode("utf-8")
            elif kind == b"zTXt":
                texts[key] = zlib.decompress(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                compressed, _method = rest[0], rest[1]
                _language, _, rest = rest[2:].partition(b"\0")
                _translated, _, text = rest.partition(b"\0")
                texts[key] = (zlib.decompress(text) if compressed else text).decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError) as exc:
            raise MetadataError(f"PNG {kind.decode('latin-1')} chunk {key!r} is corrupt: {exc}") from None
    return texts


def png_text_items(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(keyword, text) pairs in ComfyUI's order, for PIL's PngInfo.add_text or a ``comf`` chunk."""
    return list(metadata_items(prompt, extra_pnginfo).items())


def png_comf_chunks(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> list[tuple[bytes, bytes]]:
    """(b"comf", b"key\\0json") chunks as ComfyUI puts them in animated PNGs (PIL: PngInfo.add)."""
    return [(b"comf", key.encode("latin-1") + b"\0" + text.encode("utf-8"))
            for key, text in metadata_items(prompt, extra_pnginfo).items()]


def metadata_items(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> dict[str, str]:
    """{"prompt": json, <each extra_pnginfo key>: json}: what every format embeds, in order."""
    items: dict[str, str] = {}
    if prompt is not None:
        items["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        items[str(key)] = json.dumps(value)
    return items


# --------------------------------------------------------------------------------------- WEBP

def riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise MetadataError("not a WEBP file")
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[pos:pos + 8])
        if pos + 8 + length > len(data):
            raise MetadataError(f"WEBP chunk {kind!r} at byte {pos} runs past the end of the file")
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 8 + length + (length & 1)  # chunks are padded to even sizes


def webp_exif_text(data: bytes) -> dict[str, str]:
    """The ``key:value`` strings of the EXIF IFD0 ASCII tags, as {key: value}."""
    texts: dict[str, str] = {}
    for kind, body in riff_chunks(data):
        if kind == b"EXIF":
            for value in exif_ascii_values(body):
                key, sep, rest = value.partition(":")
                if sep and key.isidentifier():
                    texts.setdefault(key, rest)
    return texts


def exif_ascii_values(exif: bytes) -> list[str]:
    """The string values of IFD0 in a TIFF/EXIF block (with or without the ``Exif\\0\\0`` prefix)."""
    if exif.startswith(b"Exif\0\0"):
        exif = exif[6:]
    order = {b"II": "<", b"MM": ">"}.get(exif[:2])
    if order is None or len(exif) < 8:
        raise MetadataError("EXIF block has no TIFF header")
    (ifd,) = struct.unpack(order + "I", exif[4:8])
    if ifd + 2 > len(exif):
        raise MetadataError("EXIF IFD0 offset points past the block")
    (count,) = struct.unpack(order + "H", exif[ifd:ifd + 2])
    values = []
    for i in range(count):
        entry = exif[ifd + 2 + 12 * i:ifd + 14 + 12 * i]
        if len(entry) < 12:
            raise MetadataError("EXIF IFD0 is cut short")
        _tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        if kind not in (1, ASCII, 7):  # BYTE, ASCII, UNDEFINED can all carry text
            continue
        if n <= 4:
            raw = entry[8:8 + n]
        else:
            (offset,) = struct.unpack(order + "I", entry[8:12])
            raw = exif[offset:offset + n]
            if len(raw) < n:
                raise MetadataError("EXIF value runs past the block")
        values.append(raw.rstrip(b"\0").decode("utf-8", errors="replace"))
    return values


def webp_exif(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> bytes:
    """The EXIF block ComfyUI's SaveAnimatedWEBP writes (Pillow: ``save(..., exif=webp_exif(...))``).

    Little-endian TIFF, one ASCII tag per item, tags counting down from 0x0110; returned with
    the ``Exif\\0\\0`` prefix, which Pillow writes as given and every reader here accepts.
    """
    items = metadata_items(prompt, extra_pnginfo)
    entries = sorted(((WEBP_EXIF_FIRST_TAG - i, f"{key}:{text}".encode("utf-8") + b"\0")
                      for i, (key, text) in enumerate(items.items())), key=lambda e: e[0])  # IFDs are tag-sorted
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd, blob = [struct.pack("<H", len(entries))], []
    for tag, value in entries:
        if len(value) <= 4:
            ifd.append(struct.pack("<HHI", tag, ASCII, len(value)) + value.ljust(4, b"\0"))
        else:
            ifd.append(struct.pack("<HHII", tag, ASCII, len(value), data_offset))
            blob.append(value)
            data_offset += len(value)
    ifd.append(struct.pack("<I", 0))  # no next IFD
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + b"".join(ifd) + b"".join(blob)


# ---------------------------------------------------------------------------------------- MP4

def mp4_box_header(head: bytes, pos: int, end: int, must_fit: bool = True) -> tuple[bytes, int, int]:
    """(type, header length, box size) of the box at byte `pos` of a file or box ending at `end`,
    from its first 8 or 16 bytes `head`; unless told otherwise, a box must fit in what holds it."""
    size, kind = struct.unpack(">I4s", head[:8])
    header = 8
    if size == 1:
        if pos + 16 > end or len(head) < 16:
            raise MetadataError(f"MP4 box {kind!r} at byte {pos} is cut short")
        (size,) = struct.unpack(">Q", head[8:16])
        header = 16
    elif size == 0:
        size = end - pos  # runs to the end of the file
    if size < header or (must_fit and pos + size > end):
        raise MetadataError(f"MP4 box {kind!r} at byte {pos} has a bad size {size}")
    return kind, header, size


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        kind, header, size = mp4_box_header(data[pos:pos + 16], pos, end)
        yield kind, pos + header, pos + size
        pos += size


def mp4_tags(data: bytes) -> dict[str, str]:
    """Container-level text tags: mdta keys (ffmpeg use_metadata_tags), iTunes ilst, QuickTime udta."""
    tags: dict[str, str] = {}
    for kind, start, end in mp4_boxes(data):
        if kind == b"moov":
            _collect_moov(data, start, end, tags)
    return tags


def _collect_moov(data: bytes, start: int, end: int, tags: dict[str, str]) -> None:
    for kind, s, e in mp4_boxes(data, start, end):
        if kind == b"udta":
            _collect_udta(data, s, e, tags)
        elif kind == b"meta":
            _collect_meta(data, s, e, tags)


def _collect_udta(data: bytes, start: int, end: int, tags: dict[str, str]) -> None:
    for kind, s, e in mp4_boxes(data, start, end):
        if kind == b"meta":
            _collect_meta(data, s, e, tags)
        elif kind[:1] == b"\xa9" and e - s >= 4:
            # QuickTime user-data text: 16-bit length, 16-bit language, then the text
            (length,) = struct.unpack(">H", data[s:s + 2])
            tags.setdefault(_itunes_name(kind), data[s + 4:s + 4 + length].decode("utf-8", errors="replace"))


def _collect_meta(data: bytes, start: int, end: int, tags: dict[str, str]) -> None:
    # ISO 'meta' is a full box (4 bytes version+flags); QuickTime's is not. Tell them apart by
    # whether a plausible child box header follows directly.
    if data[start + 4:start + 8] not in (b"hdlr", b"keys", b"ilst"):
        start += 4
    children = {kind: (s, e) for kind, s, e in mp4_boxes(data, start, end)}
    keys: list[str] = []
    if b"keys" in children:
        s, e = children[b"keys"]
        (count,) = struct.unpack(">I", data[s + 4:s + 8])
        pos = s + 8
        for _ in range(count):
            if pos + 8 > e:
                raise MetadataError("MP4 'keys' box is cut short")
            size, _namespace = struct.unpack(">I4s", data[pos:pos + 8])
            if size < 8:
                raise MetadataError(f"MP4 'keys' entry has a bad size {size}")
            keys.append(data[pos + 8:pos + size].decode("utf-8", errors="replace"))
            pos += size
    if b"ilst" not in children:
        return
    s, e = children[b"ilst"]
    for kind, item_start, item_end in mp4_boxes(data, s, e):
        value = _ilst_data(data, item_start, item_end)
        if value is None:
            continue
        index = struct.unpack(">I", kind)[0]
        if keys and 1 <= index <= len(keys):
            name = keys[index - 1]
        else:
            name = _itunes_name(kind)
        tags.setdefault(name, value)


def _ilst_data(data: bytes, start: int, end: int) -> str | None:
    for kind, s, e in mp4_boxes(data, start, end):
        if kind == b"data" and e - s >= 8:
            return data[s + 8:e].decode("utf-8", errors="replace")  # after type + locale
    return None


_ITUNES_NAMES = {b"\xa9cmt": "comment", b"\xa9nam": "title", b"\xa9des": "description", b"desc": "description"}


def _itunes_name(kind: bytes) -> str:
    return _ITUNES_NAMES.get(kind, kind.decode("latin-1"))


def _unpack_comment(tags: dict[str, str]) -> dict[str, str]:
    """Also accept a comment/description holding {"prompt": ..., "workflow": ...} as JSON."""
    for field in ("comment", "description"):
        if field in tags and not all(k in tags for k in WORKFLOW_KEYS):
            value = _maybe_json(tags[field])
            if isinstance(value, dict):
                for key in WORKFLOW_KEYS:
                    if key in value and key not in tags:
                        tags[key] = json.dumps(value[key])
    return tags


def mp4_metadata(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Container tags for PyAV (``container.metadata.update(...)``; open the output with
    ``options={"movflags": "use_metadata_tags"}`` so ffmpeg keeps keys it does not know)."""
    return metadata_items(prompt, extra_pnginfo)


# -------------------------------------------------------------------------------- safetensors

def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors header (ComfyUI's .latent files)."""
    if len(data) < 8:
        raise MetadataError("safetensors file is shorter than its header length")
    (length,) = struct.unpack("<Q", data[:8])
    if 8 + length > len(data):
        raise MetadataError("safetensors header runs past the end of the file")
    try:
        header = json.loads(data[8:8 + length])
    except ValueError as exc:
        raise MetadataError(f"safetensors header is not JSON: {exc}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): v for k, v in (meta or {}).items() if isinstance(v, str)}
