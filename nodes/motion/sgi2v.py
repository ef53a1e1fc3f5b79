"""Trajectory control after SG-I2V (Namekata et al., arXiv 2411.04989): boxes on the first frame
follow their paths, with no training and no extra weights.

At a few mid-schedule steps, before the step's prediction:
1. Feature capture. The latent z goes through the network once (conditional branch only, stopped
   after the last chosen layer). In the chosen spatial self-attention layers (the mid-resolution
   up-blocks) the attention is also computed with every frame's queries against frame 1's keys and
   values (detached): those outputs are semantically aligned across frames. The network itself runs
   on as usual; only the aligned outputs are recorded.
2. Loss: for every track and frame k > 1, the aligned features inside the box at frame k should equal
   frame 1's features inside the box at frame 1 (the target, detached), per cell mean squared
   error weighted by a Gaussian over the box.
3. A few AdamW steps on z (gradients reach only z: the weights are frozen and the keys and values
   are detached, so frame k can only move its own content).
4. Low-pass fusion: the low spatial frequencies of the optimised z with the high ones of the
   original latent (a Butterworth filter), which undoes the over-smoothing of the optimisation.
Sampling then continues from the fused latent (`guidance.denoised_for_moved_latent`).

Defaults are the paper's for 50 steps: optimise at steps 5..20 (10%-40% of the schedule),
5 iterations, learning rate 0.21 on the unscaled latent, Gaussian sigma 0.4, cut-off 0.5
(Butterworth order 4), features of the 2nd and 3rd self-attention of the second-finest up-block
level (SVD: output blocks 7, 8). AdamW moves each element by about the learning rate per
iteration whatever the noise level, which is small against the sigmas of those steps; a short
schedule with guidance into lower sigmas needs a step in proportion to the noise instead
(`lr_per_noise`: the rate times sqrt(sigma^2 + 1)), or low-sigma steps tear the objects apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .trajectories import Track, cell_boxes, gaussian_heatmap


class _FeaturesCaptured(Exception):
    """Raised after the last chosen layer: the rest of the network is not needed for the loss."""


@dataclass(frozen=True)
class TrajectorySettings:
    tracks: tuple[Track, ...]
    blocks: tuple[tuple[str, int], ...] | None = None   # None: chosen from the network's layout
    iterations: int = 5
    learning_rate: float = 0.21
    heatmap_sigma: float = 0.4
    fft_cutoff: float = 0.5            # 0 = no low-pass fusion (keep the optimised latent as is)
    start: float = 0.1                 # fraction of the sampler's steps
    end: float = 0.4
    lr_per_noise: bool = False         # learning rate x sqrt(sigma^2 + 1): the same relative step at every sigma


def default_feature_blocks(config) -> tuple[tuple[str, int], ...]:
    """SG-I2V's layers for a UNet config: the last two transformers of an up-block level with
    attention, the second-finest when three or more levels have it (SVD: output blocks 7, 8, the
    paper's), else the finest (a small network's second-finest is too coarse to place a box)."""
    levels = [level for level in range(len(config.channel_mult)) if 2 ** level in config.attention_resolutions]
    if not levels:
        raise ValueError("the network has no spatial attention layers to take features from")
    level = levels[1] if len(levels) >= 3 else levels[0]
    per_level = config.num_res_blocks + 1
    first = (len(config.channel_mult) - 1 - level) * per_level  # output blocks run coarse to fine
    return tuple(("output", first + i) for i in range(max(0, per_level - 2), per_level))


def aligned_attention(q, k, v, info):
    """Attention of every frame's queries to frame 1's keys/values (detached); q, k, v [B*T, L, C]."""
    frames = info.get("num_frames") or q.shape[0]
    videos = q.shape[0] // frames

    def first_frame(t):
        t = t.detach().reshape(videos, frames, *t.shape[1:])[:, :1]
        return t.expand(videos, frames, *t.shape[2:]).reshape(videos * frames, *t.shape[2:])
    return info["attention"](q, first_frame(k), first_frame(v), info["n_heads"])


def capture_patches(model, blocks, store: dict):
    """A clone of `model` that records aligned features at `blocks` into `store` and stops after the
    last of them."""
    m = model.clone()

    def recorder(block):
        def replace(q, k, v, info):
            store[block] = (aligned_attention(q, k, v, info), info)
            return info["attention"](q, k, v, info["n_heads"])
        return replace

    def stop(out, info):
        if all(b in store for b in blocks):
            raise _FeaturesCaptured
        return out

    for block in blocks:
        m.add_attention_patch("attn1", "replace", recorder(block), block=block, transformer_index=0)
        m.add_attention_patch("attn1", "output", stop, block=block, transformer_index=0)
    return m


def _grid_of(tokens: int, height: int, width: int) -> tuple[int, int]:
    """The (h, w) of a layer with `tokens` positions in a UNet over a height x width latent."""
    h, w = height, width
    for _ in range(8):
        if h * w == tokens:
            return h, w
        h, w = (h + 1) // 2, (w + 1) // 2
    raise ValueError(f"cannot place {tokens} tokens on a {height}x{width} latent")


def feature_maps(store: dict, blocks, frames: int, height: int, width: int) -> torch.Tensor:
    """The recorded features of the first video, upsampled to the latent: [T, C_total, height, width]."""
    maps = []
    for block in blocks:
        out, _ = store[block]
        h, w = _grid_of(out.shape[1], height, width)
        fmap = out[:frames].reshape(frames, h, w, -1).permute(0, 3, 1, 2).float()
        maps.append(F.interpolate(fmap, size=(height, width), mode="bilinear", align_corners=False))
    return torch.cat(maps, dim=1)


def trajectory_loss(features: torch.Tensor, tracks, heatmap_sigma: float) -> torch.Tensor | None:
    """Gaussian-weighted MSE between frame 1's box features and each later frame's box features;
    None when no box of a later frame is inside the image."""
    frames, _, height, width = features.shape
    total, weight_sum = features.new_zeros(()), 0.0
    for track in tracks:
        boxes = cell_boxes(track, frames, height, width)
        y0, x0, y1, x1 = _clip(boxes[0], height, width)
        if y0 >= y1 or x0 >= x1:
            continue
        target = features[0, :, y0:y1, x0:x1].detach()
        for k in range(1, frames):
            by0, bx0, by1, bx1 = boxes[k]
            bh, bw = by1 - by0, bx1 - bx0
            cy0, cx0, cy1, cx1 = _clip(boxes[k], height, width)
            if cy0 >= cy1 or cx0 >= cx1:
                continue
            moved = F.interpolate(target[None], size=(bh, bw), mode="bilinear", align_corners=False)[0]
            moved = moved[:, cy0 - by0:cy1 - by0, cx0 - bx0:cx1 - bx0]
            source = features[k, :, cy0:cy1, cx0:cx1]
            heat = gaussian_heatmap(bh, bw, heatmap_sigma).to(features.device)[cy0 - by0:cy1 - by0, cx0 - bx0:cx1 - bx0]
            per_cell = ((source - moved) ** 2).mean(dim=0)
            total = total + (per_cell * heat).sum()
            weight_sum += float(heat.sum())
    if weight_sum == 0:
        return None
    return total / weight_sum


def _clip(box, height, width):
    y0, x0, y1, x1 = box
    return max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)


def low_pass_fuse(optimised: torch.Tensor, original: torch.Tensor, cutoff: float, order: int = 4) -> torch.Tensor:
    """Low spatial frequencies of `optimised`, high ones of `original` (Butterworth low-pass of the
    given cut-off, in units where the highest frequency along an axis is 1)."""
    if cutoff <= 0:
        return optimised
    h, w = optimised.shape[-2:]
    fy = 2 * torch.fft.fftfreq(h, dtype=torch.float64)
    fx = 2 * torch.fft.fftfreq(w, dtype=torch.float64)
    d2 = fy[:, None] ** 2 + fx[None, :] ** 2
    low = (1.0 / (1.0 + (d2 / cutoff ** 2) ** order)).to(optimised.device, torch.float32)
    spectrum = torch.fft.fft2(optimised.float()) * low + torch.fft.fft2(original.float()) * (1 - low)
    return torch.fft.ifft2(spectrum).real.to(optimised.dtype)


def active_steps(steps: int, start: float, end: float) -> range:
    """Step indices i (0 = first) that are optimised: round(start*steps) .. round(end*steps)."""
    first, last = math.floor(start * steps + 0.5), math.floor(end * steps + 0.5)
    return range(max(first, 0), min(last, steps - 1) + 1)


def optimise_latent(model, positive, x, sigma, settings: TrajectorySettings, basic_guider, blocks):
    """The optimised and fused latent z for x at sigma (the network's weights are never touched)."""
    store: dict = {}
    capture = capture_patches(model, blocks, store)
    guider = basic_guider(capture, positive)
    z = x.detach().clone().requires_grad_(True)
    rate = settings.learning_rate
    if settings.lr_per_noise:
        rate *= math.sqrt(float(torch.as_tensor(sigma).reshape(-1)[0]) ** 2 + 1.0)
    optimiser = torch.optim.AdamW([z], lr=rate)
    frames, _, height, width = x.shape
    with torch.enable_grad():
        for _ in range(settings.iterations):
            store.clear()
            try:
                guider.guided(z, sigma)
            except _FeaturesCaptured:
                pass
            missing = [b for b in blocks if b not in store]
            if missing:
                raise ValueError(f"trajectory guidance: the network has no spatial self-attention at {missing}")
            loss = trajectory_loss(feature_maps(store, blocks, frames, height, width), settings.tracks,
                                   settings.heatmap_sigma)
            store.clear()
            if loss is None:
                break
            # autograd.grad, not backward(): nothing but z collects a gradient, even weights left trainable
            (z.grad,) = torch.autograd.grad(loss, [z])
            optimiser.step()
    return low_pass_fuse(z.detach(), x, settings.fft_cutoff)


def trajectory_wrapper(settings: TrajectorySettings, basic_guider, moved_latent):
    """The denoise wrapper. `basic_guider(model, positive)` gives an object with `guided(x, sigma)`
    (guidance.Guider without the negative); `moved_latent` is guidance.denoised_for_moved_latent."""

    def guide(predict, x, sigma, args):
        sigmas, step = args.get("sample_sigmas"), args.get("step")
        if sigmas is None or step is None or step >= len(sigmas) - 1 or settings.iterations < 1:
            return predict(x, sigma)
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        steps = len(sigmas) - 1
        # Once per step: multi-evaluation samplers call again at other sigmas within the step.
        if step not in active_steps(steps, settings.start, settings.end) or not math.isclose(
                s, float(sigmas[step]), rel_tol=1e-5):
            return predict(x, sigma)
        model = args["model"]
        blocks = settings.blocks or default_feature_blocks(model.network.module.config)
        z = optimise_latent(model, args["guider"].positive, x, sigma, settings, basic_guider, blocks)
        return moved_latent(x, z, predict(z, sigma), s, float(sigmas[step + 1]))
    return guide
