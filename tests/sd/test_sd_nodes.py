"""The SD image nodes through the real executor on tiny random SD 1.x and SDXL checkpoints in the real
key layout: text-to-image graphs, SDXL's encoder, conditioning edits, latents, inpainting, bad input.
ComfyUI parity on its own SD 1.5 case runs with VIDGRAPH_PARITY=1 (a 2.1 GB checkpoint)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgraph.engine.executor import Executor
from vidgraph.engine.folders import Folders
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.sd.tiny import write_tiny_sd_checkpoint
from vidgraph.runtime import build_registry

from sd_shared import shared_path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folders = Folders(base_dir=tmp_path_factory.mktemp("sd-nodes"))
    folders.ensure_dirs()
    checkpoints = folders.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for family in ("sd1", "sdxl"):
        write_tiny_sd_checkpoint(checkpoints / f"tiny_{family}.safetensors", family)
    return folders, build_registry(folders)


def run(env, prompt):
    folders, registry = env
    return Executor(registry, folders, settings={"device": "cpu", "previews": False}).run(prompt)


def txt2img(ckpt="tiny_sd1.safetensors", positive="a red ball on a table", negative="blurry", seed=7, size=64,
            encoder=None):
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 3, "cfg": 7.0, "sampler_name": "euler",
                                                   "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                                                   "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t2i", "images": ["8", 0]}},
    }
    if encoder:
        prompt["6"] = encoder
    return prompt


def image_of(env, result):
    from PIL import Image
    folders, _ = env
    entry = result.outputs["9"]["images"][0]
    return np.asarray(Image.open(folders.output_dir / entry["subfolder"] / entry["filename"]))


@pytest.mark.parametrize("ckpt", ["tiny_sd1.safetensors", "tiny_sdxl.safetensors"])
def test_text_to_image_runs_and_the_prompt_matters(env, ckpt):
    first = run(env, txt2img(ckpt))
    assert first.status == "success", first.error
    again = run(env, txt2img(ckpt))
    other = run(env, txt2img(ckpt, positive="a blue cube under a lamp"))
    assert other.status == "success", other.error
    a, b, c = image_of(env, first), image_of(env, again), image_of(env, other)
    assert a.shape == (64, 64, 3) and a.std() > 1
    assert (a == b).all() and not (a == c).all()


def test_sdxl_text_encoder_node_and_its_sizes(env):
    encoder = {"class_type": "CLIPTextEncodeSDXL", "inputs": {
        "clip": ["4", 1], "width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
        "target_height": 1024, "text_g": "mountains", "text_l": "alps, snow"}}
    result = run(env, txt2img("tiny_sdxl.safetensors", encoder=encoder))
    assert result.status == "success", result.error
    small = dict(encoder, inputs={**encoder["inputs"], "width": 64, "height": 64, "target_width": 64, "target_height": 64})
    other = run(env, txt2img("tiny_sdxl.safetensors", encoder=small))
    assert not (image_of(env, result) == image_of(env, other)).all()  # the sizes reach the UNet


def test_a_prompt_syntax_error_names_the_node_input_and_position(env):
    result = run(env, txt2img(positive="a (red ball"))
    assert result.status == "error"
    message = result.error["exception_message"]
    assert message.startswith("CLIPTextEncode: input 'text': ") and "character 3" in message


def test_sd_model_refuses_svd_conditioning_and_a_video_latent_naming_the_input(env):
    from vidgraph.nodes.ksampler import KSampler
    from vidgraph.nodes.loaders import CheckpointLoaderSimple
    from vidgraph.nodes.text_conditioning import CLIPTextEncode
    from vidgraph.engine.context import NodeContext
    from vidgraph.engine.resources import ResourceCache
    folders, _ = env
    context = NodeContext("p", "1", "KSampler", folders, ResourceCache(), {"device": "cpu", "previews": False})
    model, clip, vae = CheckpointLoaderSimple().load_checkpoint("tiny_sd1.safetensors", context)
    text = CLIPTextEncode().encode("cat", clip, context)[0]
    video_cond = [[torch.zeros(1, 1, 1024), {"concat_latent_image": torch.zeros(1, 4, 8, 8)}]]
    with pytest.raises(NodeInputError, match="^KSampler: input 'positive': "):
        KSampler().sample(model, 1, 1, 1.0, "euler", "normal", video_cond, text, {"samples": torch.zeros(1, 4, 8, 8)},
                          context=context)
    with pytest.raises(NodeInputError, match="^KSampler: input 'latent_image': "):
        KSampler().sample(model, 1, 1, 1.0, "euler", "normal", text, text, {"samples": torch.zeros(1, 8, 8, 8)},
                          context=context)


def test_conditioning_nodes_edit_copies(env):
    from vidgraph.nodes.text_conditioning import (ConditioningCombine, ConditioningSetArea, ConditioningSetTimestepRange,
                                                  ConditioningZeroOut)
    cond = [[torch.ones(1, 77, 8), {"pooled_output": torch.ones(1, 4)}]]
    area = ConditioningSetArea().append(cond, 64, 32, 8, 16, 0.5)[0]
    assert area[0][1]["area"] == (4, 8, 2, 1) and area[0][1]["strength"] == 0.5 and "area" not in cond[0][1]
    assert len(ConditioningCombine().combine(cond, area)[0]) == 2
    zero = ConditioningZeroOut().zero_out(cond)[0]
    assert zero[0][0].abs().sum() == 0 and zero[0][1]["pooled_output"].abs().sum() == 0 and cond[0][0].sum() > 0
    ranged = ConditioningSetTimestepRange().set_range(cond, 0.2, 0.6)[0]
    assert (ranged[0][1]["start_percent"], ranged[0][1]["end_percent"]) == (0.2, 0.6)


def test_inpainting_keeps_the_unmasked_latent(env):
    folders, _ = env
    from vidgraph.nodes.image_latents import SetLatentNoiseMask
    latent = {"samples": torch.randn(1, 4, 8, 8)}
    mask = torch.zeros(64, 64)
    mask[:, 32:] = 1.0
    masked = SetLatentNoiseMask().set_mask(latent, mask)[0]
    from vidgraph.engine.context import NodeContext
    from vidgraph.engine.resources import ResourceCache
    from vidgraph.nodes.ksampler import KSampler
    from vidgraph.nodes.loaders import CheckpointLoaderSimple
    from vidgraph.nodes.text_conditioning import CLIPTextEncode
    context = NodeContext("p", "1", "KSampler", folders, ResourceCache(), {"device": "cpu", "previews": False})
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny_sd1.safetensors", context)
    text = CLIPTextEncode().encode("cat", clip, context)[0]
    out = KSampler().sample(model, 3, 3, 5.0, "euler", "normal", text, text, masked, denoise=1.0, context=context)[0]
    assert torch.allclose(out["samples"][..., :3], latent["samples"][..., :3], atol=1e-4)
    assert not torch.allclose(out["samples"][..., 5:], latent["samples"][..., 5:], atol=1e-2)


def test_latent_nodes(env):
    from vidgraph.nodes.image_latents import EmptyLatentImage, LatentComposite, LatentUpscale, LatentUpscaleBy
    empty = EmptyLatentImage().generate(64, 48, 2)[0]["samples"]
    assert empty.shape == (2, 4, 6, 8) and empty.abs().sum() == 0
    x = {"samples": torch.randn(1, 4, 8, 8)}
    assert LatentUpscale().upscale(x, "bilinear", 128, 0, "disabled")[0]["samples"].shape == (1, 4, 16, 16)
    for method in ("nearest-exact", "bislerp"):
        up = LatentUpscaleBy().upscale(x, method, 2.0)[0]["samples"]
        assert up.shape == (1, 4, 16, 16) and torch.isfinite(up).all()
    same = LatentUpscaleBy().upscale(x, "bislerp", 1.0)[0]["samples"]
    assert torch.allclose(same, x["samples"], atol=1e-5)
    pasted = LatentComposite().composite({"samples": torch.zeros(1, 4, 8, 8)}, {"samples": torch.ones(1, 4, 4, 4)},
                                         16, 8, 0)[0]["samples"]
    assert pasted[0, 0, 1:5, 2:6].eq(1).all() and pasted.sum() == 4 * 16


PARITY_CHECKPOINTS = {"sd15_public_fp16.safetensors": "sd15_layout.txt",
                      "sdxl_public_small_fp16.safetensors": "sdxl_layout_small.txt",
                      "svd_public_small_fp16.safetensors": "svd_layout_small.txt"}


@pytest.mark.skipif(not os.environ.get("VIDGRAPH_PARITY"), reason="set VIDGRAPH_PARITY=1 to run ComfyUI's SD cases "
                                                                   "(minutes each, 2 GB checkpoints)")
@pytest.mark.parametrize("case", ["case1_sd15_txt2img", "case2_sdxl_txt2img", "case3_sdxl_txt2img2vid"])
def test_comfyui_parity(tmp_path, case):
    """ComfyUI 0.3.64's outputs: latents within 5e-3, images within 2 levels. VIDGRAPH_SD_MODELS may
    name a models folder that already holds the regenerated checkpoints."""
    folder = shared_path(f"reference/parity_sd/{case}")
    tools = shared_path("tools")
    workflow = (folder / "workflow_api.json").read_text()
    models = Path(os.environ.get("VIDGRAPH_SD_MODELS", tmp_path / "models"))
    for name, layout in PARITY_CHECKPOINTS.items():
        checkpoint = models / "checkpoints" / name
        if name in workflow and not checkpoint.exists():
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(tools / "make_svd_test_checkpoint.py"), "--layout",
                            str(tools / layout), "--out", str(checkpoint), "--seed", "7"], check=True)
    out = tmp_path / "out"
    run_cli = subprocess.run([str(Path(sys.executable).parent / "vidgraph"), "run", str(folder / "workflow_api.json"),
                              "--cpu", "--models-dir", str(models), "--output-dir", str(out)], capture_output=True, text=True)
    assert run_cli.returncode == 0, run_cli.stderr[-2000:]
    from PIL import Image
    from safetensors.numpy import load_file
    for reference in folder.glob("*.latent"):
        ref = load_file(str(reference))["latent_tensor"]
        mine = load_file(str(out / case / reference.name))["latent_tensor"]
        assert np.abs(ref.astype(np.float64) - mine).max() <= 5e-3, reference.name
    for reference in folder.glob("*.png"):
        a = np.asarray(Image.open(reference).convert("RGB"), dtype=np.int16)
        b = np.asarray(Image.open(out / case / reference.name).convert("RGB"), dtype=np.int16)
        assert np.abs(a - b).max() <= 2, reference.name


def custom_prompt(advanced: bool, denoise_output: bool = False):
    prompt = txt2img()
    prompt["20"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["21"] = {"class_type": "BasicScheduler", "inputs": {"model": ["4", 0], "scheduler": "normal", "steps": 3,
                                                               "denoise": 1.0}}
    if advanced:
        prompt["22"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}}
        prompt["23"] = {"class_type": "CFGGuider", "inputs": {"model": ["4", 0], "positive": ["6", 0],
                                                              "negative": ["7", 0], "cfg": 7.0}}
        prompt["3"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
            "noise": ["22", 0], "guider": ["23", 0], "sampler": ["20", 0], "sigmas": ["21", 0], "latent_image": ["5", 0]}}
    else:
        prompt["3"] = {"class_type": "SamplerCustom", "inputs": {
            "model": ["4", 0], "add_noise": True, "noise_seed": 7, "cfg": 7.0, "positive": ["6", 0], "negative": ["7", 0],
            "sampler": ["20", 0], "sigmas": ["21", 0], "latent_image": ["5", 0]}}
    if denoise_output:
        prompt["8"]["inputs"]["samples"] = ["3", 1]
    return prompt


@pytest.mark.parametrize("advanced", [False, True])
def test_custom_sampling_equals_ksampler(env, advanced):
    """SamplerCustom(Advanced) with KSampler's noise, sampler, schedule and cfg give KSampler's image."""
    plain = run(env, txt2img())
    custom = run(env, custom_prompt(advanced))
    assert custom.status == "success", custom.error
    assert (image_of(env, plain) == image_of(env, custom)).all()
    denoised = run(env, custom_prompt(advanced, denoise_output=True))
    assert denoised.status == "success", denoised.error


def test_sigma_nodes():
    from vidgraph.nodes.custom_sampling import FlipSigmas, KarrasScheduler, SplitSigmas, SplitSigmasDenoise
    sigmas = KarrasScheduler().get_sigmas(4, 14.6, 0.03, 7.0)[0]
    assert len(sigmas) == 5 and sigmas[-1] == 0 and sigmas[0] == pytest.approx(14.6)
    high, low = SplitSigmas().get_sigmas(sigmas, 2)
    assert torch.equal(high, sigmas[:3]) and torch.equal(low, sigmas[2:])
    high, low = SplitSigmasDenoise().get_sigmas(sigmas, 0.5)
    assert torch.equal(high, sigmas[:3]) and torch.equal(low, sigmas[2:])
    flipped = FlipSigmas().get_sigmas(sigmas)[0]
    assert flipped[0] == pytest.approx(0.0001) and flipped[-1] == pytest.approx(14.6)


@pytest.mark.parametrize("node, inputs", [
    ("RescaleCFG", {"multiplier": 0.7}), ("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}),
    ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False}),
])
def test_model_patch_nodes_change_the_image_and_not_the_loader_s_model(env, node, inputs):
    plain = run(env, txt2img())
    prompt = txt2img()
    prompt["30"] = {"class_type": node, "inputs": {"model": ["4", 0], **inputs}}
    prompt["3"]["inputs"]["model"] = ["30", 0]
    patched = run(env, prompt)
    assert patched.status == "success", patched.error
    assert not (image_of(env, plain) == image_of(env, patched)).all()
    assert (image_of(env, run(env, txt2img())) == image_of(env, plain)).all()


def test_rescale_cfg_with_multiplier_0_is_plain_cfg():
    from vidgraph.nodes.model_advanced import rescaled_cfg
    g = torch.Generator().manual_seed(0)
    x, cond, uncond = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    sigma = torch.tensor([3.0, 3.0])
    out = rescaled_cfg(0.0)({"cond": cond, "uncond": uncond, "cond_scale": 5.0, "input": x, "sigma": sigma})
    assert torch.allclose(out, uncond + 5.0 * (cond - uncond), atol=1e-4)
