"""A tiny random-weight SVD checkpoint in the real single-file key layout, for tests and the demo.

Same prefixes and key pattern as svd_xt.safetensors (UNet, temporal VAE, OpenCLIP vision tower,
plus one ignorable text-tower leftover), so it takes exactly the loading path a real file takes.
"""
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .checkpoint import CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX
from .clip_vision import CLIPVision, CLIPVisionConfig
from .unet import UNetConfig, VideoUNet
from .vae import VAE, VAEConfig

TINY_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(1,), context_dim=64)
# Four levels: the latent stays 1/8 of the image, as with the real VAE.
TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=2)
TINY_CLIP = CLIPVisionConfig(width=64, layers=2, heads=1, mlp_dim=256, patch_size=14, image_size=224, output_dim=64)


def random_clip_vision(cfg: CLIPVisionConfig) -> CLIPVision:
    """A tower with OpenCLIP's initialisation (from torch's current random state)."""
    clip = CLIPVision(cfg)
    with torch.no_grad():  # the tower creates these with torch.empty: give them OpenCLIP's init
        for name, p in clip.named_parameters():
            if name.endswith(("in_proj_weight", "class_embedding", "positional_embedding", "proj")):
                p.normal_(0.0, cfg.width ** -0.5)
            elif name.endswith("in_proj_bias"):
                p.zero_()
    return clip


def svd_state_dict(unet: VideoUNet, vae: VAE, clip: CLIPVision, dtype: torch.dtype = torch.float16) -> dict:
    """The three models under their original single-file prefixes, in `dtype`."""
    parts = {UNET_PREFIX: unet, VAE_PREFIX: vae, CLIP_PREFIX: clip}
    return {prefix + key: tensor.detach().to(dtype).contiguous()
            for prefix, module in parts.items() for key, tensor in module.state_dict().items()}


def tiny_state_dict(seed: int = 0, dtype: torch.dtype = torch.float16) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = random_clip_vision(TINY_CLIP)
        sd = svd_state_dict(VideoUNet(TINY_UNET), VAE(TINY_VAE), clip, dtype)
        sd["conditioner.embedders.0.open_clip.model.logit_scale"] = torch.tensor(4.6052, dtype=dtype)
    return sd


def save_single_file(path, state_dict: dict, metadata: dict | None = None) -> str:
    """Write a safetensors file through a temp file in the same folder: an interrupted write leaves no
    truncated file under the final name (the demo writes its checkpoint only when the name is missing)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(state_dict, str(tmp), metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return str(path)


def write_tiny_checkpoint(path, seed: int = 0, dtype: torch.dtype = torch.float16) -> str:
    """Write the tiny random checkpoint (about 5 MB in fp16) to `path`; returns the path."""
    return save_single_file(path, tiny_state_dict(seed, dtype))
