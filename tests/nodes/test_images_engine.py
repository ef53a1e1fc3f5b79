"""Image and video nodes run through the engine's real registry, validation and executor."""
import av
import pytest
from PIL import Image

from vidgraph.engine.executor import Executor
from vidgraph.engine.metadata import read_embedded_metadata
from vidgraph.runtime import build_registry
from vidgraph.engine.validation import validate_prompt
from vidgraph.nodes.images import LoadImage

WORKFLOW = {"nodes": [], "links": [], "version": 0.4}


@pytest.fixture
def registry(folders):
    reg = build_registry(folders)
    return reg


def pipeline(image_name="in.png"):
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                    "width": 32, "height": 16, "crop": "center"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 3}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "run/frame"}},
        "5": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 6.0}},
        "6": {"class_type": "SaveVideo", "inputs": {"video": ["5", 0], "filename_prefix": "video/ComfyUI",
                                                   "format": "auto", "codec": "auto"}},
        "7": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["3", 0], "filename_prefix": "anim",
                                                          "fps": 6.0, "lossless": False, "quality": 80,
                                                          "method": "fastest"}},
    }


def test_image_in_video_out_through_the_executor(folders, registry):
    Image.new("RGB", (40, 30), (200, 40, 10)).save(folders.input_dir / "in.png")
    prompt = pipeline()
    result = Executor(registry, folders).run(prompt, extra_data={"extra_pnginfo": {"workflow": WORKFLOW}})
    assert result.status == "success", result.error
    assert result.outputs["4"]["images"][2] == {"filename": "frame_00003_.png", "subfolder": "run", "type": "output"}
    assert result.outputs["6"]["images"] == [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}]
    mp4 = folders.output_dir / "video" / "ComfyUI_00001_.mp4"
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == 3
        assert (stream.codec_context.width, stream.codec_context.height, stream.average_rate) == (32, 16, 6)
    for path in (mp4, folders.output_dir / "run" / "frame_00001_.png", folders.output_dir / "anim_00001_.webp"):
        assert read_embedded_metadata(path) == {"prompt": prompt, "workflow": WORKFLOW}, path


def test_unchanged_input_file_is_served_from_the_cache(folders, registry):
    executor = Executor(registry, folders)
    Image.new("RGB", (8, 8), (0, 0, 0)).save(folders.input_dir / "in.png")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
              "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "area",
                                                           "scale_by": 0.5}},
              "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    assert executor.run(prompt).status == "success"
    second = executor.run(prompt)
    assert {"1", "2"} <= set(second.cached) and "1" not in second.executed


@pytest.mark.parametrize("name", ["../x.png", "/etc/passwd", "..\\x.png", "%2e%2e%2fx.png", "a\x00.png"])
def test_unsafe_image_name_fails_validation(registry, name):
    v = validate_prompt(registry, pipeline(name))
    assert not v.ok
    body = v.to_json()
    assert "1" in body["node_errors"], body
    assert "LoadImage: input 'image'" in str(body["node_errors"]["1"])


def test_missing_image_is_a_clear_run_or_validation_error(folders, registry):
    result = Executor(registry, folders).run(pipeline("nope.png"))
    assert result.status == "error"
    assert "LoadImage: input 'image'" in str(result.error) and "nope.png" in str(result.error)


def test_pixel_flood_fails_with_node_and_input(header_only_png, folders, registry):
    (folders.input_dir / "flood.png").write_bytes(header_only_png(30000, 30000))
    result = Executor(registry, folders).run(pipeline("flood.png"))
    assert result.status == "error"
    assert "LoadImage: input 'image'" in str(result.error) and "too large" in str(result.error)


def test_validate_inputs_without_folders_still_refuses_climbing_names():
    assert LoadImage.VALIDATE_INPUTS("ok.png") is True  # checked again when it runs
    assert "unsafe file name" in LoadImage.VALIDATE_INPUTS("../../etc/passwd")
    assert LoadImage.IS_CHANGED("ok.png") == "ok.png"  # stable, so downstream results stay cached
