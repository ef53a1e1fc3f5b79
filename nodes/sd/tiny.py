"""Tiny random-weight SD checkpoints in the real single-file key layouts (tests, demos).

Families: "sd1" (v1-5-pruned-emaonly: CLIP-L in Hugging Face names), "sd2" (v2-1_768-ema-pruned: OpenCLIP-H
under `cond_stage_model.model.` in OpenCLIP names, linear projections, a `v_pred` marker key since a tiny
UNet has no output block 11 for the v-prediction rule), "sdxl" (sd_xl_base_1.0: CLIP-L and bigG), "sdxl_refiner"
(sd_xl_refiner_1.0: bigG alone under `conditioner.embedders.0.model.`, aesthetic-score vector), and
`inpaint=True` for a 9-channel inpainting UNet (sd-v1-5-inpainting). UNet, VAE with quant convs, OpenCLIP
towers with packed q/k/v, so a tiny file takes exactly the loading path a real one takes. Widths are small;
the vocabulary is the real one, so prompts really change the conditioning.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..svd.vae import VAE, VAEConfig
from .clip_text import CLIPTextConfig, CLIPTextModel
from .unet import UNet, UNetConfig

TINY_L = CLIPTextConfig(width=64, layers=2, heads=1, mlp_dim=128)
TINY_G = CLIPTextConfig(width=96, layers=2, heads=1, mlp_dim=128, activation="gelu", projection=True)
TINY_SD1_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(1, 0), transformer_depth_middle=1,
                           num_heads=2, context_dim=TINY_L.width)
TINY_SDXL_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(0, 2), transformer_depth_middle=2,
                            num_heads=-1, num_head_channels=32, context_dim=TINY_L.width + TINY_G.width,
                            use_linear_in_transformer=True, adm_in_channels=TINY_G.width + 6 * 256)
TINY_H = CLIPTextConfig(width=80, layers=2, heads=1, mlp_dim=128, activation="gelu", projection=True)
TINY_SD2_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(1, 0), transformer_depth_middle=1,
                           num_heads=-1, num_head_channels=64, context_dim=TINY_H.width, use_linear_in_transformer=True)
TINY_REFINER_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(0, 2), transformer_depth_middle=2,
                               num_heads=-1, num_head_channels=32, context_dim=TINY_G.width,
                               use_linear_in_transformer=True, adm_in_channels=TINY_G.width + 5 * 256)
TINY_SD_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, temporal=False, quant_conv=True,
                        post_quant_conv=True)
PREFIXES = {"sd1": {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                    "l": "cond_stage_model.transformer.text_model."},
            "sd2": {"unet": "model.diffusion_model.", "vae": "first_stage_model.", "h": "cond_stage_model.model."},
            "sdxl": {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                     "l": "conditioner.embedders.0.transformer.text_model.", "g": "conditioner.embedders.1.model."},
            "sdxl_refiner": {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
                             "g": "conditioner.embedders.0.model."}}
UNETS = {"sd1": TINY_SD1_UNET, "sd2": TINY_SD2_UNET, "sdxl": TINY_SDXL_UNET, "sdxl_refiner": TINY_REFINER_UNET}
TOWERS = {"l": TINY_L, "h": TINY_H, "g": TINY_G}


def hf_to_openclip(sd: dict) -> dict:
    """Hugging Face text-tower names -> OpenCLIP's (q/k/v packed, projection as x @ P)."""
    out = {}
    layers = {}
    for key, value in sd.items():
        if key.startswith("encoder.layers."):
            _, _, n, rest = key.split(".", 3)
            base = f"transformer.resblocks.{n}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                layers.setdefault((n, rest.rsplit(".", 1)[1]), {})[rest.split(".")[1][0]] = value
                continue
            rest = (rest.replace("self_attn.out_proj.", "attn.out_proj.").replace("layer_norm1.", "ln_1.")
                    .replace("layer_norm2.", "ln_2.").replace("mlp.fc1.", "mlp.c_fc.").replace("mlp.fc2.", "mlp.c_proj."))
            out[base + rest] = value
        elif key == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = value
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = value
        elif key.startswith("final_layer_norm."):
            out["ln_final." + key.split(".", 1)[1]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
    for (n, kind), parts in layers.items():
        out[f"transformer.resblocks.{n}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    out["logit_scale"] = torch.tensor(4.6052)
    return out


def tiny_sd_state_dict(family: str = "sd1", seed: int = 0, dtype: torch.dtype = torch.float16,
                       inpaint: bool = False) -> dict:
    if family not in PREFIXES:
        raise ValueError(f"tiny checkpoints exist for {sorted(PREFIXES)}, not {family!r}")
    prefixes = PREFIXES[family]
    unet_cfg = replace(UNETS[family], in_channels=9) if inpaint else UNETS[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts = {"unet": UNet(unet_cfg), "vae": VAE(TINY_SD_VAE)}
        for name in ("l", "h", "g"):
            if name in prefixes:
                parts[name] = CLIPTextModel(TOWERS[name])
        with torch.no_grad():
            for name in ("l", "h", "g"):
                if name in parts:
                    for key, p in parts[name].named_parameters():
                        if "embedding" in key:
                            p.normal_(0.0, 0.02)
        sd = {}
        for name, module in parts.items():
            tensors = module.state_dict()
            if name in ("h", "g"):
                tensors = hf_to_openclip(tensors)
            sd.update({prefixes[name] + k: v.to(dtype).contiguous() for k, v in tensors.items()})
    if family == "sd2":
        sd["v_pred"] = torch.tensor([])
    return sd


def write_tiny_sd_checkpoint(path, family: str = "sd1", seed: int = 0, dtype: torch.dtype = torch.float16,
                             inpaint: bool = False) -> str:
    """Write a tiny SD checkpoint of `family` (a few MB) to `path` atomically; returns the path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tiny_sd_state_dict(family, seed, dtype, inpaint), str(tmp), metadata={"format": "pt"})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)
