"""The MODEL type of the SVD nodes: the video UNet and how to sample it.

The loaders make it, the CFG-guidance nodes copy it with another ramp, the samplers read it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from .schedules import SigmaTable
from .svd.denoiser import SIGMA_MAX, SIGMA_MIN


@dataclass(frozen=True)
class VideoModel:
    """SVD's UNet with its sigma range and per-frame CFG ramp. Copies share the weights."""
    unet: torch.nn.Module
    compute_dtype: torch.dtype = torch.float32
    sigma_min: float = SIGMA_MIN
    sigma_max: float = SIGMA_MAX
    cfg_ramp: str = "constant"
    min_cfg: float = 1.0
    context_windows: Any = None   # context_windows.ContextWindows: sample in overlapping windows of frames

    def with_cfg_ramp(self, ramp: str, min_cfg: float) -> "VideoModel":
        return replace(self, cfg_ramp=ramp, min_cfg=float(min_cfg))

    @property
    def table(self) -> SigmaTable:
        return SigmaTable(self.sigma_min, self.sigma_max)
