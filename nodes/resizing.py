"""Resizing image batches [B, C, H, W] as ComfyUI's `common_upscale` does: torch's interpolation modes,
Pillow's lanczos on 8-bit pixels, and an optional centre crop to the target's aspect ratio first."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .image_io import tensor_to_pil

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]


def center_crop_to_aspect(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [B,C,H,W] symmetrically to the aspect ratio of width x height."""
    old_h, old_w = samples.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return samples[..., y:old_h - y, x:old_w - x]


def resize(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize [B,C,H,W] to height x width; `crop="center"` keeps the aspect ratio by cropping first."""
    if crop == "center":
        samples = center_crop_to_aspect(samples, width, height)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    return F.interpolate(samples, size=(height, width), mode=method)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    # Pillow's filter on 8-bit pixels, as ComfyUI does it (torch has no lanczos).
    from PIL import Image

    out = []
    for s in samples:
        picture = tensor_to_pil(s.movedim(0, -1)).resize((width, height), Image.Resampling.LANCZOS)
        array = np.asarray(picture, dtype=np.float32) / 255.0
        out.append(torch.from_numpy(array.reshape(height, width, -1)).movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)
