"""Model folders and the loaded-model cache: extra_model_paths.yaml, reloads, eviction, standalone loaders."""
from __future__ import annotations

import os
import shutil
import time

import pytest
import torch

from svd_nodes_support import CHECKPOINT, small_prompt
from vidgraph.engine.executor import Executor
from vidgraph.engine.resources import ResourceCache
from vidgraph.engine.validation import validate_prompt
from vidgraph.nodes.ksampler import KSampler
from vidgraph.nodes.model import Model
from vidgraph.nodes.latents import VAEDecode
from vidgraph.nodes.loaders import CheckpointLoaderSimple, CLIPVisionLoader, UNETLoader, VAELoader
from vidgraph.nodes.svd import checkpoint as svd_checkpoint
from vidgraph.nodes.svd.tiny import write_tiny_checkpoint


@pytest.fixture
def count_loads(monkeypatch):
    loads = []
    real_load = svd_checkpoint.load_checkpoint

    def counting_load(path, **options):
        loads.append(os.path.basename(path))
        return real_load(path, **options)

    monkeypatch.setattr(svd_checkpoint, "load_checkpoint", counting_load)
    return loads


def test_comfyui_models_folder_used_in_place_through_extra_model_paths(svd_env, tmp_path):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    shutil.copyfile(svd_env.tiny_checkpoint, comfy / "models" / "checkpoints" / "svd_in_comfyui.safetensors")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"comfyui:\n    base_path: {comfy}\n    checkpoints: models/checkpoints/\n")
    svd_env.folders.load_extra_model_paths(config)

    prompt = small_prompt()
    prompt["1"]["inputs"]["ckpt_name"] = "svd_in_comfyui.safetensors"
    assert validate_prompt(svd_env.registry, prompt).ok  # the combo lists the ComfyUI folder's files
    result = svd_env.executor().run(prompt)
    assert result.status == "success", result.error
    assert not (svd_env.folders.models_dir / "checkpoints" / "svd_in_comfyui.safetensors").exists()


def test_checkpoint_replaced_under_the_same_name_is_reloaded_without_free(svd_env, count_loads):
    """The loaders' IS_CHANGED is the file's identity: an unchanged file is neither re-run nor re-read;
    a file replaced under the same name re-runs the loader and everything after it, and the copy
    loaded from the old file leaves the model cache."""
    executor = svd_env.executor()
    first = executor.run(small_prompt(save_frames=False))
    assert first.status == "success"
    again = executor.run(small_prompt(save_frames=False))
    assert "1" in again.cached and "5" in again.cached and count_loads == [CHECKPOINT]
    path = svd_env.folders.models_dir / "checkpoints" / CHECKPOINT
    path.unlink()  # it may be a hard link to the session's file: never write through it
    write_tiny_checkpoint(path, seed=1)
    replaced = executor.run(small_prompt(save_frames=False))
    assert replaced.status == "success", replaced.error
    assert {"1", "5"} <= set(replaced.executed)  # the loader and the sampler after it ran again
    assert count_loads == [CHECKPOINT, CHECKPOINT]
    checkpoints = [key for key in executor.resources.keys() if key[0] == "svd_checkpoint"]
    assert len(checkpoints) == 1 and checkpoints[0][1][0] == os.path.realpath(path)


def test_checkpoint_edited_in_place_is_reloaded(svd_env, count_loads):
    """Same inode and size, new bytes: the mtime tells (and a linked file counts as its target)."""
    models = svd_env.folders.models_dir
    real = models / "real.safetensors"
    write_tiny_checkpoint(real, seed=2)
    (models / "checkpoints" / "linked.safetensors").symlink_to(real)
    prompt = small_prompt(save_frames=False)
    prompt["1"]["inputs"]["ckpt_name"] = "linked.safetensors"
    executor = svd_env.executor()
    assert executor.run(prompt).status == "success"
    inode = real.stat().st_ino
    with open(real, "r+b") as f:  # rewrite the same bytes: only the mtime moves
        data = f.read()
        f.seek(0)
        f.write(data)
    os.utime(real, ns=(time.time_ns(), real.stat().st_mtime_ns + 1_000_000_000))
    assert real.stat().st_ino == inode
    result = executor.run(prompt)
    assert result.status == "success" and "1" in result.executed
    assert count_loads == ["linked.safetensors", "linked.safetensors"]


def test_loaders_is_changed_without_folders_or_file_falls_back_to_the_name(svd_env):
    from vidgraph.nodes.loaders import ImageOnlyCheckpointLoader
    assert ImageOnlyCheckpointLoader.IS_CHANGED("x.safetensors") == "x.safetensors"
    assert ImageOnlyCheckpointLoader.IS_CHANGED("missing.safetensors", svd_env.context()) == "missing.safetensors"
    identity = ImageOnlyCheckpointLoader.IS_CHANGED(CHECKPOINT, svd_env.context())
    path = svd_env.folders.models_dir / "checkpoints" / CHECKPOINT
    assert identity == (os.path.realpath(path), path.stat().st_size, path.stat().st_mtime_ns, path.stat().st_ino)


def test_model_cache_evicts_the_least_recently_used_model_when_over_budget(svd_env, count_loads):
    svd_env.put_checkpoint("second.safetensors")
    one_model = 6 * 2 ** 20  # the tiny model in fp32 is a few MB: room for one, not two
    executor = Executor(svd_env.registry, svd_env.folders, settings={"device": "cpu", "previews": False},
                        resources=ResourceCache(max_bytes=one_model * 2))
    assert executor.run(small_prompt(save_frames=False)).status == "success"
    size = executor.resources.total_bytes
    assert 0 < size <= one_model * 2
    executor.resources.max_bytes = int(size * 1.5)
    prompt = small_prompt(save_frames=False)
    prompt["1"]["inputs"]["ckpt_name"] = "second.safetensors"
    assert executor.run(prompt).status == "success"
    assert len(executor.resources) == 1 and count_loads == [CHECKPOINT, "second.safetensors"]
    assert executor.resources.keys()[0][1][0].endswith("second.safetensors")


def test_checkpoint_loader_simple_has_no_text_encoder(svd_env):
    model, clip, vae = CheckpointLoaderSimple().load_checkpoint(CHECKPOINT, svd_env.context())
    assert isinstance(model, Model) and clip is None and hasattr(vae, "decode")


def test_standalone_loaders_read_the_parts_of_a_whole_svd_file(svd_env, tiny_models):
    """VAELoader / CLIPVisionLoader / UNETLoader on the single file give the checkpoint's own parts."""
    for folder in ("vae", "clip_vision", "diffusion_models"):
        (svd_env.folders.models_dir / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(svd_env.tiny_checkpoint, svd_env.folders.models_dir / folder / "svd_part.safetensors")
    context = svd_env.context()
    vae = VAELoader().load_vae("svd_part.safetensors", context)[0]
    clip_vision = CLIPVisionLoader().load_clip("svd_part.safetensors", context)[0]
    model = UNETLoader().load_unet("svd_part.safetensors", "default", context)[0]
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    assert torch.equal(VAEDecode().decode(latent, vae, context)[0],
                       VAEDecode().decode(latent, tiny_models.vae, context)[0])
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(clip_vision.encode_image(image).image_embeds,
                       tiny_models.clip_vision.encode_image(image).image_embeds)
    mine_sd, theirs_sd = model.network.module.state_dict(), tiny_models.model.network.module.state_dict()
    for mine, theirs in zip(mine_sd.values(), theirs_sd.values()):
        assert torch.equal(mine.float(), theirs.float())


def test_unet_loader_fp8_keeps_8_bit_weights_and_samples(svd_env, svd_conditioning):
    (svd_env.folders.models_dir / "diffusion_models").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(svd_env.tiny_checkpoint, svd_env.folders.models_dir / "diffusion_models" / "unet.safetensors")
    context = svd_env.context()
    model = UNETLoader().load_unet("unet.safetensors", "fp8_e4m3fn", context)[0]
    dtypes = {p.dtype for p in model.network.module.parameters()}
    assert torch.float8_e4m3fn in dtypes
    default = UNETLoader().load_unet("unet.safetensors", "default", context)[0]
    assert default.network.module is not model.network.module  # weight_dtype is part of the cache key
    positive, negative, latent = svd_conditioning
    out = KSampler().sample(model, 1, 2, 2.5, "euler", "karras", positive, negative, latent,
                            context=context)[0]["samples"]
    assert out.shape == latent["samples"].shape and torch.isfinite(out).all()


def test_decode_chunk_is_the_whole_clip_when_it_fits_and_bounded_when_not(monkeypatch):
    from vidgraph.nodes import model_management, vae_coding
    from vidgraph.nodes.svd.vae import VAE, VAEConfig

    with torch.device("meta"):
        vae = VAE(VAEConfig())  # SVD's full-size decoder: 128 base channels
    full_hd = torch.zeros(25, 4, 72, 128)  # 25 frames of 1024x576
    monkeypatch.setattr(model_management, "available_memory", lambda device: 1 << 50)
    assert vae_coding.decode_chunk(vae, full_hd, torch.device("cpu")) == 25
    monkeypatch.setattr(model_management, "available_memory", lambda device: 16 << 30)
    chunk = vae_coding.decode_chunk(vae, full_hd, torch.device("cpu"))
    # ~2 GB of working memory per fp32 frame: a 16 GB machine decodes a handful at a time
    assert 1 <= chunk <= 6
    monkeypatch.setattr(model_management, "available_memory", lambda device: 1 << 20)
    assert vae_coding.decode_chunk(vae, full_hd, torch.device("cpu")) == 1


def test_make_room_offloads_least_recently_used_models_until_the_new_one_fits(monkeypatch):
    from vidgraph.nodes import model_management as mm

    cache = ResourceCache()
    old, recent, new = (torch.nn.Linear(4, 4) for _ in range(3))
    cache.put("old", old, 1)
    cache.put("recent", recent, 1)
    on_gpu = {old, recent}
    free = {"bytes": 0}

    def fake_to(module):
        def to(device):
            on_gpu.discard(module)
            free["bytes"] += 2 << 30  # each offloaded model frees 2 GiB
            return module
        return to

    for module in (old, recent):
        monkeypatch.setattr(module, "to", fake_to(module))
    monkeypatch.setattr(mm, "available_memory", lambda device: free["bytes"])
    monkeypatch.setattr(mm, "_on_device", lambda module, device: module in on_gpu)
    moved = mm.make_room(1 << 30, torch.device("cuda"), cache, keep=new)
    # 1 GiB needed + 1 GiB reserve: offloading the oldest model frees enough
    assert moved == [old] and on_gpu == {recent}
    assert cache.keys() == ["old", "recent"]  # looking did not count as use


def test_a_16_bit_checkpoint_whose_fp32_copy_does_not_fit_loads_in_low_memory_mode(monkeypatch, tmp_path):
    from vidgraph.engine.context import NodeContext
    from vidgraph.engine.folders import Folders
    from vidgraph.nodes import loaders

    folders = Folders(base_dir=tmp_path)
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    write_tiny_checkpoint(tmp_path / "models" / "checkpoints" / "tiny.safetensors")  # fp16
    context = NodeContext("p", "1", "ImageOnlyCheckpointLoader", folders, ResourceCache(), {"device": "cpu"})
    monkeypatch.setattr(loaders, "available_memory", lambda device: 1 << 40)
    roomy = loaders.ImageOnlyCheckpointLoader().load_checkpoint("tiny.safetensors", context)[0]
    assert next(roomy.network.module.parameters()).dtype == torch.float32
    monkeypatch.setattr(loaders, "available_memory", lambda device: 1 << 20)
    tight = loaders.ImageOnlyCheckpointLoader().load_checkpoint("tiny.safetensors", context)[0]
    assert next(tight.network.module.parameters()).dtype == torch.float16
    assert tight.compute_dtype == torch.float32


def test_the_vae_never_computes_in_fp16(monkeypatch):
    from vidgraph.nodes.model_management import vae_compute_dtype

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert vae_compute_dtype({}, cpu) == torch.float32
    assert vae_compute_dtype({"dtype": "fp16"}, cpu) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert vae_compute_dtype({"dtype": "fp16"}, gpu) == torch.bfloat16
    assert vae_compute_dtype({"dtype": "fp32"}, gpu) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert vae_compute_dtype({}, gpu) == torch.float32
