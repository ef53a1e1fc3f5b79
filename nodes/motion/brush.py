"""The motion brush: regions that may move; everything else stays where the first frame has it.

After classifier-free guidance, at every step the predicted clean latent (x0) of frames 2..N is
pulled to frame 1's prediction by the pin weight w = 1 - max_i(strength_i * feathered mask_i):
`x0[t] = x0[t] * (1 - w) + x0[0] * w` (after the open-source SVD motion brush). Outside every
region w = 1 and the frames copy frame 1; inside a region of strength 1 nothing is changed; a
strength of 0.5 lets a region move half-way freely.

Several brushes on one MODEL combine into one pin map (the regions are kept in the MODEL's
`transformer_options`, and one post-CFG patch reads them), so chaining MotionBrush nodes adds
regions instead of pinning each other's.

With a planned video to follow (`follow`: e.g. the start image warped along a camera path), frames
are pinned to the plan's frame t instead of frame 1: the background then moves exactly with the
camera and nothing else moves in it.

The latent pin leaves the still part's latent identical to frame 1's, but the VAE decoder reads the
whole frame (its convolutions reach across the mask's edge, its normalisation spans the frame), so
the decoded still part can shift by a level or two where much of the frame moves. `hold_pixels`
(the MotionBrushComposite node) finishes the job on the decoded frames: outside the same feathered
regions they take the reference frame's pixels exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import masks
from .layout import fit_frames

OPTIONS_KEY = "vidgraph.motion_brush"
FOLLOW_KEY = "vidgraph.motion_brush.follow"    # planned latent [T, C, h, w] in the MODEL's space


@dataclass(frozen=True)
class Region:
    mask: torch.Tensor                     # [B, H, W] feathered, image resolution, CPU
    strength: float                        # how free the region is to move, 0..1
    sigma_range: tuple[float, float] | None = None   # (high, low); None = every step

    def active(self, sigma: float) -> bool:
        return self.sigma_range is None or self.sigma_range[1] <= sigma <= self.sigma_range[0]


def pin_weight(regions, frames: int, height: int, width: int, sigma: float) -> torch.Tensor | None:
    """w [frames, 1, height, width]: how strongly each latent cell is pinned to frame 1 (None when
    no region is active at this sigma)."""
    active = [r for r in regions if r.active(sigma)]
    if not active:
        return None
    free = torch.zeros(frames, height, width)
    for region in active:
        cells = masks.per_frame(masks.resample(region.mask, height, width), frames)
        free = torch.maximum(free, cells * region.strength)
    return (1.0 - free.clamp(0.0, 1.0))[:, None]


def pin_to_first_frame(denoised: torch.Tensor, weight: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """x0 [T, C, h, w] with frames 1.. pulled by weight [T, 1, h, w] to frame 0 (or to `target`'s
    frame of the same index); frame 0 unchanged."""
    weight = weight.to(denoised.device, denoised.dtype)
    weight = torch.cat([torch.zeros_like(weight[:1]), weight[1:]])
    target = denoised[:1] if target is None else target.to(denoised.device, denoised.dtype)
    return denoised * (1 - weight) + target * weight


def motion_brush_post_cfg(args: dict) -> torch.Tensor:
    """The post-CFG patch: reads the regions from the MODEL it runs on."""
    denoised = args["denoised"]
    regions = args["model"].transformer_options.get(OPTIONS_KEY, ())
    if denoised.ndim != 4 or denoised.shape[0] < 2 or not regions:
        return denoised
    sigma = float(torch.as_tensor(args["sigma"]).reshape(-1)[0])
    frames, _, h, w = denoised.shape
    weight = pin_weight(regions, frames, h, w, sigma)
    if weight is None:
        return denoised
    follow = args["model"].transformer_options.get(FOLLOW_KEY)
    return pin_to_first_frame(denoised, weight, None if follow is None else fit_frames(follow, frames, h, w))


def hold_pixels(images: torch.Tensor, mask: torch.Tensor, strength: float, feather_pixels: int,
                reference: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded frames [T, H, W, C] held to `reference` (default: frame 1) outside the feathered mask:
    `out = images * free + reference * (1 - free)`, free = strength * feathered mask (the brush's pin
    weight at pixel resolution). A mask batch is matched to frames in order; a reference batch gives
    frame t its own held frame (e.g. the start image warped along a camera path)."""
    frames, height, width = images.shape[:3]
    reference = images[:1] if reference is None else reference
    if reference.shape[1:] != images.shape[1:]:
        raise ValueError(f"reference is {list(reference.shape[1:])} (height, width, channels), the frames "
                         f"{list(images.shape[1:])}")
    free = masks.feather(mask, feather_pixels)
    if free.shape[-2:] != (height, width):
        free = masks.resample(free, height, width)
    free = (masks.per_frame(free, frames) * float(strength)).clamp(0.0, 1.0)[..., None].to(images.dtype)
    return images * free + masks.per_frame(reference, frames).to(images.dtype) * (1 - free)


def add_region(model, mask, strength: float, feather_pixels: int, sigma_range=None, follow=None):
    """A clone of `model` with one more motion-brush region (the patch registered on the first);
    `follow`: a planned latent (MODEL space) to pin to instead of frame 1 (the last one given wins)."""
    m = model.clone()
    if follow is not None:
        m.transformer_options[FOLLOW_KEY] = follow
    regions = tuple(m.transformer_options.get(OPTIONS_KEY, ()))
    if not regions:
        m.add_post_cfg(motion_brush_post_cfg)
    region = Region(masks.feather(mask, feather_pixels), float(strength), sigma_range)
    m.transformer_options[OPTIONS_KEY] = regions + (region,)
    return m
