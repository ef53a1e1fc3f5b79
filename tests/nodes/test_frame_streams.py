"""IMAGE batches kept in a file (FrameFile) and video files read lazily: the savers take them a
chunk at a time and write the same files as from a tensor."""
import gc

import av
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from vidgraph.engine.nodecall import materialized
from vidgraph.nodes import frames as frames_module
from vidgraph.nodes.frames import FrameFile, FrameFileWriter, FrameSink, FrameStream, frame_chunks
from vidgraph.nodes.video import (CreateVideo, GetVideoComponents, LoadVideo, SaveAnimatedPNG,
                                  SaveAnimatedWEBP, SaveVideo, Video)


def clip(count=7, height=16, width=24, seed=0):
    return torch.rand(count, height, width, 3, generator=torch.Generator().manual_seed(seed))


def frame_file(images, directory, chunk=3) -> FrameFile:
    with FrameFileWriter(directory) as writer:
        for start in range(0, len(images), chunk):
            writer.append(images[start:start + chunk])
        return writer.finish()


def test_frame_file_round_trip_and_cleanup(tmp_path):
    images = clip()
    stream = frame_file(images, tmp_path)
    assert stream.shape == (7, 16, 24, 3) and len(stream) == 7 and stream.path.exists()
    sizes = [len(c) for c in stream.chunks(2)]
    assert sizes == [2, 2, 2, 1]
    assert torch.equal(torch.cat(list(stream.chunks(2))), images)
    assert torch.equal(materialized(stream), images)
    path = stream.path
    del stream
    gc.collect()
    assert not path.exists()


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="frames of shape"):
        with FrameFileWriter(tmp_path) as writer:
            writer.append(clip(2))
            writer.append(clip(2, height=8))
    assert list(tmp_path.iterdir()) == []


def test_sink_streams_only_past_the_threshold(tmp_path):
    images = clip(4)
    with FrameSink(4, (16, 24, 3), {}, tmp_path) as sink:
        sink.append(images[:2]), sink.append(images[2:])
        kept = sink.finish()
    assert isinstance(kept, torch.Tensor) and torch.equal(kept, images)
    with FrameSink(4, (16, 24, 3), {"stream_frames_over_mb": 0.001}, tmp_path) as sink:
        sink.append(images[:2]), sink.append(images[2:])
        streamed = sink.finish()
    assert isinstance(streamed, FrameFile) and torch.equal(materialized(streamed), images)


def webp_frames(path):
    with Image.open(path) as picture:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(picture)])


def test_animated_webp_and_png_from_a_stream_match_the_tensor(tmp_path, folders, context, monkeypatch):
    images = clip(6)
    stream = frame_file(images, tmp_path)
    monkeypatch.setattr(frames_module, "CHUNK_BYTES", 2 * stream.frame_bytes)  # 2 frames a read
    for node, args in ((SaveAnimatedWEBP(), (True, 80, "default")), (SaveAnimatedPNG(), ())):
        if isinstance(node, SaveAnimatedPNG):
            save = lambda images, prefix: node.save_images(images, 8.0, 4, prefix, None, None, context)
        else:
            save = lambda images, prefix: node.save_images(images, 8.0, prefix, *args, None, None, context)
        from_tensor = save(images, "t")["ui"]["images"][0]["filename"]
        from_stream = save(stream, "s")["ui"]["images"][0]["filename"]
        a, b = webp_frames(folders.output_dir / from_tensor), webp_frames(folders.output_dir / from_stream)
        assert a.shape == (6, 16, 24, 3) and np.array_equal(a, b)


def test_single_frame_stream_saves_a_still(tmp_path, folders, context):
    stream = frame_file(clip(1), tmp_path)
    out = SaveAnimatedWEBP().save_images(stream, 8.0, "one", True, 80, "default", None, None, context)
    assert out["ui"]["animated"] == (False,)


def mp4_frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])])


def test_video_from_a_stream_saves_and_loads_lazily(tmp_path, folders, context, monkeypatch):
    images = clip(9, 32, 48)
    stream = frame_file(images, tmp_path)
    (from_stream,) = CreateVideo().create_video(stream, 12.0)
    (from_tensor,) = CreateVideo().create_video(images, 12.0)
    a = SaveVideo().save_video(from_stream, "s", "auto", "auto", None, None, context)["ui"]["images"][0]
    b = SaveVideo().save_video(from_tensor, "t", "auto", "auto", None, None, context)["ui"]["images"][0]
    saved = mp4_frames(folders.output_dir / a["filename"])
    # the same frames went in (libx264's threads may still make the bytes differ a little)
    assert saved.shape == (9, 32, 48, 3)
    assert np.abs(saved.astype(int) - mp4_frames(folders.output_dir / b["filename"])).mean() < 2

    (folders.input_dir / "clip.mp4").write_bytes((folders.output_dir / a["filename"]).read_bytes())
    (video,) = LoadVideo().load_video("clip.mp4", context)
    frames, audio, fps = GetVideoComponents().get_components(video)
    assert isinstance(frames, FrameStream) and frames.shape == (9, 32, 48, 3) and fps == 12.0
    monkeypatch.setattr(frames_module, "CHUNK_BYTES", 4 * frames.frame_bytes)
    chunks = list(frame_chunks(frames, "Test"))
    read_sizes = [len(c) for c in chunks]
    assert read_sizes == [4, 4, 1]
    assert np.array_equal((torch.cat(chunks) * 255).round().to(torch.uint8).numpy(), saved)
    (again,) = CreateVideo().create_video(frames, 12.0)  # a loaded clip re-encoded, never held whole
    c = SaveVideo().save_video(again, "again", "auto", "auto", None, None, context)["ui"]["images"][0]
    assert mp4_frames(folders.output_dir / c["filename"]).shape == (9, 32, 48, 3)


def test_long_video_loads_past_the_total_pixel_limit_but_not_whole(folders, make_context):
    Video(clip(6, 16, 16), 8).save_to(folders.input_dir / "long.mp4")
    context = make_context(settings={"image_max_total_pixels": 16 * 16 * 4})
    (video,) = LoadVideo().load_video("long.mp4", context)  # read a chunk at a time: allowed
    frames = GetVideoComponents().get_components(video)[0]
    assert sum(len(c) for c in frames.chunks(2)) == 6
    with pytest.raises(ValueError, match="6 frames of 16 x 16"):
        materialized(frames)
