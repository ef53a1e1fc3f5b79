"""Layout guidance: a planned video (the first frame warped along a camera path, VAE-encoded) sets
the layout of the high-noise steps, after CamTrol (arXiv 2406.10126) without its 3-D lift.

CamTrol noises its renders to an early timestep and lets the model denoise from there. Here the
same prior enters as a post-CFG patch limited to the high-noise sigma range: there the predicted
clean latent is pulled towards the planned frames, `x0 = x0 * (1 - s * m) + layout * s * m`
(m = where the warp had source pixels), so the coarse structure follows the path and the model
is free to fill in detail, disocclusions and anything outside the plan once the range ends.
"""
from __future__ import annotations

import torch

from . import masks


def layout_post_cfg(layout: torch.Tensor, strength: float, valid: torch.Tensor | None = None):
    """The patch. layout: the planned latent [T, C, h, w] in the MODEL's space (already scaled);
    valid: MASK [T or 1, H, W] at any resolution (1 = planned), None = everywhere."""
    cache = {}

    def guide(args):
        denoised = args["denoised"]
        key = tuple(denoised.shape)
        if key not in cache:
            frames, _, h, w = denoised.shape
            plan = fit_frames(layout, frames, h, w)
            weight = torch.full((frames, 1, h, w), float(strength))
            if valid is not None:
                weight = weight * masks.per_frame(masks.resample(valid, h, w), frames)[:, None]
            cache.clear()
            cache[key] = (plan, weight)
        plan, weight = cache[key]
        plan, weight = plan.to(denoised.device, denoised.dtype), weight.to(denoised.device, denoised.dtype)
        return denoised * (1 - weight) + plan * weight
    return guide


def fit_frames(latent: torch.Tensor, frames: int, h: int, w: int) -> torch.Tensor:
    """The planned latent with `frames` rows at h x w (frames matched in order, the last one held)."""
    latent = latent.float()
    if tuple(latent.shape[-2:]) != (h, w):
        latent = torch.nn.functional.interpolate(latent, size=(h, w), mode="bilinear", align_corners=False)
    return masks.per_frame(latent, frames)
