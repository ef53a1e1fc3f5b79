"""Shared material for the SD tests: the reference layouts and ComfyUI outputs, found as
bench/reference.py says (VIDGRAPH_SHARED, or a `shared` folder beside the checkout); tests that need
them skip, saying why, without them."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "vidgraph_bench_reference", Path(__file__).resolve().parents[2] / "bench" / "reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def shared_path(relative: str) -> Path:
    path, reason = reference.shared_path(relative)
    if path is None:
        pytest.skip(reason)
    return path


def read_layout(relative: str) -> dict:
    """key -> shape from a `key<TAB>[shape]` layout file."""
    layout = {}
    for line in shared_path(relative).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return layout


def model_folders(base) -> "Folders":
    """Folders under `base` with empty checkpoints/ and loras/ model folders."""
    from vidgraph.engine.folders import Folders
    folders = Folders(base_dir=base)
    folders.ensure_dirs()
    for folder in ("checkpoints", "loras"):
        (folders.models_dir / folder).mkdir(parents=True, exist_ok=True)
    return folders


def diffusers_modules(models) -> dict:
    """diffusers / transformers modules holding the weights of vidgraph's loaded SD models (`SDModels`):
    {"unet", "vae", "text_encoder" and/or "text_encoder_2"}; the UNet's GroupNorms take ldm's eps (1e-5 but in the
    transformers' input norm)."""
    import torch
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    from vidgraph.nodes.svd import vae as vae_mod
    from vidgraph.nodes.svd.convert import unet_key_map

    unet = models.model.network.module
    cfg = unet.config
    levels = len(cfg.channel_mult)
    attn = [cfg.depth_down(i) > 0 for i in range(levels)]
    xl = bool(cfg.adm_in_channels)
    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=cfg.adm_in_channels) if xl else {}
    ref = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        block_out_channels=tuple(cfg.model_channels * m for m in cfg.channel_mult), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attn[::-1]),
        attention_head_dim=tuple(cfg.heads(cfg.model_channels * m)[0] for m in cfg.channel_mult),
        transformer_layers_per_block=tuple(max(1, cfg.depth_down(i)) for i in range(levels)),
        cross_attention_dim=cfg.context_dim, use_linear_projection=cfg.use_linear_in_transformer,
        norm_num_groups=32, **extra)
    for name, module in ref.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and not name.endswith(".norm"):
            module.eps = 1e-5
    mine = unet.state_dict()
    ref.load_state_dict({d: mine[o].float() for d, o in unet_key_map(ref.state_dict().keys()).items()})
    out = {"unet": ref.eval()}
    vcfg = models.vae.config
    vae = diffusers.AutoencoderKL(block_out_channels=tuple(vcfg.ch * m for m in vcfg.ch_mult),
                                  layers_per_block=vcfg.num_res_blocks, latent_channels=vcfg.z_channels,
                                  down_block_types=("DownEncoderBlock2D",) * len(vcfg.ch_mult),
                                  up_block_types=("UpDecoderBlock2D",) * len(vcfg.ch_mult), norm_num_groups=32)
    original = models.vae.state_dict()
    vae.load_state_dict({k: original[k if k.startswith(("quant_conv.", "post_quant_conv."))
                                     else vae_mod._diffusers_key(k, len(vcfg.ch_mult))].reshape(v.shape).float()
                         for k, v in vae.state_dict().items()})
    out["vae"] = vae.eval()
    for sub, tower in zip(("text_encoder", "text_encoder_2") if len(models.clip.towers) == 2 else ("text_encoder_2",)
                          if models.clip.towers[0].name == "g" else ("text_encoder",), models.clip.towers):
        tcfg = tower.model.config
        hf_cfg = transformers.CLIPTextConfig(
            vocab_size=tcfg.vocab_size, hidden_size=tcfg.width, intermediate_size=tcfg.mlp_dim, num_hidden_layers=tcfg.layers,
            num_attention_heads=tcfg.heads, max_position_embeddings=tcfg.max_positions, hidden_act=tcfg.activation,
            projection_dim=tcfg.width, eos_token_id=49407)
        cls = transformers.CLIPTextModelWithProjection if tcfg.projection else transformers.CLIPTextModel
        hf = cls(hf_cfg)
        state = tower.model.state_dict()
        hf.load_state_dict({k: state[k.removeprefix("text_model.")].float() for k in hf.state_dict()
                            if not k.endswith("position_ids")}, strict=False)
        out[sub] = hf.eval()
    return out


def write_diffusers_folder(models, folder, prediction_type: str = "epsilon", pipeline: str = "StableDiffusionPipeline"):
    """`diffusers_modules(models)` saved by diffusers / transformers themselves as a pipeline folder:
    model_index.json, unet/, vae/, text_encoder/ (and text_encoder_2/), scheduler/."""
    import json
    diffusers = pytest.importorskip("diffusers")
    for sub, module in diffusers_modules(models).items():
        module.save_pretrained(folder / sub)
    diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                     prediction_type=prediction_type).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline, "_diffusers_version": "0.30.0"}))
    return folder
