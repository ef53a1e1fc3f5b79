"""Embedded prompt/workflow in PNG, WEBP, MP4 and safetensors: read what other writers produce
(Pillow, PyAV/ffmpeg, safetensors), and check what we write against independent readers."""
import io
import json
import random
import struct
import zlib

import av
import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from safetensors.numpy import save as save_safetensors

from vidgraph.engine import metadata
from vidgraph.engine.metadata import MetadataError, read_embedded_metadata

PROMPT = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}}}
WORKFLOW = {"nodes": [{"id": 1, "type": "PrimitiveInt", "widgets_values": [5]}], "links": [], "version": 0.4,
            "extra": {"note": "ünïcødé ✓"}}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with(*chunks: bytes) -> bytes:
    base = io.BytesIO()
    Image.new("RGB", (2, 2)).save(base, "PNG")
    data = base.getvalue()
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + b"".join(chunks) + data[iend:]


def test_png_text_chunks_of_every_kind():
    workflow = json.dumps(WORKFLOW).encode()
    data = _png_with(
        _chunk(b"zTXt", b"prompt\0\0" + zlib.compress(json.dumps(PROMPT).encode())),
        _chunk(b"iTXt", b"workflow\0\x01\0en\0Workflow\0" + zlib.compress(workflow)),
        _chunk(b"tEXt", b"parameters\0steps: 20"))
    assert metadata.png_text(data)["parameters"] == "steps: 20"
    assert read_embedded_metadata(data) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_pillow_written_png_text_reads_back():
    info = PngImagePlugin.PngInfo()
    for key, text in metadata.png_text_items(PROMPT, {"workflow": WORKFLOW}):
        info.add_text(key, text)
    out = io.BytesIO()
    Image.new("RGB", (3, 3)).save(out, "PNG", pnginfo=info)
    assert read_embedded_metadata(out.getvalue()) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_animated_png_comf_chunks_written_through_pillow_read_back():
    info = PngImagePlugin.PngInfo()
    for kind, body in metadata.png_comf_chunks(PROMPT, {"workflow": WORKFLOW}):
        info.add(kind, body, after_idat=True)
    frames = [Image.new("RGB", (4, 4), (i * 80, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:], pnginfo=info, duration=100)
    assert b"comf" in out.getvalue()
    assert read_embedded_metadata(out.getvalue()) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_webp_exif_we_write_is_what_pillow_reads():
    exif = metadata.webp_exif(PROMPT, {"workflow": WORKFLOW, "extra": {"a": 1}})
    out = io.BytesIO()
    frames = [Image.new("RGB", (4, 4), (0, i * 80, 0)) for i in range(2)]
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], exif=exif, lossless=True)
    tags = Image.open(io.BytesIO(out.getvalue())).getexif()
    assert tags[0x0110] == "prompt:" + json.dumps(PROMPT)
    assert json.loads(tags[0x010F].split(":", 1)[1]) == WORKFLOW
    assert tags[0x010E] == 'extra:{"a": 1}'
    assert read_embedded_metadata(out.getvalue()) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_webp_exif_written_by_pillow_as_comfyui_does_reads_back():
    image = Image.new("RGB", (4, 4))
    exif = image.getexif()
    exif[0x0110] = "prompt:" + json.dumps(PROMPT)
    exif[0x010F] = "workflow:" + json.dumps(WORKFLOW)
    out = io.BytesIO()
    image.save(out, "WEBP", exif=exif)
    assert read_embedded_metadata(out.getvalue()) == {"prompt": PROMPT, "workflow": WORKFLOW}


def _mp4(tags: dict, movflags: str | None) -> bytes:
    out = io.BytesIO()
    container = av.open(out, mode="w", format="mp4", options={"movflags": movflags} if movflags else {})
    container.metadata.update(tags)
    stream = container.add_stream("libx264", rate=6)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    for _ in range(2):
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return out.getvalue()


def test_mp4_metadata_tags_as_pyav_writes_them():
    data = _mp4(metadata.mp4_metadata(PROMPT, {"workflow": WORKFLOW}), "use_metadata_tags")
    assert read_embedded_metadata(data) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_mp4_without_metadata_tags_falls_back_to_a_json_comment():
    data = _mp4({"comment": json.dumps({"prompt": PROMPT, "workflow": WORKFLOW})}, None)
    assert metadata.mp4_tags(data)["comment"].startswith("{")
    assert read_embedded_metadata(data) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_safetensors_latent_metadata():
    data = save_safetensors({"latent_tensor": np.zeros((1, 4, 2, 2), np.float32)},
                            metadata={"prompt": json.dumps(PROMPT), "workflow": json.dumps(WORKFLOW)})
    assert read_embedded_metadata(data) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_file_without_metadata_gives_empty_dict(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (2, 2)).save(path)
    assert read_embedded_metadata(path) == {}


@pytest.mark.parametrize("data, expected", [
    (b"GIF89a....", "not a PNG, WEBP"),
    (metadata.PNG_SIGNATURE + struct.pack(">I", 1000) + b"tEXt" + b"short", "runs past the end"),
    (b"RIFF\x20\0\0\0WEBPEXIF\x40\0\0\0II*\0", "runs past the end"),
    (b"RIFF\x10\0\0\0WEBPEXIF\x04\0\0\0XX\0\0", "no TIFF header"),
    (b"\0\0\0\x08ftyp" + b"\0\0\0\x04moov", "bad size"),
    (struct.pack("<Q", 999) + b'{"a', "not a PNG, WEBP"),   # a length past the end: not safetensors
    (struct.pack("<Q", 4) + b'{"a}', "header is not JSON"),
    (_png_with(_chunk(b"zTXt", b"prompt\0\0not-zlib")), "zTXt chunk 'prompt' is corrupt"),
])
def test_corrupt_files_raise_metadata_error(data, expected):
    with pytest.raises(MetadataError, match=expected):
        read_embedded_metadata(data)


def test_a_video_file_is_read_only_as_far_as_its_moov_box(tmp_path):
    data = _mp4(metadata.mp4_metadata(PROMPT, {"workflow": WORKFLOW}), "use_metadata_tags")
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    part = metadata.metadata_bytes(path)
    assert part[4:8] == b"moov" and len(part) < len(data)
    assert read_embedded_metadata(path) == {"prompt": PROMPT, "workflow": WORKFLOW}
    path.write_bytes(b"\0\0\0\x08ftyp" + b"\0\0\0\x04mdat")
    with pytest.raises(MetadataError, match="bad size 4"):
        metadata.metadata_bytes(path)


# Random damage to real files: every failure must be a MetadataError naming the problem.

def _samples() -> list[bytes]:
    prompt = {"1": {"class_type": "PreviewAny", "inputs": {}}}
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(prompt))
    info.add_itxt("workflow", json.dumps({"nodes": []}), zip=True)
    png, webp = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG", pnginfo=info)
    Image.new("RGB", (4, 4)).save(webp, "WEBP", exif=metadata.webp_exif(prompt, {"workflow": {"nodes": []}}))
    return [png.getvalue(), webp.getvalue(), _mp4(metadata.mp4_metadata(prompt), "use_metadata_tags")]


def test_damaged_media_files_raise_only_metadata_errors():
    rng = random.Random(7)
    for sample in _samples():
        for _ in range(300):
            data = bytearray(sample)
            for _ in range(rng.randint(1, 4)):
                if not data:
                    break
                i = rng.randrange(len(data))
                if rng.random() < 0.5:
                    data[i] = rng.randrange(256)
                else:
                    del data[i:]
            try:
                read_embedded_metadata(bytes(data))
            except MetadataError as exc:
                assert str(exc)


def test_a_video_file_without_a_moov_box_has_no_metadata(tmp_path):
    """A well-formed MP4 whose moov box is missing (a recording cut short) carries nothing: {}, not
    'broken structure'; the same as the bytes read whole."""
    data = struct.pack(">I4s", 20, b"ftyp") + b"isom" + b"\0" * 8 + struct.pack(">I4s", 16, b"mdat") + b"\0" * 8
    path = tmp_path / "cut.mp4"
    path.write_bytes(data)
    assert read_embedded_metadata(data) == {}
    assert read_embedded_metadata(path) == {}


def test_a_safetensors_file_is_read_only_as_far_as_its_header(tmp_path):
    """A .latent, or a multi-gigabyte checkpoint passed by mistake, is not read whole."""
    path = tmp_path / "big.latent"
    path.write_bytes(save_safetensors({"latent_tensor": np.zeros((64, 1024), np.float32)},
                                      metadata={"prompt": json.dumps(PROMPT)}))
    part = metadata.metadata_bytes(path)
    assert len(part) < 1024 and metadata.sniff_format(part) == "safetensors"
    assert read_embedded_metadata(path) == {"prompt": PROMPT}
