"""Image in, video out on the tiny checkpoint: files, embedded workflows, seeds, caching, model lifetime."""
from __future__ import annotations

import gc
import io
import json
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from svd_nodes_support import CHECKPOINT, DEMO_IMAGE, FPS, FRAMES, SIZE, small_prompt
from vidgraph.engine.metadata import read_embedded_metadata
from vidgraph.engine.ui_export import api_to_ui
from vidgraph.engine.workflow import read_workflow, ui_to_api
from vidgraph.nodes import demo
from vidgraph.nodes.svd import checkpoint as svd_checkpoint

LOADERS_AND_CONDITIONING = {"1", "2", "3", "4"}
SAMPLER_AND_AFTER = {"5", "6", "7", "8", "9", "10"}


@pytest.fixture
def first_run(svd_env):
    prompt = small_prompt()
    workflow = api_to_ui(prompt, svd_env.registry.classes)
    result = svd_env.executor().run(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert result.status == "success", result.error
    return prompt, workflow, result


def test_image_in_mp4_webp_and_png_frames_out(svd_env, first_run):
    _, _, result = first_run
    [mp4] = svd_env.output_files(result, "9")
    [webp] = svd_env.output_files(result, "7")
    pngs = svd_env.output_files(result, "10")
    assert mp4.suffix == ".mp4" and webp.suffix == ".webp" and [p.suffix for p in pngs] == [".png"] * FRAMES
    assert result.outputs["9"]["animated"][0] and result.outputs["7"]["animated"][0]

    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == Fraction(FPS)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3)

    with Image.open(webp) as animation:
        assert (animation.n_frames, animation.size) == (FRAMES, (SIZE, SIZE))
        animation.load()  # Pillow reads a frame's duration when it decodes it
        assert animation.info["duration"] == 1000 // FPS

    png_frames = svd_env.frames(result)
    assert png_frames.shape == (FRAMES, SIZE, SIZE, 3)
    assert png_frames.std() > 1, "frames should not be blank"
    # The MP4 holds the same pictures, up to H.264's loss on noise-like 64x64 content.
    assert np.abs(np.stack(frames).astype(int) - png_frames).mean() < 40


def test_embedded_workflow_round_trips_and_reproduces_the_frames(svd_env, first_run):
    prompt, workflow, result = first_run
    files = {"png": svd_env.output_files(result, "10")[0], "webp": svd_env.output_files(result, "7")[0],
             "mp4": svd_env.output_files(result, "9")[0]}
    for kind, path in files.items():
        embedded = read_embedded_metadata(path)
        assert embedded["prompt"] == prompt, kind
        assert embedded["workflow"] == workflow, kind
        loaded = read_workflow(path, svd_env.registry)
        assert loaded.source_format == kind and loaded.prompt == prompt
    assert ui_to_api(workflow, svd_env.registry) == prompt

    again = svd_env.executor().run(read_workflow(files["mp4"], svd_env.registry).prompt)
    assert again.status == "success", again.error
    assert np.array_equal(svd_env.frames(again), svd_env.frames(result))
    assert svd_env.output_files(again, "10") != svd_env.output_files(result, "10")  # numbered on, not overwritten


def test_same_seed_gives_identical_frames_in_two_executors(svd_env):
    first = svd_env.executor().run(small_prompt(seed=7))
    second = svd_env.executor().run(small_prompt(seed=7))
    assert first.status == second.status == "success"
    assert set(second.executed) == LOADERS_AND_CONDITIONING | SAMPLER_AND_AFTER  # nothing shared
    assert np.array_equal(svd_env.frames(first), svd_env.frames(second))


def test_changed_seed_reruns_only_the_sampler_and_what_follows(svd_env):
    executor = svd_env.executor()
    first = executor.run(small_prompt(seed=1))
    second = executor.run(small_prompt(seed=2))
    assert second.status == "success", second.error
    assert set(second.executed) == SAMPLER_AND_AFTER
    assert set(second.cached) == LOADERS_AND_CONDITIONING
    assert not np.array_equal(svd_env.frames(first), svd_env.frames(second))

    third = executor.run(small_prompt(seed=2))
    assert third.executed == [] and set(third.cached) == LOADERS_AND_CONDITIONING | SAMPLER_AND_AFTER


def vae_round_trip_prompt() -> dict:
    return {
        "11": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "12": {"class_type": "LoadImage", "inputs": {"image": DEMO_IMAGE}},
        "13": {"class_type": "ImageScale", "inputs": {"image": ["12", 0], "upscale_method": "bilinear",
                                                       "width": SIZE, "height": SIZE, "crop": "center"}},
        "14": {"class_type": "VAEEncode", "inputs": {"pixels": ["13", 0], "vae": ["11", 2]}},
        "15": {"class_type": "VAEDecode", "inputs": {"samples": ["14", 0], "vae": ["11", 2]}},
        "16": {"class_type": "PreviewImage", "inputs": {"images": ["15", 0]}},
    }


def test_checkpoint_loaded_once_across_prompts_and_released_on_free(svd_env, monkeypatch):
    loads = []
    real_load = svd_checkpoint.load_checkpoint

    def counting_load(path, **options):
        loads.append(path)
        return real_load(path, **options)

    monkeypatch.setattr(svd_checkpoint, "load_checkpoint", counting_load)
    executor = svd_env.executor()
    assert executor.run(small_prompt(seed=1, save_frames=False)).status == "success"
    # Another prompt, another loader class on the same file: the node runs, the model cache answers.
    second = executor.run(vae_round_trip_prompt())
    assert second.status == "success", second.error
    assert "11" in second.executed
    assert len(loads) == 1
    assert len(executor.resources) == 1

    unet = weakref.ref(executor.resources.get(executor.resources.keys()[0]).unet)
    executor.free(unload_models=True)
    assert len(executor.resources) == 0
    executor.free(free_memory=True)
    gc.collect()
    assert unet() is None, "the UNet is still referenced after free()"

    assert executor.run(small_prompt(seed=1, save_frames=False)).status == "success"
    assert len(loads) == 2


def test_load_options_are_part_of_the_cache_key(svd_env, monkeypatch):
    """The same file loaded for another dtype is another model, not the cached fp32 one."""
    loads = []
    real_load = svd_checkpoint.load_checkpoint
    monkeypatch.setattr(svd_checkpoint, "load_checkpoint",
                        lambda path, **options: loads.append(options["dtype"]) or real_load(path, **options))
    from vidgraph.nodes.loaders import ImageOnlyCheckpointLoader

    loader = ImageOnlyCheckpointLoader()
    fp32 = loader.load_checkpoint("svd_tiny.safetensors", svd_env.context())
    again = loader.load_checkpoint("svd_tiny.safetensors", svd_env.context())
    bf16 = loader.load_checkpoint("svd_tiny.safetensors", svd_env.context(dtype="bf16"))
    assert again[0].network.module is fp32[0].network.module and bf16[0].network.module is not fp32[0].network.module
    assert [str(d) for d in loads] == ["torch.float32", "torch.bfloat16"]
    assert next(bf16[0].network.module.parameters()).dtype.is_floating_point


def test_demo_prints_a_webp_and_an_mp4_that_exist(tmp_path, capsys):
    code = demo.main(["--base-dir", str(tmp_path), "--width", "64", "--height", "64",
                      "--frames", "2", "--steps", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    printed = [line.strip() for line in out.splitlines() if line.strip().endswith((".webp", ".mp4"))]
    assert sorted(p.rsplit(".", 1)[1] for p in printed) == ["mp4", "webp"]
    for path in printed:
        assert (tmp_path / "output").resolve() in Path(path).resolve().parents
        assert Path(path).stat().st_size > 0
    with av.open(next(p for p in printed if p.endswith(".mp4"))) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2


def test_demo_metadata_is_runnable_json(tmp_path, capsys):
    """The demo's MP4 carries its prompt: the clip a newcomer gets can be dragged into the editor."""
    assert demo.main(["--base-dir", str(tmp_path), "--width", "64", "--height", "64",
                      "--frames", "2", "--steps", "2"]) == 0
    mp4 = next(line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().endswith(".mp4"))
    prompt = read_embedded_metadata(mp4)["prompt"]
    assert prompt["1"]["inputs"]["ckpt_name"] == demo.CHECKPOINT
    assert json.loads(json.dumps(prompt)) == prompt


def test_sampler_reports_progress_and_jpeg_previews(svd_env):
    events = []
    executor = svd_env.executor(previews=True)
    result = executor.run(small_prompt(steps=3, save_frames=False), on_event=lambda e, d: events.append((e, d)))
    assert result.status == "success", result.error
    progress = [(d["value"], d["max"]) for e, d in events if e == "progress" and d["node"] == "5"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    previews = [d for e, d in events if e == "preview"]
    assert len(previews) == 3 and all(p["node_id"] == "5" and p["format"] == "JPEG" for p in previews)
    with Image.open(io.BytesIO(previews[0]["image"])) as picture:
        assert picture.format == "JPEG" and max(picture.size) <= 256


def test_interrupt_in_the_sampler_stops_the_prompt_and_the_next_one_runs(svd_env):
    executor = svd_env.executor()

    def interrupt_at_first_step(event, data):
        if event == "progress" and data["node"] == "5":
            executor.interrupt()

    stopped = executor.run(small_prompt(steps=3), on_event=interrupt_at_first_step)
    assert stopped.status == "interrupted"
    assert "5" not in stopped.executed and "10" not in stopped.outputs
    assert not list(svd_env.folders.output_dir.rglob("*.png"))  # nothing half-written

    again = executor.run(small_prompt(steps=3))
    assert again.status == "success", again.error
    assert LOADERS_AND_CONDITIONING <= set(again.cached)
