"""What both stages of `train_tiny_svd.py` use: the clip pool, the learning-rate schedule, one optimiser
step, the progress log and the record of each stage's time."""
from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

from vidgraph.nodes.svd.moving_shapes import SceneConfig, make_clip, object_coverage


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


class ClipPool:
    """Clips rendered once: frames [N,T,H,W,3] uint8, fps [N], buckets [N], object_counts [N], and where
    the shapes are, coverage [N,T,H,W] uint8 (0..255)."""

    def __init__(self, seed: int, count: int, scene: SceneConfig):
        clips = [make_clip(seed * 1_000_003 + i, scene) for i in range(count)]
        self.frames = torch.from_numpy(np.stack([c.frames for c in clips]))
        self.coverage = torch.from_numpy(np.stack([np.round(object_coverage(c) * 255).astype(np.uint8) for c in clips]))
        self.fps = torch.tensor([c.fps for c in clips])
        self.buckets = torch.tensor([c.motion_bucket_id for c in clips])
        self.object_counts = torch.tensor([len(c.objects) for c in clips])

    def __len__(self):
        return self.frames.shape[0]


def to_pixels(frames_uint8):  # [..., H, W, 3] uint8 -> [..., 3, H, W] in [-1, 1]
    return frames_uint8.movedim(-1, -3).float() / 127.5 - 1.0


def set_lr(opt, lr: float, step: int, steps: int, warmup: int, floor: float):
    """Linear warm-up, then a cosine down to `floor` x lr."""
    scale = min(1.0, (step + 1) / warmup) * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    for group in opt.param_groups:
        group["lr"] = lr * scale * group.get("lr_scale", 1.0)


def sample_windows(pool: ClipPool, batch: int, window: int, gen: torch.Generator):
    """`batch` clips of the pool, `window` consecutive frames each: uint8 [B, window, H, W, 3]."""
    idx = torch.randint(len(pool), (batch,), generator=gen)
    first = int(torch.randint(0, pool.frames.shape[1] - window + 1, (1,), generator=gen))
    return pool.frames[idx, first:first + window]


def optimiser_step(opt, loss, clip_norm: float | None = None):
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip_norm)
    opt.step()


def progress(stage: str, step: int, steps: int, start: float, every: int, **figures):
    if step % every == 0 or step == steps - 1:
        shown = " ".join(f"{k} {v:.4g}" for k, v in figures.items())
        log(f"{stage} step {step}/{steps} {shown} ({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f})")


class Stages:
    """Wall and CPU seconds and the load average of each stage, for the file's record."""

    def __init__(self, previous: dict | None = None):
        self.record = dict(previous or {})

    def run(self, name: str, fn):
        wall, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        result = fn()
        self.record[name] = {"wall_s": round(time.perf_counter() - wall), "cpu_s": round(time.process_time() - cpu),
                             "load_average": round((load + os.getloadavg()[0]) / 2, 1)}
        log(f"stage {name}: {self.record[name]}")
        return result
