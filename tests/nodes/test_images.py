"""LoadImage / SaveImage / PreviewImage with real files, and the image transform nodes."""
import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from vidgraph.engine.metadata import read_embedded_metadata
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.image_io import to_uint8
from vidgraph.nodes.images import (EmptyImage, ImageAddNoise, ImageBatch, ImageCrop, ImageFromBatch,
                                   ImageScale, ImageScaleBy, LoadImage, PreviewImage,
                                   RepeatImageBatch, SaveImage)

PROMPT = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}}}
WORKFLOW = {"nodes": [{"id": 1, "type": "LoadImage"}], "links": [], "version": 0.4}


def gradient(width=8, height=6):
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    return np.broadcast_to(np.concatenate([x.repeat(height, 0), y.repeat(width, 1),
                                           np.full((height, width, 1), 77, np.uint8)], -1), (height, width, 3)).copy()


def load(context, name):
    return LoadImage().load_image(name, context)


# -- LoadImage ----------------------------------------------------------------------------------------

def test_load_rgb_png_gives_exact_pixels_and_empty_mask(folders, context):
    pixels = gradient()
    Image.fromarray(pixels).save(folders.input_dir / "in.png")
    image, mask = load(context, "in.png")
    assert image.shape == (1, 6, 8, 3) and image.dtype == torch.float32
    assert torch.equal(image[0], torch.from_numpy(pixels.astype(np.float32) / 255.0))
    assert mask.shape == (1, 64, 64) and not mask.any()  # ComfyUI's stand-in mask


def test_alpha_becomes_one_minus_alpha_mask(folders, context):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    rgba[1, 1, 3] = 51
    Image.fromarray(rgba, "RGBA").save(folders.input_dir / "a.png")
    image, mask = load(context, "a.png")
    assert image.shape == (1, 4, 5, 3) and mask.shape == (1, 4, 5)
    assert mask[0, 0, 0] == 1.0 and mask[0, 2, 2] == 0.0
    assert mask[0, 1, 1] == pytest.approx(1 - 51 / 255)


def test_palette_transparency_becomes_mask(folders, context):
    picture = Image.new("P", (3, 2), 0)
    picture.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    picture.putpixel((1, 0), 1)
    picture.save(folders.input_dir / "p.png", transparency=1)
    _, mask = load(context, "p.png")
    assert mask.shape == (1, 2, 3) and mask[0, 0, 1] == 1.0 and mask.sum() == 1.0


def test_exif_orientation_is_applied(folders, context):
    picture = Image.fromarray(gradient(8, 6))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    picture.save(folders.input_dir / "rot.jpg", exif=exif, quality=95)
    image, _ = load(context, "rot.jpg")
    assert image.shape == (1, 8, 6, 3)  # width and height swapped


def test_multi_frame_image_loads_as_batch(folders, context):
    frames = [Image.new("RGB", (4, 4), (v, v, v)) for v in (0, 100, 200)]
    frames[0].save(folders.input_dir / "anim.png", save_all=True, append_images=frames[1:])
    image, mask = load(context, "anim.png")
    assert image.shape == (3, 4, 4, 3) and mask.shape == (3, 64, 64)
    assert [round(float(image[i].mean()) * 255) for i in range(3)] == [0, 100, 200]


def test_is_changed_is_the_file_hash(folders, context):
    path = folders.input_dir / "h.png"
    Image.new("RGB", (2, 2), (1, 2, 3)).save(path)
    first = LoadImage.IS_CHANGED("h.png", context)
    assert first == LoadImage.IS_CHANGED("h.png", context) and len(first) == 64
    Image.new("RGB", (2, 2), (9, 9, 9)).save(path)
    assert LoadImage.IS_CHANGED("h.png", context) != first


def test_input_types_lists_image_files_only(folders):
    Image.new("RGB", (2, 2)).save(folders.input_dir / "b.png")
    Image.new("RGB", (2, 2)).save(folders.input_dir / "a.jpg")
    (folders.input_dir / "notes.txt").write_text("x")
    (folders.input_dir / "sub").mkdir()
    files, options = LoadImage.INPUT_TYPES(folders)["required"]["image"]
    assert files == ["a.jpg", "b.png"] and options == {"image_upload": True}


def test_subfolder_and_annotated_names_resolve(folders, context):
    (folders.input_dir / "sub").mkdir()
    Image.new("RGB", (3, 2)).save(folders.input_dir / "sub" / "s.png")
    Image.new("RGB", (5, 2)).save(folders.output_dir / "o.png")
    assert load(context, "sub/s.png")[0].shape == (1, 2, 3, 3)
    assert load(context, "o.png [output]")[0].shape == (1, 2, 5, 3)


# -- LoadImage: bad input -----------------------------------------------------------------------------

def expect_error(context, name, *fragments):
    with pytest.raises(NodeInputError) as info:
        load(context, name)
    message = str(info.value)
    assert message.startswith("LoadImage: input 'image':"), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(context):
    expect_error(context, "nope.png", "not found")
    assert "not found" in LoadImage.VALIDATE_INPUTS("nope.png", context)


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "..\\x.png", "%2e%2e/x.png", "a\x00.png"])
def test_unsafe_names_are_refused(folders, context, name):
    (folders.base_dir / "secret.png").write_bytes(b"")
    expect_error(context, name, "unsafe file name")
    result = LoadImage.VALIDATE_INPUTS(name, context)
    assert isinstance(result, str) and "LoadImage: input 'image'" in result


def test_symlink_out_of_input_is_refused(folders, context, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "x.png"
    Image.new("RGB", (2, 2)).save(outside)
    os.symlink(outside, folders.input_dir / "link.png")
    expect_error(context, "link.png", "unsafe file name")
    assert LoadImage.INPUT_TYPES(folders)["required"]["image"][0] == []


def test_corrupt_image(folders, context):
    (folders.input_dir / "junk.png").write_bytes(b"<html>not an image</html>" * 10)
    expect_error(context, "junk.png", "not a readable image")


def test_truncated_image(folders, context):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buffer, "PNG")
    (folders.input_dir / "cut.png").write_bytes(buffer.getvalue()[:300])
    expect_error(context, "cut.png", "corrupt")


def test_zero_pixel_image(header_only_png, folders, context):
    (folders.input_dir / "empty.png").write_bytes(header_only_png(0, 10))
    message = expect_error(context, "empty.png")
    assert "no pixels (0 x 10)" in message


def forbid_decoding(monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))


@pytest.mark.parametrize("pillow_limit", [True, False])
def test_pixel_flood_rejected_from_header(header_only_png, folders, context, monkeypatch, pillow_limit):
    # 30,000 x 30,000: a few dozen bytes on disk, 2.7 GB if decoded. No pixel may be decoded,
    # whether or not Pillow's own bomb check is switched on.
    (folders.input_dir / "flood.png").write_bytes(header_only_png(30000, 30000))
    forbid_decoding(monkeypatch)
    if not pillow_limit:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    expect_error(context, "flood.png", "30000 x 30000" if not pillow_limit else "too large")


def test_over_side_limit_rejected_from_header(header_only_png, folders, context, monkeypatch):
    # Few pixels in all (Pillow's own bomb check passes) but wider than MAX_RESOLUTION.
    (folders.input_dir / "wide.png").write_bytes(header_only_png(20000, 1))
    forbid_decoding(monkeypatch)
    expect_error(context, "wide.png", "20000 x 1 pixels", "16384")


def test_animation_frame_flood_rejected_from_header(folders, make_context, monkeypatch):
    frames = [Image.new("RGB", (8, 8), (v, 0, 0)) for v in range(0, 250, 10)]
    frames[0].save(folders.input_dir / "many.png", save_all=True, append_images=frames[1:])
    forbid_decoding(monkeypatch)
    expect_error(make_context(settings={"image_max_frames": 10}), "many.png", "25 frames")


def test_limits_come_from_settings(folders, make_context):
    Image.new("RGB", (40, 40)).save(folders.input_dir / "m.png")
    strict = make_context(settings={"image_max_pixels": 1000})
    expect_error(strict, "m.png", "40 x 40")


# -- SaveImage / PreviewImage -------------------------------------------------------------------------

def test_save_image_truncates_and_embeds_workflow(folders, context):
    images = torch.tensor([0.0, 0.5, 0.999, 1.0, -1.0, 2.0, 0.0039, 0.0041]).reshape(1, 1, 8, 1).repeat(2, 3, 1, 3)
    out = SaveImage().save_images(images, "svd/frame", PROMPT, {"workflow": WORKFLOW}, context)
    entries = out["ui"]["images"]
    assert entries == [{"filename": "frame_00001_.png", "subfolder": "svd", "type": "output"},
                       {"filename": "frame_00002_.png", "subfolder": "svd", "type": "output"}]
    path = folders.output_dir / "svd" / "frame_00001_.png"
    row = np.asarray(Image.open(path))[0, :, 0]
    assert row.tolist() == [0, 127, 254, 255, 0, 255, 0, 1]  # uint8(clip(255 x)): truncation
    assert read_embedded_metadata(path) == {"prompt": PROMPT, "workflow": WORKFLOW}
    assert to_uint8(images)[0, 0, :, 0].tolist() == row.tolist()


def test_save_image_disable_metadata(folders, make_context):
    ctx = make_context(settings={"disable_metadata": True})
    SaveImage().save_images(torch.zeros(1, 2, 2, 3), "plain", PROMPT, {"workflow": WORKFLOW}, ctx)
    assert read_embedded_metadata(folders.output_dir / "plain_00001_.png") == {}


def test_save_image_unsafe_prefix_names_node_and_input(folders, context):
    with pytest.raises(NodeInputError, match=r"^SaveImage: input 'filename_prefix':"):
        SaveImage().save_images(torch.zeros(1, 2, 2, 3), "../../evil", None, None, context)
    assert not list(folders.base_dir.glob("**/evil*"))


def test_save_image_rejects_non_image(context):
    with pytest.raises(NodeInputError, match=r"^SaveImage: input 'images':"):
        SaveImage().save_images(torch.zeros(2, 3), "x", None, None, context)


def test_preview_image_goes_to_temp(folders, context):
    out = PreviewImage().save_images(torch.rand(1, 3, 4, 3), prompt=PROMPT, context=context)
    (entry,) = out["ui"]["images"]
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    assert entry["filename"].startswith("ComfyUI_temp_") and entry["filename"].endswith("_00001_.png")
    assert (folders.temp_dir / entry["filename"]).is_file()
    assert not os.listdir(folders.output_dir)


# -- transforms ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
def test_image_scale_methods(method):
    image = torch.rand(2, 6, 8, 3)
    (out,) = ImageScale().upscale(image, method, 16, 12, "disabled")
    assert out.shape == (2, 12, 16, 3)
    assert abs(float(out.mean()) - float(image.mean())) < 0.05


def test_image_scale_keeps_aspect_when_one_side_is_zero():
    image = torch.rand(1, 10, 20, 3)
    assert ImageScale().upscale(image, "bilinear", 0, 5, "disabled")[0].shape == (1, 5, 10, 3)
    assert ImageScale().upscale(image, "bilinear", 40, 0, "disabled")[0].shape == (1, 20, 40, 3)
    assert ImageScale().upscale(image, "bilinear", 0, 0, "disabled")[0] is image


def test_image_scale_center_crop():
    image = torch.zeros(1, 4, 8, 3)
    image[:, :, 2:6] = 1.0  # a bright middle square, dark sides
    (out,) = ImageScale().upscale(image, "nearest-exact", 4, 4, "center")
    assert out.shape == (1, 4, 4, 3) and torch.all(out == 1.0)


def test_image_scale_by():
    (out,) = ImageScaleBy().upscale(torch.rand(1, 10, 20, 3), "area", 0.5)
    assert out.shape == (1, 5, 10, 3)
    with pytest.raises(NodeInputError, match="^ImageScaleBy: input 'scale_by'"):
        ImageScaleBy().upscale(torch.rand(1, 10, 20, 3), "area", 0.01)


def test_image_crop_and_clamped_offset():
    image = torch.arange(5 * 6, dtype=torch.float32).reshape(1, 5, 6, 1).repeat(1, 1, 1, 3)
    (out,) = ImageCrop().crop(image, 2, 3, 1, 1)
    assert out.shape == (1, 3, 2, 3) and out[0, 0, 0, 0] == 7
    (edge,) = ImageCrop().crop(image, 4, 4, 100, 100)
    assert edge.shape == (1, 1, 1, 3) and edge[0, 0, 0, 0] == 29


def test_image_from_batch_clamps():
    image = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1).repeat(1, 2, 2, 3)
    (out,) = ImageFromBatch().frombatch(image, 2, 5)
    assert out[:, 0, 0, 0].tolist() == [2, 3]
    (last,) = ImageFromBatch().frombatch(image, 99, 1)
    assert last[:, 0, 0, 0].tolist() == [3]


def test_repeat_and_batch():
    a, b = torch.rand(1, 4, 4, 3), torch.rand(2, 8, 6, 3)
    assert RepeatImageBatch().repeat(a, 3)[0].shape == (3, 4, 4, 3)
    (out,) = ImageBatch().batch(a, b)
    assert out.shape == (3, 4, 4, 3) and torch.equal(out[0], a[0])
    with pytest.raises(NodeInputError, match="^ImageBatch: input 'image2'"):
        ImageBatch().batch(a, torch.rand(1, 4, 4, 4))


def test_empty_image_color():
    (out,) = EmptyImage().generate(5, 3, 2, 0xFF8000)
    assert out.shape == (2, 3, 5, 3)
    assert out[1, 2, 4].tolist() == pytest.approx([1.0, 128 / 255, 0.0])


def test_image_add_noise_matches_global_seed_semantics():
    image = torch.full((1, 64, 64, 3), 0.5)
    (out,) = ImageAddNoise().repeat(image, 5, 0.3)
    after_node = torch.randn([1, 64, 64, 3])
    torch.manual_seed(5)
    noise = torch.randn([1, 64, 64, 3])
    second = torch.randn([1, 64, 64, 3])
    assert torch.equal(out, torch.clamp(image + 0.3 * noise, 0, 1))
    # The node leaves torch's global generator right after its draw; the parity case needs it.
    assert torch.equal(after_node, second)


def test_image_add_noise_strength_zero_is_identity():
    image = torch.rand(1, 8, 8, 3)
    assert torch.equal(ImageAddNoise().repeat(image, 5, 0.0)[0], image)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_damaged_files_give_node_errors_only(folders, context, fmt):
    buffer = io.BytesIO()
    Image.fromarray(gradient(16, 12)).save(buffer, fmt)
    original = buffer.getvalue()
    rng = np.random.default_rng(1234)
    for trial in range(12):
        data = bytearray(original)
        for position in rng.integers(0, len(data), 4):
            data[position] = int(rng.integers(0, 256))
        if trial % 3 == 0:
            data = data[: len(data) // 2]
        (folders.input_dir / f"bad{trial}.img").write_bytes(bytes(data))
        try:
            image, _ = load(context, f"bad{trial}.img")
        except NodeInputError as e:
            assert str(e).startswith("LoadImage: input 'image':")
        else:
            assert image.ndim == 4 and image.shape[-1] == 3


@pytest.mark.parametrize("node, call, input_name", [
    ("EmptyImage", lambda: EmptyImage().generate(1024, 1024, 16), "batch_size"),
    ("RepeatImageBatch", lambda: RepeatImageBatch().repeat(torch.zeros(1, 256, 256, 3), 64), "amount"),
    ("ImageScale", lambda: ImageScale().upscale(torch.zeros(4, 8, 8, 3), "bilinear", 2048, 2048, "disabled"), "width"),
    ("ImageScaleBy", lambda: ImageScaleBy().upscale(torch.zeros(16, 64, 64, 3), "bilinear", 8.0), "scale_by"),
])
def test_an_output_larger_than_the_free_memory_is_refused_before_allocating(monkeypatch, node, call, input_name):
    """Asking for more than the machine has must be an error naming the input, not a process the
    kernel kills (or a raw allocator error)."""
    from vidgraph.nodes import model_management
    monkeypatch.setattr(model_management, "available_memory", lambda device: 32 << 20)
    with pytest.raises(NodeInputError) as caught:
        call()
    assert str(caught.value).startswith(f"{node}: input '{input_name}': ")
    assert "memory" in str(caught.value)
