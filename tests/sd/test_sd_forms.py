"""The SD forms beyond SD 1.5 / SDXL base: SD 2.x (v-prediction, OpenCLIP-H), the SDXL refiner (bigG alone,
aesthetic score) and the 9-channel inpainting UNet, from tiny checkpoints in the real layouts and, for
SD 2.x 768-v, its full key layout (derived from SD 1.5's reference layout, the differences being facts:
linear projections, a 1024-wide context, the OpenCLIP-H tower)."""
import pytest
import torch

from vidgraph.engine.context import NodeContext
from vidgraph.engine.executor import Executor
from vidgraph.engine.resources import ResourceCache
from vidgraph.nodes.sd.checkpoint import detect_family, prediction_of
from vidgraph.nodes.sd.clip_text import OPENCLIP_H, CLIPTextModel, config_from_state_dict as clip_config
from vidgraph.nodes.sd.network import BLANK_INPAINT_LATENT
from vidgraph.nodes.sd.tiny import hf_to_openclip, write_tiny_sd_checkpoint
from vidgraph.nodes.sd.unet import UNet, UNetConfig, config_from_state_dict
from vidgraph.nodes.weights import DictSource
from vidgraph.runtime import build_registry

from sd_shared import model_folders, read_layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")
UNET = "model.diffusion_model."


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folders = model_folders(tmp_path_factory.mktemp("sd-forms"))
    checkpoints = folders.models_dir / "checkpoints"
    for name, family, inpaint in (("tiny_sd2.safetensors", "sd2", False), ("tiny_refiner.safetensors", "sdxl_refiner", False),
                                  ("tiny_inpaint.safetensors", "sd1", True)):
        write_tiny_sd_checkpoint(checkpoints / name, family, inpaint=inpaint)
    return folders, build_registry(folders)


def run(env, prompt):
    folders, registry = env
    return Executor(registry, folders, settings={"device": "cpu", "previews": False}).run(prompt)


def sd2_768_v_layout() -> dict:
    """v2-1_768-ema-pruned's keys and shapes: SD 1.5's UNet keys with linear proj_in/proj_out and a 1024-wide
    text context, its VAE, and OpenCLIP ViT-H/14 under cond_stage_model.model. (OpenCLIP names)."""
    layout = {}
    for key, shape in read_layout("tools/sd15_layout.txt").items():
        if key.startswith("cond_stage_model."):
            continue
        if key.startswith(UNET) and (".proj_in.weight" in key or ".proj_out.weight" in key):
            shape = shape[:2]
        if key.startswith(UNET) and key.endswith(("attn2.to_k.weight", "attn2.to_v.weight")):
            shape = (shape[0], 1024)
        layout[key] = shape
    with torch.device("meta"):
        tower = CLIPTextModel(OPENCLIP_H)
    shapes = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    shapes["text_projection.weight"] = (1024, 1024)
    openclip = hf_to_openclip({k: torch.empty(v, device="meta") for k, v in shapes.items()})
    layout.update({"cond_stage_model.model." + k: tuple(v.shape) for k, v in openclip.items()})
    return layout


def test_sd2_768_v_layout_is_detected_and_built_key_for_key():
    layout = sd2_768_v_layout()
    unet_shapes = {k[len(UNET):]: v for k, v in layout.items() if k.startswith(UNET)}
    cfg = config_from_state_dict(unet_shapes)
    assert (cfg.context_dim, cfg.num_head_channels, cfg.use_linear_in_transformer, cfg.channel_mult) == (1024, 64, True, (1, 2, 4, 4))
    assert detect_family(cfg, {"h"}) == detect_family(cfg, set()) == "sd2"
    with torch.device("meta"):
        assert {k: tuple(v.shape) for k, v in UNet(cfg).state_dict().items()} == unet_shapes
    from vidgraph.nodes.sd.clip_text import openclip_to_hf
    tower = openclip_to_hf({k[len("cond_stage_model.model."):]: v for k, v in layout.items() if k.startswith("cond_stage_model.")})
    h = clip_config(tower, activation="gelu")
    assert (h.width, h.layers, h.heads, h.mlp_dim) == (1024, 24, 16, 4096)


@pytest.mark.parametrize("spread, expected", [(0.2, "v"), (0.01, "eps")])
def test_sd2_v_prediction_is_read_from_the_late_norm_s_spread(spread, expected):
    """No key says v-prediction in SD 2.x files: ComfyUI's rule, the std of one late norm's bias."""
    bias = torch.randn(1280, generator=torch.Generator().manual_seed(0)) * spread
    source = DictSource({UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias": bias}, "sd2.safetensors")
    assert prediction_of(source, "sd2") == (expected, False)


def test_the_sdxl_refiner_s_unet_is_known_by_its_widths():
    cfg = UNetConfig(model_channels=384, channel_mult=(1, 2, 4, 4), transformer_depth=(0, 4, 4, 0),
                     transformer_depth_middle=4, num_heads=-1, num_head_channels=64, context_dim=1280,
                     use_linear_in_transformer=True, adm_in_channels=2560)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in UNet(cfg).state_dict().items()}
    detected = config_from_state_dict(shapes)
    assert detected.adm_in_channels == 2560 and detect_family(detected, set()) == "sdxl_refiner"


def text_to_image(ckpt, encoder, seed=1):
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": encoder,
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": 2, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "forms"}},
    }


def latent_of(env, result):
    from safetensors.torch import load_file
    folders, _ = env
    entry = result.outputs["6"]["latents"][0]
    return load_file(str(folders.output_dir / entry["subfolder"] / entry["filename"]))["latent_tensor"]


def test_sd2_v_prediction_runs_and_is_sampled_as_v(env):
    folders, _ = env
    context = NodeContext("p", "1", "x", folders, ResourceCache(), {"device": "cpu"})
    from vidgraph.nodes.loaders import CheckpointLoaderSimple
    model, clip, _ = CheckpointLoaderSimple().load_checkpoint("tiny_sd2.safetensors", context)
    assert type(model.sampling).__name__ == "VPrediction" and [t.name for t in clip.towers] == ["h"]
    encoder = {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle", "clip": ["1", 1]}}
    result = run(env, text_to_image("tiny_sd2.safetensors", encoder))
    assert result.status == "success", result.error
    assert latent_of(env, result).abs().max() > 0.1


def test_sdxl_refiner_runs_and_its_aesthetic_score_reaches_the_unet(env):
    def refiner(score):
        return {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {
            "ascore": score, "width": 64, "height": 64, "text": "a castle", "clip": ["1", 1]}}
    high = run(env, text_to_image("tiny_refiner.safetensors", refiner(6.0)))
    low = run(env, text_to_image("tiny_refiner.safetensors", refiner(2.5)))
    assert high.status == "success" and low.status == "success", (high.error, low.error)
    assert not torch.allclose(latent_of(env, high), latent_of(env, low))


def test_inpainting_unet_gets_the_mask_and_the_masked_latent(env):
    folders, _ = env
    context = NodeContext("p", "1", "x", folders, ResourceCache(), {"device": "cpu"})
    from vidgraph.nodes.loaders import CheckpointLoaderSimple
    model = CheckpointLoaderSimple().load_checkpoint("tiny_inpaint.safetensors", context)[0]
    network = model.network
    assert network.inpainting and network.check_latent((1, 4, 8, 8)) is None
    assert network.check_latent((1, 9, 8, 8)) is not None
    cond = torch.randn(1, 77, 64)
    latent, mask = torch.randn(1, 4, 8, 8), (torch.rand(1, 4, 8, 8) > 0.5).float() * 0.9
    c = network.conditioning(cond, {"latent_image": latent, "denoise_mask": mask}, (2, 4, 8, 8), "cpu")
    assert c["concat"].shape == (2, 5, 8, 8)
    assert torch.equal(c["concat"][:, :1], mask[:1, :1].round().expand(2, 1, 8, 8))
    assert torch.equal(c["concat"][:, 1:], latent.expand(2, 4, 8, 8))
    blank = network.conditioning(cond, {}, (1, 4, 8, 8), "cpu")["concat"]
    assert torch.equal(blank[0, 0], torch.ones(8, 8)) and torch.allclose(blank[0, 1:, 0, 0], torch.tensor(BLANK_INPAINT_LATENT))
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0])
    from vidgraph.nodes.model import CallOptions, Patches
    options = CallOptions(Patches(), torch.tensor([5.0, 5.0]), [0], (2, 4, 8, 8))
    with torch.no_grad():
        out = network(x, t, options, **c)
        direct = network.module(torch.cat([x, c["concat"]], dim=1), t, c["context"])
    assert torch.equal(out, direct)


def test_inpainting_workflow_with_vae_encode_for_inpaint(env, tmp_path):
    """LoadImage -> VAEEncodeForInpaint -> KSampler on the 9-channel model: runs; the pixels outside the mask
    reach the repainted region through the masked latent (they change what is painted inside)."""
    import numpy as np
    from PIL import Image
    folders, _ = env

    def image(value):
        pixels = np.full((64, 64, 4), value, dtype=np.uint8)
        pixels[:, 32:, 3] = 0   # the right half transparent: LoadImage's mask (1 - alpha) repaints it
        Image.fromarray(pixels, "RGBA").save(folders.input_dir / f"inpaint_{value}.png")
        return f"inpaint_{value}.png"

    def prompt(name):
        graph = text_to_image("tiny_inpaint.safetensors", {"class_type": "CLIPTextEncode", "inputs": {
            "text": "a window", "clip": ["1", 1]}})
        graph["7"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        graph["8"] = {"class_type": "VAEEncodeForInpaint", "inputs": {
            "pixels": ["7", 0], "vae": ["1", 2], "mask": ["7", 1], "grow_mask_by": 0}}
        graph["5"]["inputs"]["latent_image"] = ["8", 0]
        return graph
    dark, light = run(env, prompt(image(40))), run(env, prompt(image(220)))
    assert dark.status == "success" and light.status == "success", (dark.error, light.error)
    a, b = latent_of(env, dark), latent_of(env, light)
    assert (a[..., 5:] - b[..., 5:]).abs().max() > 1e-2
