"""Stable Video Diffusion's spatio-temporal UNet (the `VideoUNet` of Blattmann et al., 2023).

SD 2's UNet (`nodes/sd/unet.py`, whose blocks it reuses) in which every ResBlock is followed by a
temporal ResBlock (`time_stack`) and every spatial transformer by a temporal transformer over the
frame axis, each blended back into the spatial path by a learned `time_mixer`. Frames live in the
batch dimension: x is [B*T, C, H, W].

Module names are the original checkpoint's keys with `model.diffusion_model.` stripped.
"""
from dataclasses import dataclass

import torch
from torch import nn

from ..sd.unet import (Conv2d, Downsample, ResBlock, SpatialTransformer, Upsample, UNet, attention_hooks,  # noqa: F401
                       timestep_embedding, walk_levels)
from .attention import CrossAttention, FeedForward


@dataclass
class UNetConfig:
    in_channels: int = 8            # 4 noisy latent + 4 conditioning-frame latent
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple = (1, 2, 4)   # downsampling factors that get transformers
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024         # CLIP image embedding
    adm_in_channels: int = 768      # fps / motion bucket / cond_aug sinusoids, 3 x 256
    video_kernel_size: int = 3
    merge_factor: float = 0.5

    linear_projection = True

    def heads(self, channels: int) -> tuple[int, int]:
        """(heads, dim_head) for a transformer of `channels` channels."""
        heads = max(1, channels // self.num_head_channels)
        return heads, channels // heads

    def depth_down(self, level: int) -> int:
        return self.transformer_depth if 2 ** level in self.attention_resolutions else 0

    depth_up = depth_down

    def depth_middle(self) -> int:
        return self.transformer_depth


class AlphaBlender(nn.Module):
    """Learned blend of the spatial and temporal paths: alpha * spatial + (1 - alpha) * temporal.
    Frames flagged in `image_only_indicator` [B, T] are treated as still images (alpha = 1)."""

    def __init__(self, alpha: float):
        super().__init__()
        self.mix_factor = nn.Parameter(torch.tensor([alpha]))

    def alpha(self, x, image_only_indicator, ndim: int):
        alpha = torch.sigmoid(self.mix_factor.float())
        if image_only_indicator is not None and image_only_indicator.numel() == x.shape[0]:
            alpha = torch.where(image_only_indicator.reshape(-1).bool(), torch.ones_like(alpha), alpha)
            return alpha.to(x.dtype).reshape(-1, *[1] * (ndim - 1))
        if image_only_indicator is not None and bool(image_only_indicator.any()):
            raise ValueError("image_only_indicator must be [B, T] with one flag per frame")
        return alpha.to(x.dtype)

    def forward(self, x_spatial, x_temporal, image_only_indicator=None):
        alpha = self.alpha(x_spatial, image_only_indicator, x_spatial.ndim)
        return alpha * x_spatial + (1.0 - alpha) * x_temporal


class VideoResBlock(ResBlock):
    def __init__(self, channels, emb_channels, out_channels, cfg: UNetConfig):
        super().__init__(channels, emb_channels, out_channels)
        self.time_stack = ResBlock(out_channels, emb_channels, dims=3, kernel=cfg.video_kernel_size)
        self.time_mixer = AlphaBlender(cfg.merge_factor)

    def forward(self, x, emb, num_frames, image_only_indicator=None):
        x = super().forward(x, emb)  # noqa: the spatial block first
        bt, c, h, w = x.shape
        b = bt // num_frames
        video = x.reshape(b, num_frames, c, h, w).transpose(1, 2)
        temporal = self.time_stack(video, emb.reshape(b, num_frames, -1))
        temporal = temporal.transpose(1, 2).reshape(bt, c, h, w)
        return self.time_mixer(x, temporal, image_only_indicator)


class VideoTransformerBlock(nn.Module):
    """Attention over the frame axis: tokens [B*T, S, C] are regrouped as [B*S, T, C]."""

    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim)
        self.attn1 = CrossAttention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim)
        self.norm1, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context, num_frames, options=None, block=None, index=0):
        """context: [B, L, D], one per video (the first frame's)."""
        bt, s, c = x.shape
        b = bt // num_frames
        x = x.reshape(b, num_frames, s, c).transpose(1, 2).reshape(b * s, num_frames, c)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x), hooks=attention_hooks(options, "temporal_attn1", block, index, self.attn1, x)) + x
        hooks = attention_hooks(options, "temporal_attn2", block, index, self.attn2, x)
        if context.shape[1] == 1 and hooks is None:  # the same value for every token of a video: add it per video
            x = (x.reshape(b, s, num_frames, c) + self.attn2.single_token(context)[:, None]).reshape(b * s, num_frames, c)
        else:
            x = self.attn2(self.norm2(x), context.repeat_interleave(s, dim=0), hooks=hooks) + x
        x = self.ff(self.norm3(x)) + x
        return x.reshape(b, s, num_frames, c).transpose(1, 2).reshape(bt, s, c)


class SpatialVideoTransformer(SpatialTransformer):
    """SD 2's spatial transformer with a temporal transformer after each block."""

    def __init__(self, channels, depth, cfg: UNetConfig):
        super().__init__(channels, depth, cfg)
        heads, dim_head = cfg.heads(channels)
        self.time_stack = nn.ModuleList(
            VideoTransformerBlock(channels, heads, dim_head, cfg.context_dim) for _ in range(depth))
        self.time_pos_embed = nn.Sequential(nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, channels))
        self.time_mixer = AlphaBlender(cfg.merge_factor)

    def forward(self, x, context, options=None, num_frames=1, image_only_indicator=None):
        bt, c, h, w = x.shape
        x_in = x
        x = self.tokens(x)
        frames = torch.arange(num_frames, device=x.device)
        frame_emb = self.time_pos_embed(timestep_embedding(frames, c).to(x.dtype))   # [T, C]
        frame_emb = frame_emb.repeat(bt // num_frames, 1)[:, None]                   # [B*T, 1, C]
        video_context = context[::num_frames]
        for index, (block, time_block) in enumerate(zip(self.transformer_blocks, self.time_stack)):
            x = block(x, context, options, self.block, index)
            x_temporal = time_block(x + frame_emb, video_context, num_frames, options, self.block, index)
            x = self.time_mixer(x, x_temporal, image_only_indicator)
        return self.image(x, x_in.shape) + x_in


class VideoUNet(UNet):
    def res_block(self, ch_in, ch_out, emb_dim):
        return VideoResBlock(ch_in, emb_dim, ch_out, self.config)

    def transformer(self, channels, depth):
        return SpatialVideoTransformer(channels, depth, self.config)

    def forward(self, x, timesteps, context, y, num_video_frames: int, image_only_indicator=None, options=None):
        """x [B*T, in_channels, h, w]; timesteps [B*T] (EDM c_noise); context [B*T, L, context_dim];
        y [B*T, adm_in_channels]; image_only_indicator [B, T] or None (all frames are video);
        options: the call's `model.CallOptions` (attention and block patches) or None.
        Computes in x's dtype; returns [B*T, out_channels, h, w]."""
        if x.shape[0] % num_video_frames:
            raise ValueError(f"VideoUNet: batch {x.shape[0]} is not a multiple of num_video_frames {num_video_frames}")
        return super().forward(x, timesteps, context, y, options, num_frames=num_video_frames,
                               image_only_indicator=image_only_indicator)


def config_from_state_dict(sd, prefix: str = "") -> UNetConfig:
    """Detect the UNet config from key names and shapes (any mapping key -> tensor or shape)."""
    def shape(key):
        v = sd[prefix + key]
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    missing = [k for k in ("time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight", "label_emb.0.0.weight")
               if prefix + k not in sd]
    if missing:
        raise ValueError(f"not an SVD UNet state dict: missing {', '.join(prefix + k for k in missing)}")
    mc, mults, res_blocks, depths, _, middle = walk_levels(sd, prefix)
    return UNetConfig(
        in_channels=shape("input_blocks.0.0.weight")[1],
        out_channels=shape("out.2.weight")[0],
        model_channels=mc,
        channel_mult=mults,
        num_res_blocks=res_blocks,
        attention_resolutions=tuple(2 ** level for level, depth in enumerate(depths) if depth),
        transformer_depth=middle or 1,
        context_dim=shape("middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1],
        adm_in_channels=shape("label_emb.0.0.weight")[1],
        video_kernel_size=shape("input_blocks.1.0.time_stack.in_layers.2.weight")[2],
    )
