"""The VAE stage of `train_tiny_svd.py`: the autoencoder trained from its pooled-colour start
(`tiny_vae_init.py`), its latent rescaled to SVD's scale, its held-out PSNR, and the optional
decoder-only refinement."""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from vidgraph.nodes.svd.vae import SCALE_FACTOR, VAE

from tiny_training import ClipPool, optimiser_step, progress, sample_windows, set_lr, to_pixels
from tiny_vae_init import SMALL, init_pooled_colour_codec, small_stream_parameters


def sample_posterior(moments, gen):
    """(mean, log-variance, a sample) of the encoder's diagonal Gaussian."""
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30, 20)
    return mean, logvar, mean + torch.randn(mean.shape, generator=gen) * (0.5 * logvar).exp()


def reconstruction_terms(out, x):
    """L1, and L1 of the image gradients (edges: what a plain L1 blurs first)."""
    rec = (out - x).abs().mean()
    return rec, sum((torch.diff(out, dim=d) - torch.diff(x, dim=d)).abs().mean() for d in (-1, -2))


MSE_WEIGHT = 1.0


def vae_optimiser(vae: VAE, trained: torch.nn.Module, lr: float):
    """AdamW over `trained`'s parameters; those writing into the decoder's small stream (tiny_vae_init)
    at lr x SMALL."""
    small = {id(p) for p in small_stream_parameters(vae)}
    params = list(trained.parameters())
    return torch.optim.AdamW([{"params": [p for p in params if id(p) not in small]},
                              {"params": [p for p in params if id(p) in small], "lr_scale": SMALL}],
                             lr=lr, weight_decay=0.0)


def train_vae(vae: VAE, pool: ClipPool, steps: int, gen: torch.Generator, crop: int, batch: int, lr: float,
              window: int = 4, log_every: int = 50):
    """Crops of short windows (cheap steps, more of them); every 4th step whole frames, so the norms
    and the mid attention also see the real latent size."""
    init_pooled_colour_codec(vae)
    opt = vae_optimiser(vae, vae, lr)
    t, h = pool.frames.shape[1:3]
    window = min(window, t)
    vae.train()
    start = time.perf_counter()
    for step in range(steps):
        set_lr(opt, lr, step, steps, warmup=50, floor=0.05)
        clips = sample_windows(pool, batch, window, gen)
        if step % 4 == 3:
            x = to_pixels(clips[: max(1, batch // 4)])
        else:
            top, left = (int(v) for v in torch.randint(0, h - crop + 1, (2,), generator=gen))
            x = to_pixels(clips[:, :, top:top + crop, left:left + crop])
        b = x.shape[0]
        x = x.flatten(0, 1)                                      # [(B T), 3, h, w]
        mean, logvar, z = sample_posterior(vae.encoder(x), gen)
        out = vae.decoder(z, num_frames=window)
        rec, grad = reconstruction_terms(out, x)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
        loss = rec + 0.5 * grad + MSE_WEIGHT * (out - x).square().mean() + 1e-5 * kl
        optimiser_step(opt, loss)
        progress("vae", step, steps, start, log_every, loss=loss.item(), rec=rec.item(), kl=kl.item(), clips=b)
    vae.eval()
    return vae


@torch.no_grad()
def normalise_latent(vae: VAE, pool: ClipPool, sample: int = 64) -> float:
    """Rescale the latent so that latent * SCALE_FACTOR has unit standard deviation (exact: the
    decoder's first conv absorbs the inverse factor). Returns the factor applied."""
    frames = to_pixels(pool.frames[:sample, 0])
    std = vae.encode(frames).std().item()
    k = (1.0 / SCALE_FACTOR) / std
    z = vae.config.z_channels
    conv_out, conv_in = vae.encoder.conv_out, vae.decoder.conv_in
    conv_out.weight[:z] *= k
    conv_out.bias[:z] *= k
    conv_out.bias[z:] += 2 * math.log(k)   # the log-variance follows the mean's scale
    conv_in.weight /= k
    return k


@torch.no_grad()
def vae_psnr(vae: VAE, clips: torch.Tensor) -> float:
    """Mean PSNR (dB, 8-bit) of encode -> decode over clips [N,T,H,W,3] uint8."""
    values = []
    for clip in clips:
        x = to_pixels(clip)
        out = vae.decode(vae.encode(x), num_frames=x.shape[0], chunk=None)
        rec = ((out.clamp(-1, 1) + 1) * 127.5).round()
        mse = (rec - clip.movedim(-1, -3).float()).square().mean().item()
        values.append(10 * math.log10(255 ** 2 / max(mse, 1e-10)))
    return float(np.mean(values))


def refine_decoder(vae: VAE, pool: ClipPool, steps: int, gen: torch.Generator, batch: int, lr: float,
                   window: int = 4, log_every: int = 50):
    """The decoder alone, on whole frames, with the encoder frozen: the latent space the UNet learnt
    stays exactly as it was, so this stage may run after (or beside) the UNet's."""
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    opt = vae_optimiser(vae, vae.decoder, lr)
    window = min(window, pool.frames.shape[1])
    vae.decoder.train()
    start = time.perf_counter()
    for step in range(steps):
        set_lr(opt, lr, step, steps, warmup=20, floor=0.05)
        x = to_pixels(sample_windows(pool, batch, window, gen)).flatten(0, 1)
        with torch.no_grad():
            z = sample_posterior(vae.encoder(x), gen)[2]
        out = vae.decoder(z, num_frames=window)
        rec, grad = reconstruction_terms(out, x)
        loss = rec + 0.5 * grad + (out - x).square().mean()
        optimiser_step(opt, loss)
        progress("decoder", step, steps, start, log_every, loss=loss.item(), rec=rec.item())
    vae.eval().requires_grad_(False)
    return vae
