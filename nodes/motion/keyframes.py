"""Keyframes and loops: a clip that starts on one image and ends on another (start = end: a loop).

Method: ViBiDSampler (arXiv 2410.05651), chosen over Time Reversal Fusion (arXiv 2403.14611):
- quality: ViBiD reports lower LPIPS, FID and FVD than Time Reversal Fusion on the same benchmarks;
- mechanism: its two passes are sequential on one latent (the end-conditioned pass starts from what
  the start-conditioned pass produced), where TRF averages two separately denoised paths, which
  blurs where they disagree and needs noise re-injection to recover;
- fit: one latent through the sampler, so it is a denoise wrapper that works under every sampler
  and scheduler and composes with the other patches; TRF needs a second latent carried across steps;
- cost: the same, two guided predictions per step.

One step from x at sigma to sigma_next, as the paper does it, in EDM form:
  1. x0 = D(x, sigma | start image);  z = x0 + sigma_next * (x - x0) / sigma       (an Euler/DDIM step)
  2. re-noise back to sigma:  z' = z + sqrt(sigma^2 - sigma_next^2) * n            (n seeded per step)
  3. flip the frame order, x0' = D(flip(z'), sigma | end image), flip back.
The sampler then steps from z' with denoised flip(x0') (`guidance.denoised_for_moved_latent`: exact
for first-order samplers). CFG++ and DDS, which the paper adds on top, are not applied.

A loop (the end conditioning is the start's own: same image, same embedding) also ties the two end
frames: both take the mean of their x0 at every step, so the clip ends on the frame it starts on
rather than on a second rendering of the same image, which a small model draws a few levels apart.
"""
from __future__ import annotations

import math

import torch


def step_noise(shape, seed, step: int, device, dtype) -> torch.Tensor:
    """The re-noising noise of step `step`: CPU generator seeded from (seed, step), so a seed gives
    the same clip on every device."""
    generator = torch.Generator().manual_seed((int(seed or 0) * 1_000_003 + 7919 * (step + 1)) % (2 ** 63))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)


def flip_frames(x: torch.Tensor) -> torch.Tensor:
    return x.flip(0)


def bidirectional_wrapper(end_positive, end_negative, guider_class, moved_latent):
    """The denoise wrapper. `guider_class(model, positive, negative, cfg)` must give an object whose
    `guided(x, sigma)` predicts without denoise wrappers (guidance.Guider); `moved_latent` is
    guidance.denoised_for_moved_latent. Passed in so this module stays free of the sampler's imports."""

    def bidirectional(predict, x, sigma, args):
        sigmas, step = args.get("sample_sigmas"), args.get("step")
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        if sigmas is None or step is None or step >= len(sigmas) - 1 or s <= 0:
            return predict(x, sigma)
        loop = same_conditioning(getattr(args.get("guider"), "positive", None), end_positive)
        s_next = float(sigmas[step + 1])
        x0 = predict(x, sigma)
        z = x0 + (x - x0) * (s_next / s)
        if s > s_next:
            z = z + step_noise(x.shape, args.get("seed"), step, x.device, x.dtype) * math.sqrt(s * s - s_next * s_next)
        batched = getattr(args.get("guider"), "batch_cond_uncond", True)   # --lowvram runs them one by one
        end = guider_class(args["model"], end_positive, end_negative, args.get("cond_scale", 1.0),
                           batch_cond_uncond=batched)
        x0_end = flip_frames(end.guided(flip_frames(z), sigma))
        if loop and x0_end.shape[0] > 1:
            x0_end = tie_ends(x0_end)
        return moved_latent(x, z, x0_end, s, s_next)
    return bidirectional


def tie_ends(x0: torch.Tensor) -> torch.Tensor:
    """x0 [T, ...] with its first and last frames replaced by their mean."""
    x0 = x0.clone()
    x0[0] = x0[-1] = (x0[0] + x0[-1]) / 2
    return x0


def same_conditioning(a, b) -> bool:
    """Whether two CONDITIONINGs hold the same tensors (a loop's end conditioning is its start's)."""
    if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
        return False
    for (emb_a, extra_a), (emb_b, extra_b) in zip(a, b):
        if not torch.equal(emb_a, emb_b) or extra_a.keys() != extra_b.keys():
            return False
        for key, value in extra_a.items():
            other = extra_b[key]
            same = torch.equal(value, other) if torch.is_tensor(value) and torch.is_tensor(other) else value == other
            if not same:
                return False
    return True
