"""Bad input to the SD family's nodes (issue 10, part 5): a checkpoint of an unknown architecture names
what it holds, a prompt-weight syntax error names the node, input and position (SDXL's two prompts
too), and a latent of another latent space (an SDXL latent given to SVD, an SVD latent to SDXL) is an
error naming the sampler's latent input."""
import pytest
import torch
from safetensors.torch import save_file

from vidgraph.engine.executor import Executor
from vidgraph.nodes.sd.tiny import tiny_sd_state_dict, write_tiny_sd_checkpoint
from vidgraph.nodes.svd.tiny import write_tiny_checkpoint
from vidgraph.runtime import build_registry

from sd_shared import model_folders

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folders = model_folders(tmp_path_factory.mktemp("sd-bad"))
    checkpoints = folders.models_dir / "checkpoints"
    write_tiny_sd_checkpoint(checkpoints / "tiny_sdxl.safetensors", "sdxl")
    write_tiny_sd_checkpoint(checkpoints / "tiny_sd1.safetensors", "sd1")
    write_tiny_checkpoint(checkpoints / "tiny_svd.safetensors")
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(9, 3), "img_in.weight": torch.zeros(3, 64)},
              str(checkpoints / "flux_like.safetensors"))
    odd = {k: (torch.zeros(v.shape[0], 4096) if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) else v)
           for k, v in tiny_sd_state_dict("sd1", dtype=torch.float16).items() if not k.startswith("cond_stage_model.")}
    save_file(odd, str(checkpoints / "odd_unet.safetensors"))
    return folders, build_registry(folders)


def run(env, prompt):
    folders, registry = env
    return Executor(registry, folders, settings={"device": "cpu", "previews": False}).run(prompt)


def error_of(result) -> str:
    assert result.status == "error"
    return result.error["exception_message"]


def loader(name):
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def test_an_unknown_architecture_names_its_key_prefixes_and_shapes(env):
    message = error_of(run(env, loader("flux_like.safetensors")))
    assert message.startswith("CheckpointLoaderSimple: input 'ckpt_name': 'flux_like.safetensors' is not a checkpoint")
    assert "double_blocks.0.* (1)" in message and "img_in.weight [3, 64]" in message and "Flux" in message


def test_an_sd_unet_of_unknown_family_names_the_shapes_that_decide_it(env):
    message = error_of(run(env, loader("odd_unet.safetensors")))
    assert message.startswith("CheckpointLoaderSimple: input 'ckpt_name': ")
    assert "text width 4096" in message and "attn2.to_k.weight [32, 4096]" in message
    assert "input_blocks.0.0.weight [32, 4, 3, 3]" in message and "first_stage_model." in message


def text_to_image(ckpt, text_g="a cat", text_l="a cat"):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["1", 1], "width": 64, "height": 64, "crop_w": 0, "crop_h": 0, "target_width": 64,
            "target_height": 64, "text_g": text_g, "text_l": text_l}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "4": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}},
    }


def test_a_prompt_weight_syntax_error_in_sdxl_s_second_prompt_names_it(env):
    message = error_of(run(env, text_to_image("tiny_sdxl.safetensors", text_l="fine (red:1.2) ball ((oops")))
    assert message.startswith("CLIPTextEncodeSDXL: input 'text_l': prompt weight syntax") and message.endswith("at character 22")


def svd_from(latent_source: list, extra: dict | None = None) -> dict:
    """An SVD sampler whose latent_image comes from `latent_source`; the still is an SDXL image."""
    prompt = text_to_image("tiny_sdxl.safetensors")
    prompt.update({
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]}},
        "11": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": "tiny_svd.safetensors"}},
        "12": {"class_type": "SVD_img2vid_Conditioning", "inputs": {
            "clip_vision": ["11", 1], "init_image": ["10", 0], "vae": ["11", 2], "width": 64, "height": 64,
            "video_frames": 2, "motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0}},
        "13": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["11", 0], "positive": ["12", 0], "negative": ["12", 1], "latent_image": latent_source}},
        "14": {"class_type": "PreviewAny", "inputs": {"source": ["13", 0]}},
    })
    prompt.update(extra or {})
    return prompt


def test_an_sdxl_latent_given_to_svd_is_refused_naming_the_input(env):
    message = error_of(run(env, svd_from(["4", 0])))   # the SDXL sampler's latent, not SVD's
    assert message.startswith("KSampler: input 'latent_image': this LATENT is in SDXL's latent space")
    assert "svd MODEL" in message
    encoded = {"15": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["1", 2]}}}
    message = error_of(run(env, svd_from(["15", 0], encoded)))   # encoded with SDXL's VAE
    assert message.startswith("KSampler: input 'latent_image': this LATENT is in SDXL's latent space")
    assert run(env, svd_from(["12", 2])).status == "success"   # SVD's own latent


def test_an_svd_latent_given_to_sdxl_is_refused_naming_the_input(env):
    prompt = svd_from(["12", 2])
    prompt["16"] = {"class_type": "KSampler", "inputs": {
        "seed": 1, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 0], "latent_image": ["13", 0]}}
    prompt["17"] = {"class_type": "PreviewAny", "inputs": {"source": ["16", 0]}}
    message = error_of(run(env, prompt))
    assert message.startswith("KSampler: input 'latent_image': this LATENT is in SD's (SD 1.x / 2.x, SVD) latent "
                              "space, but this sdxl MODEL samples in SDXL's")
    # an SD 1.x model shares SVD's latent space: no error from the space check
    prompt["20"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}}
    prompt["21"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["20", 1]}}
    prompt["16"]["inputs"].update(model=["20", 0], positive=["21", 0], negative=["21", 0])
    assert run(env, prompt).status == "success"
