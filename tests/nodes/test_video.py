"""Animated WEBP/PNG, CreateVideo -> SaveVideo (MP4 read back with PyAV), LoadVideo round trips."""
import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidgraph.engine.metadata import read_embedded_metadata
from vidgraph.engine.nodecall import materialized
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.frames import FrameStream
from vidgraph.nodes.video import (CreateVideo, GetVideoComponents, LoadVideo, SaveAnimatedPNG,
                                  SaveAnimatedWEBP, SaveVideo, Video)

PROMPT = {"7": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/ComfyUI"}}}
WORKFLOW = {"nodes": [{"id": 7, "type": "SaveVideo"}], "links": [], "version": 0.4}


def frames(count=4, height=24, width=32):
    """Frames that differ from each other in brightness, so frame order is checkable."""
    t = torch.linspace(0.1, 0.9, count).reshape(count, 1, 1, 1)
    x = torch.linspace(0, 1, width).reshape(1, 1, width, 1)
    return (0.5 * t + 0.5 * x).expand(count, height, width, 3).contiguous()


def read_mp4(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return decoded, stream.average_rate, stream.codec_context.pix_fmt, stream.codec_context.name


# -- animated WEBP / PNG ------------------------------------------------------------------------------

def test_animated_webp(folders, context):
    out = SaveAnimatedWEBP().save_images(frames(3), 8.0, "svd/anim", True, 80, "default",
                                         PROMPT, {"workflow": WORKFLOW}, context)
    assert out["ui"] == {"images": [{"filename": "anim_00001_.webp", "subfolder": "svd", "type": "output"}],
                         "animated": (True,)}
    path = folders.output_dir / "svd" / "anim_00001_.webp"
    with Image.open(path) as picture:
        assert picture.n_frames == 3 and picture.size == (32, 24)
        picture.seek(2)
        picture.load()
        assert picture.info["duration"] == 125
        assert abs(int(np.asarray(picture.convert("RGB"))[0, 0, 0]) - int(255 * 0.45)) <= 1  # lossless
    assert read_embedded_metadata(path) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_single_frame_webp_is_not_animated(context):
    out = SaveAnimatedWEBP().save_images(frames(1), 6.0, "one", False, 50, "fastest", None, None, context)
    assert out["ui"]["animated"] == (False,)


def test_webp_bad_method_names_the_input(context):
    with pytest.raises(NodeInputError, match="^SaveAnimatedWEBP: input 'method'"):
        SaveAnimatedWEBP().save_images(frames(2), 6.0, "x", True, 80, "turbo", None, None, context)


def test_animated_png(folders, context):
    out = SaveAnimatedPNG().save_images(frames(3), 10.0, 4, "apng", PROMPT, {"workflow": WORKFLOW}, context)
    assert out["ui"] == {"images": [{"filename": "apng_00001_.png", "subfolder": "", "type": "output"}],
                         "animated": (True,)}
    path = folders.output_dir / "apng_00001_.png"
    with Image.open(path) as picture:
        assert picture.n_frames == 3 and picture.size == (32, 24)
    assert b"comf" in path.read_bytes()
    assert read_embedded_metadata(path) == {"prompt": PROMPT, "workflow": WORKFLOW}


# -- CreateVideo / SaveVideo --------------------------------------------------------------------------

def test_create_and_save_mp4(folders, context):
    images = frames(5)
    (video,) = CreateVideo().create_video(images, 12.0)
    assert video.get_dimensions() == (32, 24) and video.fps == 12
    out = SaveVideo().save_video(video, "video/ComfyUI", "auto", "auto", PROMPT, {"workflow": WORKFLOW}, context)
    assert out["ui"] == {"images": [{"filename": "ComfyUI_00001_.mp4", "subfolder": "video", "type": "output"}],
                         "animated": (True,)}
    path = folders.output_dir / "video" / "ComfyUI_00001_.mp4"
    decoded, rate, pix_fmt, codec = read_mp4(path)
    assert len(decoded) == 5 and decoded[0].shape == (24, 32, 3)
    assert rate == 12 and pix_fmt == "yuv420p" and codec == "h264"
    means = [float(d.mean()) for d in decoded]
    assert means == sorted(means)  # frame order kept
    assert abs(means[0] - 255 * float(images[0].mean())) < 3
    assert read_embedded_metadata(path) == {"prompt": PROMPT, "workflow": WORKFLOW}


def test_second_save_does_not_overwrite(folders, context):
    (video,) = CreateVideo().create_video(frames(2), 6.0)
    names = [SaveVideo().save_video(video, "clip", "mp4", "h264", None, None, context)["ui"]["images"][0]["filename"]
             for _ in range(2)]
    assert names == ["clip_00001_.mp4", "clip_00002_.mp4"]


def test_odd_dimensions_are_padded_to_even(folders, context):
    (video,) = CreateVideo().create_video(frames(2, height=15, width=21), 8.0)
    SaveVideo().save_video(video, "odd", "auto", "auto", None, None, context)
    decoded, *_ = read_mp4(folders.output_dir / "odd_00001_.mp4")
    assert decoded[0].shape == (16, 22, 3)


def test_fractional_fps(folders, context):
    (video,) = CreateVideo().create_video(frames(3), 7.5)
    SaveVideo().save_video(video, "frac", "auto", "auto", None, None, context)
    _, rate, *_ = read_mp4(folders.output_dir / "frac_00001_.mp4")
    assert rate == Fraction(15, 2)


def test_video_with_audio(folders, context):
    rate = 8000
    tone = torch.sin(torch.arange(rate) * 2 * math.pi * 440 / rate).reshape(1, 1, -1).repeat(1, 2, 1) * 0.3
    (video,) = CreateVideo().create_video(frames(4), 8.0, {"waveform": tone, "sample_rate": rate})
    SaveVideo().save_video(video, "sound", "auto", "auto", None, None, context)
    with av.open(str(folders.output_dir / "sound_00001_.mp4")) as container:
        (audio,) = container.streams.audio
        assert audio.rate == rate and audio.channels == 2
        samples = sum(f.samples for f in container.decode(audio))
    assert rate * 0.5 <= samples <= rate * 0.5 + 2048  # trimmed to the 0.5 s of video (+ AAC padding)


def test_create_video_bad_inputs():
    with pytest.raises(NodeInputError, match="^CreateVideo: input 'images'"):
        CreateVideo().create_video(torch.zeros(0, 4, 4, 3), 8.0)
    with pytest.raises(NodeInputError, match="^CreateVideo: input 'fps'"):
        CreateVideo().create_video(frames(2), float("nan"))
    with pytest.raises(NodeInputError, match="^CreateVideo: input 'audio'"):
        CreateVideo().create_video(frames(2), 8.0, audio=torch.zeros(10))


def test_save_video_bad_inputs(context):
    with pytest.raises(NodeInputError, match="^SaveVideo: input 'video'"):
        SaveVideo().save_video(frames(2), "x", "auto", "auto", None, None, context)
    (video,) = CreateVideo().create_video(frames(2), 8.0)
    with pytest.raises(NodeInputError, match="^SaveVideo: input 'format'"):
        SaveVideo().save_video(video, "x", "webm", "auto", None, None, context)
    with pytest.raises(NodeInputError, match="^SaveVideo: input 'filename_prefix'"):
        SaveVideo().save_video(video, "../../x", "auto", "auto", None, None, context)


# -- LoadVideo / GetVideoComponents -------------------------------------------------------------------

def test_load_video_round_trip(folders, context):
    images = frames(6, 16, 16)
    Video(images, 10).save_to(folders.input_dir / "clip.mp4")
    assert LoadVideo.INPUT_TYPES(folders)["required"]["file"] == (["clip.mp4"], {"video_upload": True})
    assert LoadVideo.VALIDATE_INPUTS("clip.mp4", context) is True
    (video,) = LoadVideo().load_video("clip.mp4", context)
    assert video.get_dimensions() == (16, 16)
    stream, audio, fps = GetVideoComponents().get_components(video)
    assert isinstance(stream, FrameStream) and stream.shape == (6, 16, 16, 3)  # decoded only when read
    loaded = materialized(stream)
    assert loaded.shape == (6, 16, 16, 3) and loaded.dtype == torch.float32
    assert audio is None and fps == 10.0
    assert float((loaded - images).abs().mean()) < 0.03  # H.264 is lossy, but close
    digest = LoadVideo.IS_CHANGED("clip.mp4", context)
    assert len(digest) == 64


def test_loaded_video_chains_into_save(folders, context):
    Video(frames(3), 6).save_to(folders.input_dir / "in.mp4")
    (video,) = LoadVideo().load_video("in.mp4", context)
    SaveVideo().save_video(video, "again", "auto", "auto", None, None, context)
    decoded, rate, *_ = read_mp4(folders.output_dir / "again_00001_.mp4")
    assert len(decoded) == 3 and rate == 6


def expect_load_error(context, name, fragment):
    with pytest.raises(NodeInputError) as info:
        LoadVideo().load_video(name, context)
    assert str(info.value).startswith("LoadVideo: input 'file':") and fragment in str(info.value)
    result = LoadVideo.VALIDATE_INPUTS(name, context)
    return result


def test_load_video_missing_and_unsafe(context):
    assert "not found" in expect_load_error(context, "gone.mp4", "not found")
    assert "LoadVideo" in expect_load_error(context, "../x.mp4", "unsafe file name")


def test_load_video_corrupt(folders, context):
    (folders.input_dir / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"garbage" * 50)
    expect_load_error(context, "bad.mp4", "not a readable video")


def test_load_video_over_limits_rejected_before_decoding(folders, make_context):
    Video(frames(8, 16, 16), 8).save_to(folders.input_dir / "long.mp4")
    with pytest.raises(NodeInputError, match=r"^LoadVideo: input 'file':.*8 frames"):
        LoadVideo().load_video("long.mp4", make_context(settings={"image_max_frames": 4}))


def test_interrupt_stops_encoding_and_leaves_no_file(folders, context):
    from vidgraph.engine.context import use_context
    from vidgraph.engine.interrupt import Interrupted

    (video,) = CreateVideo().create_video(frames(3), 8.0)
    context.interrupt_flag.set()
    with use_context(context), pytest.raises(Interrupted):
        SaveVideo().save_video(video, "stopped", "auto", "auto", None, None, context)
    assert list(folders.output_dir.rglob("*")) == []


def test_a_video_that_decodes_fewer_frames_than_it_stores_is_a_node_error(folders, context):
    """Damaged packets are counted at load but the decoder drops their frames silently: reading the
    clip then names LoadVideo's file, not a shape mismatch deep in materializing."""
    Video(frames(2, 16, 16), 8).save_to(folders.input_dir / "short.mp4")
    (video,) = LoadVideo().load_video("short.mp4", context)
    images = GetVideoComponents().get_components(video)[0]
    assert images.shape[0] == 2
    images.shape = (4, *images.shape[1:])   # as if two of its packets had been damaged
    with pytest.raises(NodeInputError, match=r"LoadVideo: input 'file': .*damaged: 4 frames stored, 2 decodable"):
        materialized(images)


def test_damaged_videos_give_node_errors_only(folders, context):
    Video(frames(4, 16, 16), 8).save_to(folders.input_dir / "good.mp4")
    original = (folders.input_dir / "good.mp4").read_bytes()
    rng = np.random.default_rng(5)
    for trial in range(20):
        data = bytearray(original)
        for position in rng.integers(0, len(data), 6):
            data[position] = int(rng.integers(0, 256))
        if trial % 3 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        (folders.input_dir / f"bad{trial}.mp4").write_bytes(bytes(data))
        try:
            (video,) = LoadVideo().load_video(f"bad{trial}.mp4", context)
            images = materialized(GetVideoComponents().get_components(video)[0])
        except NodeInputError as e:
            assert str(e).startswith("LoadVideo: input 'file':")
        else:
            assert images.ndim == 4 and images.shape[-1] == 3
