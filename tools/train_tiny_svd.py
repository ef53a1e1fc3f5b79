"""Train the tiny SVD that ships with vidgraph, from a seed, on procedurally generated clips.

    .venv/bin/python tools/train_tiny_svd.py                       # the shipped weights (2 CPU cores without AMX: ~55 min)
    .venv/bin/python tools/train_tiny_svd.py --object-weight 1     # an even loss (the weights shipped before: 84% kept)
    .venv/bin/python tools/train_tiny_svd.py --smoke --out /tmp/x.safetensors   # seconds: the test's run

vidgraph's own SVD classes in a small configuration (`TINY_TRAINED_*` below): the VideoUNet with its
temporal layers, the VAE with its temporal decoder (4x downscale), an OpenCLIP-style vision tower.
Data: `vidgraph.nodes.svd.moving_shapes` (48x48, 8 frames, the bucket and fps of each clip known).

1. VAE: L1 + an image-gradient L1 term + a small KL, on 32x32 crops and whole frames of the clips,
   then its latent is rescaled (exactly: encoder output rows up, decoder input weights down) so that
   latent x 0.18215 has unit spread, the scale SVD's sigma_data = 1 preconditioning assumes.
2. CLIP vision: random but fixed (SVD freezes its CLIP tower too). The conditioning frame's latent,
   concatenated to every frame, is what tells the UNet where things are; the embedding is a fixed
   global descriptor of frame 1 that cross-attention may use. Training it would add its backward
   pass to every step for an input the UNet already has.
3. UNet: SVD's objective. EDM with v-prediction (c_skip, c_out, c_in, c_noise of sigma_data 1), the
   loss on the network output (EDM's weighting), noise levels log-normal plus a log-uniform share
   over the sampler's whole range (0.002..700); the conditioning frame's VAE latent (unscaled,
   noise-augmented for a quarter of the clips, from encodings drawn once per start frame) concatenated; the CLIP embedding of that frame as
   context; fps-1 / motion bucket / augmentation as the added vector; both dropped together for 10%
   of the clips (the zeroed negative CFG uses). Clips are also used time-reversed (a reversed
   constant-velocity clip is another valid clip, with another first frame). The loss weighs the latent
   cells the shapes cover 4x (`--object-weight`, object_weights). EMA weights are saved.
   The first 4,500 steps train on a second pool of 32x32 clips (`--warm-steps`, `--warm-size`; 8x8
   latents, a step in about 0.33 s instead of 0.55 s), the last 2,000 at 48x48, under one optimiser, schedule
   and EMA: the UNet is convolutional, so what it learns of the shapes and their motion at the small
   size carries over, and the hour holds 6,500 steps instead of 4,300.
   The forward pass runs under bf16 autocast where the hardware has bf16 (AMX / AVX512-BF16 CPUs,
   GPUs), with fp32 weights and optimiser, and on a CPU with SDPA's plain kernel (`--attention`): on a
   2-core CPU without AMX (AVX512-BF16 alone) a step at 48x48 takes 0.55-0.68 s (0.84 s with the flash
   kernel); the defaults' 4,500 + 2,000 steps and the other stages took 55.7 minutes.

Saved as one fp16 file in the original single-file SVD layout, loadable by ImageOnlyCheckpointLoader.
Deterministic per seed on a given machine, thread count and precision.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from vidgraph.nodes.svd.checkpoint import load_checkpoint
from vidgraph.nodes.svd.clip_vision import CLIPVision, CLIPVisionConfig, clip_preprocess
from vidgraph.nodes.svd.denoiser import SIGMA_MAX, SIGMA_MIN, edm_v_scalings, micro_conditioning
from vidgraph.nodes.svd.moving_shapes import SceneConfig
from vidgraph.nodes.svd.tiny import random_clip_vision, save_single_file, svd_state_dict
from vidgraph.nodes.svd.trained import training_record
from vidgraph.nodes.svd.unet import UNetConfig, VideoUNet
from vidgraph.nodes.svd.vae import SCALE_FACTOR, VAE, VAEConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is not a package
from tiny_training import ClipPool, Stages, log, optimiser_step, set_lr, to_pixels  # noqa: E402
from tiny_vae_stage import normalise_latent, refine_decoder, train_vae, vae_psnr  # noqa: E402

# GroupNorm keeps SD's 32 groups: at 32 channels each group is one channel, and a norm over one channel
# removes that channel's mean image by image, which is where flat colours live. 64 channels (two a group)
# is the narrowest width that leaves colour a way through.
TINY_TRAINED_UNET = UNetConfig(model_channels=64, channel_mult=(1, 1, 1), num_res_blocks=1,
                               attention_resolutions=(2, 4), context_dim=64)
TINY_TRAINED_VAE = VAEConfig(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1)          # 4x downscale
TINY_TRAINED_CLIP = CLIPVisionConfig(width=64, layers=2, heads=1, mlp_dim=256, patch_size=8, image_size=32,
                                     output_dim=64)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "nodes" / "svd" / "weights" / "vidgraph_tiny_svd_shapes.safetensors"


# ----------------------------------------------------------------------------- UNet

@torch.no_grad()
def encode_pool(vae: VAE, clip: CLIPVision, pool: ClipPool, chunk: int = 64):
    """Raw (unscaled) latents [N,T,4,h,w] and CLIP embeddings of the first and last frames [N,2,D]."""
    n, t = pool.frames.shape[:2]
    latents = encode_frames(vae, pool.frames.flatten(0, 1), chunk)
    latents = latents.reshape(n, t, *latents.shape[1:]).clone()
    ends = pool.frames[:, [0, -1]].flatten(0, 1).float() / 255.0
    embeds = clip(clip_preprocess(ends, clip.config.image_size)).image_embeds
    return latents, embeds.reshape(n, 2, -1).clone()


@torch.no_grad()
def encode_frames(vae: VAE, frames_uint8: torch.Tensor, chunk: int = 64, noise: torch.Tensor | None = None):
    """Raw latents of frames [M,H,W,3] uint8, with `noise` [M,3,H,W] added to the pixels first."""
    out = []
    for i in range(0, frames_uint8.shape[0], chunk):
        pixels = to_pixels(frames_uint8[i:i + chunk])
        out.append(vae.encode(pixels if noise is None else pixels + noise[i:i + chunk]))
    return torch.cat(out)


@dataclass
class AugmentedStarts:
    """SVD's noise augmentation, drawn once: each clip's start frame (forward and reversed) with
    pixel noise of a log-uniform level in 0.005..0.1 added before encoding, `variants` draws each.
    Encoding them in the step cost a sixth of the UNet stage; drawn up front, the UNet sees the same
    augmentation at no cost per step."""
    latents: torch.Tensor   # [N, 2, K, 4, h, w] raw
    levels: torch.Tensor    # [N, 2, K]

    @classmethod
    def draw(cls, vae: VAE, pool: ClipPool, variants: int, gen: torch.Generator):
        n, t = pool.frames.shape[:2]
        starts = pool.frames[:, [0, t - 1]][:, :, None].expand(-1, -1, variants, -1, -1, -1).flatten(0, 2)
        levels = torch.exp(math.log(0.005) + torch.rand(starts.shape[0], generator=gen) * math.log(0.1 / 0.005))
        noise = torch.randn((starts.shape[0], 3, *starts.shape[1:3]), generator=gen) * levels.reshape(-1, 1, 1, 1)
        latents = encode_frames(vae, starts, noise=noise)
        return cls(latents.reshape(n, 2, variants, *latents.shape[1:]), levels.reshape(n, 2, variants))


def sample_sigmas(b: int, gen: torch.Generator, p_mean: float, p_std: float, uniform_share: float):
    lognormal = (p_mean + p_std * torch.randn(b, generator=gen)).exp()
    log_uniform = torch.exp(math.log(SIGMA_MIN) + torch.rand(b, generator=gen) * math.log(SIGMA_MAX / SIGMA_MIN))
    return torch.where(torch.rand(b, generator=gen) < uniform_share, log_uniform, lognormal)


def object_weights(pool: ClipPool, latent_size: tuple[int, int], object_weight: float) -> torch.Tensor:
    """The loss weight of each latent cell of each frame, [N,T,1,h,w]: up to `object_weight` where a
    shape covers part of the cell (by its largest coverage of a pixel there), 1 elsewhere. The shapes are
    a tenth of the cells, the background the rest: an even loss spends the UNet's capacity on a
    background that a pan or texture makes hard, while what the yardstick asks (every shape kept, in its
    colour) lives in those few cells. Weighted 4x at every level (the default), 4,300 steps at 48x48 alone
    kept the objects in 88% / 86% of two sets of 100 seeds (an even loss, 5,000 steps: 84% / 79%), at a cost to the
    background: colour drift 4.2 dE instead of 1.5, flicker 0.31 L instead of 0.11. Weighted 5x from
    sigma 1 up only (`--object-sigma-min`, where sampling settles the shapes): much the same (89%;
    4.3 dE, 0.27 L)."""
    n, t, h, w = pool.coverage.shape
    cells = F.adaptive_max_pool2d(pool.coverage.reshape(n * t, 1, h, w).float() / 255, latent_size)
    return (1 + (object_weight - 1) * cells).reshape(n, t, 1, *latent_size)


def weights_from(sigma_min: float, weights: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A batch's cell weights [B,T,1,h,w] where its noise level is `sigma_min` or more, 1 below."""
    return torch.where((sigma >= sigma_min).reshape(-1, 1, 1, 1, 1), weights, torch.ones(()))


def draw_clips(pool: ClipPool, batch: int, gen: torch.Generator, count_power: float = 0.0) -> torch.Tensor:
    """`batch` clip indices: evenly, or with chances of (shape count) ** count_power, so that the scenes
    of two and three shapes, where shapes get lost, come more often."""
    if not count_power:
        return torch.randint(len(pool), (batch,), generator=gen)
    chances = pool.object_counts.double() ** count_power
    return torch.multinomial(chances, batch, replacement=True, generator=gen)


@dataclass
class TrainingSet:
    """A clip pool ready for the UNet stage: its latents, CLIP embeddings, noise-augmented starts and
    per-cell loss weights (None: an even loss)."""
    pool: ClipPool
    latents: torch.Tensor
    embeds: torch.Tensor
    augmented: AugmentedStarts
    weights: torch.Tensor | None

    @classmethod
    def encode(cls, vae: VAE, clip: CLIPVision, pool: ClipPool, args, seed: int):
        latents, embeds = encode_pool(vae, clip, pool)
        augmented = AugmentedStarts.draw(vae, pool, args.aug_variants, torch.Generator().manual_seed(seed))
        weights = object_weights(pool, latents.shape[-2:], args.object_weight) if args.object_weight != 1 else None
        log(f"encoded the pool: latents {list(latents.shape)}, scaled std {(latents * SCALE_FACTOR).std():.3f}, "
            f"{args.aug_variants} augmented starts per clip and direction; UNet in {args.precision}")
        return cls(pool, latents, embeds, augmented, weights)


def unet_batch(data: TrainingSet, gen, batch, args):
    """One training batch: x0 (scaled) [B,T,4,h,w], concat (raw) [B,4,h,w], context [B,1,D], y [B,768],
    and each latent cell's loss weight [B,T,1,h,w] (None: an even loss)."""
    pool, latents, embeds, augmented, weights = data.pool, data.latents, data.embeds, data.augmented, data.weights
    idx = draw_clips(pool, batch, gen, args.count_power)
    reverse = torch.rand(batch, generator=gen) < 0.5
    x0 = latents[idx].clone()
    x0[reverse] = x0[reverse].flip(1)
    if weights is not None:
        weights = weights[idx].clone()
        weights[reverse] = weights[reverse].flip(1)
    context = embeds[idx, reverse.long()][:, None].clone()
    concat = x0[:, 0].clone()
    augment = torch.rand(batch, generator=gen) < args.aug_share
    variant = torch.randint(augmented.levels.shape[2], (batch,), generator=gen)
    aug_level = torch.where(augment, augmented.levels[idx, reverse.long(), variant], torch.zeros(batch))
    concat[augment] = augmented.latents[idx, reverse.long(), variant][augment]
    drop = torch.rand(batch, generator=gen) < args.cond_drop
    concat[drop] = 0
    context[drop] = 0
    y = torch.cat([micro_conditioning(int(f), int(m), float(a), TINY_TRAINED_UNET.adm_in_channels // 3)
                   for f, m, a in zip(pool.fps[idx], pool.buckets[idx], aug_level)])
    return x0 * SCALE_FACTOR, concat, context, y, weights


def unet_loss(unet, x0, concat, context, y, sigma, gen, precision: str = "fp32", weights=None):
    b, t = x0.shape[:2]
    c_skip, c_out, c_in, c_noise = (v.reshape(b, 1, 1, 1, 1) for v in edm_v_scalings(sigma))
    x = x0 + torch.randn(x0.shape, generator=gen) * sigma.reshape(b, 1, 1, 1, 1)
    net_in = torch.cat([c_in * x, concat[:, None].expand(-1, t, -1, -1, -1)], dim=2).flatten(0, 1)
    with autocast(precision):
        out = unet(net_in, c_noise.reshape(b).repeat_interleave(t), context.repeat_interleave(t, dim=0),
                   y.repeat_interleave(t, dim=0), num_video_frames=t)
    target = (x0 - c_skip * x) / c_out
    if weights is None:
        return F.mse_loss(out.float().reshape(x0.shape), target)
    return (weights * (out.float().reshape(x0.shape) - target) ** 2).mean() / weights.mean()


def autocast(precision: str):
    """bf16 autocast for the UNet's forward pass (weights, gradients and the optimiser stay fp32)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def default_precision() -> str:
    """bf16 where the hardware computes it natively (AMX or AVX512-BF16 CPUs, recent GPUs), else fp32."""
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def attention_kernel(choice: str = "math"):
    """SDPA's kernel for the UNet stage. "math" (the default): on a CPU, the plain matmul-softmax kernel.
    The tiny UNet's sequences (36 and 9 tokens in space, 8 frames in time) are far too short for the
    flash kernel, whose backward pass alone took a third of a step (2 cores, bf16: 0.79 s a step with it,
    0.54 s without); encoding the pool, 18% less time. "sdpa": PyTorch's own choice (flash on a CPU),
    what the shipped weights were trained with. The two agree to float rounding, not bit for bit."""
    if choice == "sdpa" or torch.cuda.is_available():
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def train_unet(unet, phases: list[tuple[TrainingSet, int]], args, gen):
    """Train on each (set, steps) phase in turn (a smaller frame size first, where --warm-steps asks for
    it), one optimiser, learning-rate schedule and EMA over all of them."""
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01, fused=True)
    ema = copy.deepcopy(unet).requires_grad_(False)
    ema_params, params = list(ema.parameters()), list(unet.parameters())
    unet.train()
    total = sum(steps for _, steps in phases)
    start, losses, loads, step = time.perf_counter(), [], [], 0
    for data, steps in phases:
        for _ in range(steps):
            set_lr(opt, args.lr, step, total, args.warmup, floor=0.1)
            x0, concat, context, y, w = unet_batch(data, gen, args.batch, args)
            sigma = sample_sigmas(args.batch, gen, args.p_mean, args.p_std, args.uniform_share)
            w = None if w is None else weights_from(args.object_sigma_min, w, sigma)
            loss = unet_loss(unet, x0, concat, context, y, sigma, gen, args.precision, w)
            optimiser_step(opt, loss, clip_norm=1.0)
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, params, 1 - min(args.ema, (1 + step) / (10 + step)))
            losses.append(loss.item())
            if step % 50 == 0 or step == total - 1:
                loads.append(os.getloadavg()[0])
                log(f"unet step {step}/{total} ({x0.shape[-1]}x{x0.shape[-2]} latents) loss {np.mean(losses[-50:]):.4f} "
                    f"lr {opt.param_groups[0]['lr']:.2e} ({time.perf_counter() - start:.0f} s, load {loads[-1]:.1f})")
            step += 1
    return ema.eval(), float(np.mean(losses[-100:])), loads


# ----------------------------------------------------------------------------- saving

def random_clip_tower(seed: int) -> CLIPVision:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return random_clip_vision(TINY_TRAINED_CLIP).eval().requires_grad_(False)


def save_checkpoint(path: Path, unet, vae, clip, metadata: dict, dtype=torch.float16):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_single_file(path, svd_state_dict(unet, vae, clip, dtype), {"vidgraph_training": json.dumps(metadata)})


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2,
                   help="the shipped run used 2 on a 2-core machine; 1 on a busy machine, where two threads wait on each other")
    p.add_argument("--pool", type=int, default=1600, help="clips rendered and encoded once")
    p.add_argument("--vae-steps", type=int, default=800)
    p.add_argument("--vae-from", type=Path, help="skip the VAE stage: take the VAE stage's file of an earlier run")
    p.add_argument("--unet-from", type=Path, help="skip the UNet stage: take the UNet (and its record) of this file")
    p.add_argument("--decoder-steps", type=int, default=0, help="decoder-only refinement after the UNet stage (off in the shipped run)")
    p.add_argument("--decoder-batch", type=int, default=2)
    p.add_argument("--decoder-lr", type=float, default=1e-3)
    p.add_argument("--vae-batch", type=int, default=4)
    p.add_argument("--vae-crop", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=2e-4)
    p.add_argument("--unet-steps", type=int, default=2000, help="UNet steps at --size")
    p.add_argument("--warm-steps", type=int, default=4500,
                   help="UNet steps on clips of --warm-size pixels before the --unet-steps at --size (0: none)")
    p.add_argument("--warm-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--p-mean", type=float, default=0.0)
    p.add_argument("--p-std", type=float, default=1.4)
    p.add_argument("--uniform-share", type=float, default=0.1)
    p.add_argument("--cond-drop", type=float, default=0.1)
    p.add_argument("--object-weight", type=float, default=4.0,
                   help="the loss weight of latent cells a shape covers (see object_weights; 1: an even loss)")
    p.add_argument("--object-sigma-min", type=float, default=0.0,
                   help="the lowest noise level --object-weight applies at (0: all)")
    p.add_argument("--count-power", type=float, default=0.0,
                   help="draw clips with chances of (their shape count) ** this (0: evenly)")
    p.add_argument("--aug-share", type=float, default=0.25)
    p.add_argument("--aug-variants", type=int, default=4, help="noise-augmented encodings of each start frame, drawn up front")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=default_precision(),
                   help="the UNet forward's autocast (default: bf16 where the hardware has it)")
    p.add_argument("--attention", choices=("math", "sdpa"), default="math",
                   help="the UNet stage's attention kernel on a CPU (see attention_kernel; the shipped weights: sdpa)")
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--smoke", action="store_true", help="a few steps on a tiny pool (seconds): the test's run")
    args = p.parse_args(argv)
    if args.smoke:
        args.pool, args.vae_steps, args.unet_steps, args.vae_batch, args.batch = 4, 2, 2, 2, 2
        args.decoder_steps, args.decoder_batch = 2, 1
        args.size, args.frames, args.warmup, args.warm_size, args.warm_steps = 32, 4, 1, 16, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    scene = SceneConfig(width=args.size, height=args.size, frames=args.frames)
    previous = training_record(args.unet_from) if args.unet_from else {}
    # the record of the stages that ran in an earlier process (--vae-from, --unet-from)
    stages = Stages({**(training_record(args.vae_from).get("stages", {}) if args.vae_from else {}),
                     **previous.get("stages", {})})
    log(f"training the tiny SVD: seed {args.seed}, {args.threads} threads, load {os.getloadavg()}")

    pool = stages.run("render", lambda: ClipPool(args.seed, args.pool, scene))
    held_out = ClipPool(args.seed + 10_000, 2 if args.smoke else 24, scene)
    # Rounded to the fp16 they ship in: the UNet learns on the latents and embeddings users will get.
    clip = random_clip_tower(args.seed + 1).half().float()

    # Each stage has its own seeds, so a stage rerun from an earlier file (--vae-from, --unet-from)
    # repeats exactly what the whole run does.
    if args.vae_from:
        vae, scale = load_checkpoint(args.vae_from).vae.float(), None
    else:
        def vae_stage():
            vae = VAE(TINY_TRAINED_VAE)
            gen = torch.Generator().manual_seed(args.seed)
            train_vae(vae, pool, args.vae_steps, gen, min(args.vae_crop, args.size), args.vae_batch, args.vae_lr)
            return vae, normalise_latent(vae, pool)

        vae, scale = stages.run("vae", vae_stage)
        vae = vae.half().float().requires_grad_(False)
        save_checkpoint(args.out.with_name(args.out.stem + ".vae-stage.safetensors"), VideoUNet(TINY_TRAINED_UNET),
                        vae, clip, {"stage": "vae", "stages": stages.record})
    psnr_vae_stage = vae_psnr(vae, held_out.frames)
    log(f"VAE: held-out PSNR {psnr_vae_stage:.2f} dB, latent rescaled by {scale}")

    if args.unet_from:
        ema, final_loss = load_checkpoint(args.unet_from).unet.float(), previous.get("unet_final_loss")
    else:
        def unet_stage():
            with attention_kernel(args.attention):
                phases = []
                if args.warm_steps:
                    warm_scene = SceneConfig(width=args.warm_size, height=args.warm_size, frames=args.frames)
                    warm_pool = ClipPool(args.seed + 20_000, args.pool, warm_scene)
                    phases.append((TrainingSet.encode(vae, clip, warm_pool, args, args.seed + 6), args.warm_steps))
                phases.append((TrainingSet.encode(vae, clip, pool, args, args.seed + 5), args.unet_steps))
                torch.manual_seed(args.seed + 2)
                gen = torch.Generator().manual_seed(args.seed + 3)
                return train_unet(VideoUNet(TINY_TRAINED_UNET), phases, args, gen)[:2]

        ema, final_loss = stages.run("unet", unet_stage)

    if args.decoder_steps:
        gen = torch.Generator().manual_seed(args.seed + 4)
        stages.run("decoder", lambda: refine_decoder(vae, pool, args.decoder_steps, gen, args.decoder_batch,
                                                      args.decoder_lr))
        vae = vae.half().float()
    psnr = vae_psnr(vae, held_out.frames)
    total = {k: sum(v[k] for v in stages.record.values() if v.get(k) is not None) for k in ("wall_s", "cpu_s")}
    metadata = {
        "seed": args.seed, "command": " ".join(["tools/train_tiny_svd.py"] + (argv if argv is not None else sys.argv[1:])),
        "frame_size": args.size, "frames": args.frames, "vae_psnr_db": round(psnr, 2),
        "vae_psnr_db_before_decoder_stage": round(psnr_vae_stage, 2), "latent_rescale": scale or previous.get("latent_rescale"),
        "unet_final_loss": None if final_loss is None else round(final_loss, 4), "stages": stages.record,
        "train_seconds": total["wall_s"], "train_cpu_seconds": total["cpu_s"], "threads": args.threads,
        "torch": torch.__version__, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    save_checkpoint(args.out, ema, vae, clip, metadata)
    log(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB): "
        + json.dumps({k: metadata[k] for k in ("vae_psnr_db", "unet_final_loss", "train_seconds", "train_cpu_seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
