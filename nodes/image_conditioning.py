"""SVD's conditioning on a start image, for SVD_img2vid_Conditioning and the long-clip nodes: the image's
CLIP vision embedding, its VAE latent, and the fps / motion / augmentation micro-conditioning.

The CONDITIONING is ComfyUI's: ``[[clip_embedding [1,1,D], {"concat_latent_image": raw latent [1,4,h,w],
"fps", "motion_bucket_id", "augmentation_level"}]]``. The negative has a zeroed embedding and a zeroed
concat latent but the same micro-conditioning, because SVD's unconditional branch only drops the image.
"""
from __future__ import annotations

import torch

from .common import check_fits_in_memory
from .model import LATENT_SPACE_KEY, SD15_LATENT
from .model_management import resident
from .resizing import resize
from .vae_coding import encode_pixels


def encode_clip_vision(clip_vision, image: torch.Tensor, context, crop: bool = True):
    """The CLIP_VISION_OUTPUT with its tensors on the CPU, where intermediates live (as in ComfyUI):
    a cached result must not hold GPU memory."""
    with resident(clip_vision, context.settings, context.resources):
        out = clip_vision.encode_image(image, crop=crop)
    return type(out)({k: v.to("cpu") if isinstance(v, torch.Tensor) else v for k, v in out.items()})


def svd_image_conditioning(clip_vision, image: torch.Tensor, vae, width: int, height: int, video_frames: int,
                           micro: dict, context, node: str):
    """(positive, negative, an empty video LATENT) for `video_frames` frames of width x height from the
    start image [1,H,W,C] (callers check the models and the image); `micro` holds motion_bucket_id,
    fps and augmentation_level."""
    scale = getattr(vae, "downscale", 8)  # 8 for SVD's VAE; the trained tiny model's is 4
    latent_shape = (video_frames, 4, height // scale, width // scale)
    check_fits_in_memory(latent_shape, node, "video_frames")
    embedding = encode_clip_vision(clip_vision, image, context).image_embeds.unsqueeze(0)
    pixels = resize(image.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)
    pixels = pixels[..., :3]
    if micro["augmentation_level"] > 0:
        # Drawn from torch's global generator, exactly where ComfyUI draws it: an upstream
        # ImageAddNoise (or KSampler) seeds it, which is what makes such workflows repeatable.
        pixels = pixels + torch.randn_like(pixels) * micro["augmentation_level"]
    concat = encode_pixels(vae, pixels, context)
    positive = [[embedding, {**micro, "concat_latent_image": concat}]]
    negative = [[torch.zeros_like(embedding), {**micro, "concat_latent_image": torch.zeros_like(concat)}]]
    return positive, negative, {"samples": torch.zeros(latent_shape), LATENT_SPACE_KEY: SD15_LATENT.space}
