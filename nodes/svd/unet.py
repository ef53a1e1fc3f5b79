"""Stable Video Diffusion's spatio-temporal UNet (the `VideoUNet` of Blattmann et al., 2023).

An SD-2 style UNet in which every ResBlock is followed by a temporal ResBlock (`time_stack`) and
every spatial transformer by a temporal transformer over the frame axis, each blended back into
the spatial path by a learned `time_mixer`. Frames live in the batch dimension: x is [B*T, C, H, W].

Module names are the original checkpoint's keys with `model.diffusion_model.` stripped.
"""
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CrossAttention, FeedForward, GroupNorm32
from .casting import widened


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

    def heads(self, channels: int) -> tuple[int, int]:
        """(heads, dim_head) for a transformer of `channels` channels."""
        heads = max(1, channels // self.num_head_channels)
        return heads, channels // heads


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
    """Sinusoidal embedding, cos half first. t: [N] -> [N, dim] float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class Conv2d(nn.Conv2d):
    """nn.Conv2d (weights cast to the activations' dtype) that, on a 1x1 map, applies only the centre
    tap of a 3x3 kernel: the other taps only ever see zero padding. At 64x64 pixels the deepest level
    is 1x1, and a matmul with 1/9 of the weight beats the weight-bound convolution."""

    def forward(self, x):
        b = widened(self.bias, x.dtype, "bias")
        if x.shape[-2:] == (1, 1) and self.kernel_size == (3, 3) and self.padding == (1, 1) and self.stride == (1, 1):
            return F.linear(x.flatten(1), widened(self.centre_tap(), x.dtype), b)[:, :, None, None]
        return self._conv_forward(x, widened(self.weight, x.dtype), b)

    def centre_tap(self):
        w = self.weight
        try:
            key = (w.data_ptr(), w.device, w._version)
        except RuntimeError:  # inference tensors carry no version counter (and cannot be edited in place)
            key = (w.data_ptr(), w.device, None)
        cached = self.__dict__.get("_centre")  # not a buffer: stays out of the state dict
        if cached is None or cached[0] != key:
            cached = self.__dict__["_centre"] = (key, w[:, :, 1, 1].contiguous())
        return cached[1]


def normalization(channels: int, eps: float = 1e-5):
    return GroupNorm32(32, channels, eps=eps)


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


class ResBlock(nn.Module):
    """The openaimodel ResBlock. dims=3 makes it the temporal block, convolving over frames only."""

    def __init__(self, channels, emb_channels, out_channels=None, dims=2, kernel=3):
        super().__init__()
        out_channels = out_channels or channels
        conv = nn.Conv3d if dims == 3 else Conv2d
        kernel = (kernel, 1, 1) if dims == 3 else (kernel, kernel)
        padding = tuple(k // 2 for k in kernel)
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(), conv(channels, out_channels, kernel, padding=padding))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        conv(out_channels, out_channels, kernel, padding=padding))
        self.skip_connection = nn.Identity() if out_channels == channels else conv(channels, out_channels, 1)

    def forward(self, x, emb):
        """x [N, C, H, W] with emb [N, E]; or for dims=3 x [B, C, T, H, W] with emb [B, T, E]."""
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)
        if h.ndim == 5:
            e = e.transpose(1, 2)  # [B, C, T]
        h = h + e.reshape(*e.shape, *[1] * (h.ndim - e.ndim))
        return self.skip_connection(x) + self.out_layers(h)


class VideoResBlock(ResBlock):
    def __init__(self, channels, emb_channels, out_channels, cfg: UNetConfig):
        super().__init__(channels, emb_channels, out_channels)
        self.time_stack = ResBlock(out_channels, emb_channels, dims=3, kernel=cfg.video_kernel_size)
        self.time_mixer = AlphaBlender(cfg.merge_factor)

    def forward(self, x, emb, num_frames, image_only_indicator=None):
        x = super().forward(x, emb)
        bt, c, h, w = x.shape
        b = bt // num_frames
        video = x.reshape(b, num_frames, c, h, w).transpose(1, 2)
        temporal = self.time_stack(video, emb.reshape(b, num_frames, -1))
        temporal = temporal.transpose(1, 2).reshape(bt, c, h, w)
        return self.time_mixer(x, temporal, image_only_indicator)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context, options=None, block=None, index=0):
        """options: the call's `model.CallOptions` (patches), block / index: where this block sits."""
        x = self.attn1(self.norm1(x), hooks=_hooks(options, "attn1", block, index, self.attn1, x)) + x
        x = self.attn2(self.norm2(x), context, hooks=_hooks(options, "attn2", block, index, self.attn2, x)) + x
        return self.ff(self.norm3(x)) + x


def _hooks(options, site, block, index, attention, x):
    if options is None:
        return None
    return options.attention_hooks(site, block, index, attention.heads, attention.to_q.out_features // attention.heads,
                                   x.shape)


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
        x = self.attn1(self.norm1(x), hooks=_hooks(options, "temporal_attn1", block, index, self.attn1, x)) + x
        hooks = _hooks(options, "temporal_attn2", block, index, self.attn2, x)
        if context.shape[1] == 1 and hooks is None:  # the same value for every token of a video: add it per video
            x = (x.reshape(b, s, num_frames, c) + self.attn2.single_token(context)[:, None]).reshape(b * s, num_frames, c)
        else:
            x = self.attn2(self.norm2(x), context.repeat_interleave(s, dim=0), hooks=hooks) + x
        x = self.ff(self.norm3(x)) + x
        return x.reshape(b, s, num_frames, c).transpose(1, 2).reshape(bt, s, c)


class SpatialVideoTransformer(nn.Module):
    def __init__(self, channels, cfg: UNetConfig):
        super().__init__()
        heads, dim_head = cfg.heads(channels)
        self.norm = normalization(channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, dim_head, cfg.context_dim) for _ in range(cfg.transformer_depth))
        self.proj_out = nn.Linear(channels, channels)
        self.time_stack = nn.ModuleList(
            VideoTransformerBlock(channels, heads, dim_head, cfg.context_dim) for _ in range(cfg.transformer_depth))
        self.time_pos_embed = nn.Sequential(nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, channels))
        self.time_mixer = AlphaBlender(cfg.merge_factor)
        self.block = ("input", 0)  # where it sits in the UNet (attention patches name it); set by the UNet

    def forward(self, x, context, num_frames, image_only_indicator=None, options=None):
        bt, c, h, w = x.shape
        x_in = x
        x = self.norm(x).reshape(bt, c, h * w).transpose(1, 2).contiguous()  # else matmul falls back to bmm
        x = self.proj_in(x)
        frames = torch.arange(num_frames, device=x.device)
        frame_emb = self.time_pos_embed(timestep_embedding(frames, c).to(x.dtype))   # [T, C]
        frame_emb = frame_emb.repeat(bt // num_frames, 1)[:, None]                   # [B*T, 1, C]
        video_context = context[::num_frames]
        for index, (block, time_block) in enumerate(zip(self.transformer_blocks, self.time_stack)):
            x = block(x, context, options, self.block, index)
            x_temporal = time_block(x + frame_emb, video_context, num_frames, options, self.block, index)
            x = self.time_mixer(x, x_temporal, image_only_indicator)
        x = self.proj_out(x)
        # contiguous: a channels-last view here would make every later conv re-layout its weight
        return x.transpose(1, 2).reshape(bt, c, h, w).contiguous() + x_in


class Downsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size=None):
        """size: the skip connection's (h, w), so odd sizes on the way down come back exactly."""
        x = F.interpolate(x, size=size, mode="nearest") if size is not None else F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x)


class EmbedSequential(nn.Sequential):
    """Runs its layers, handing each the inputs its kind needs."""

    def forward(self, x, emb, context, num_frames, image_only_indicator, options=None, output_size=None):
        for layer in self:
            if isinstance(layer, VideoResBlock):
                x = layer(x, emb, num_frames, image_only_indicator)
            elif isinstance(layer, SpatialVideoTransformer):
                x = layer(x, context, num_frames, image_only_indicator, options)
            elif isinstance(layer, Upsample):
                x = layer(x, output_size)
            else:
                x = layer(x)
        return x


class VideoUNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        mc = cfg.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Sequential(nn.Sequential(
            nn.Linear(cfg.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)))

        def res(ch_in, ch_out):
            return VideoResBlock(ch_in, emb_dim, ch_out, cfg)

        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(SpatialVideoTransformer(ch, cfg))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(res(ch, ch), SpatialVideoTransformer(ch, cfg), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(SpatialVideoTransformer(ch, cfg))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), Conv2d(mc, cfg.out_channels, 3, padding=1))
        for name, blocks in (("input", self.input_blocks), ("middle", [self.middle_block]), ("output", self.output_blocks)):
            for number, block in enumerate(blocks):
                for layer in block:
                    if isinstance(layer, SpatialVideoTransformer):
                        layer.block = (name, number)

    def forward(self, x, timesteps, context, y, num_video_frames: int, image_only_indicator=None, options=None):
        """x [B*T, in_channels, h, w]; timesteps [B*T] (EDM c_noise); context [B*T, L, context_dim];
        y [B*T, adm_in_channels]; image_only_indicator [B, T] or None (all frames are video);
        options: the call's `model.CallOptions` (attention and block patches) or None.
        Computes in x's dtype; returns [B*T, out_channels, h, w]."""
        if x.shape[0] % num_video_frames:
            raise ValueError(f"VideoUNet: batch {x.shape[0]} is not a multiple of num_video_frames {num_video_frames}")
        dtype = x.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        emb = emb + self.label_emb(y.to(dtype))
        context = context.to(dtype)
        args = (emb, context, num_video_frames, image_only_indicator, options)
        skips = []
        h = x
        for number, block in enumerate(self.input_blocks):
            h = block(h, *args)
            if options is not None:
                h = options.block_patch("input_block", h, ("input", number))
            skips.append(h)
            if options is not None:
                h = options.block_patch("input_block_after_skip", h, ("input", number))
        h = self.middle_block(h, *args)
        if options is not None:
            h = options.block_patch("middle_block", h, ("middle", 0))
        for number, block in enumerate(self.output_blocks):
            skip = skips.pop()
            if options is not None:
                h, skip = options.block_patch("output_block", h, ("output", number), skip)
            h = torch.cat([h, skip], dim=1)
            h = block(h, *args, output_size=skips[-1].shape[-2:] if skips else None)
        return self.out(h)


def config_from_state_dict(sd, prefix: str = "") -> UNetConfig:
    """Detect the UNet config from key names and shapes (any mapping key -> tensor or shape)."""
    def shape(key):
        v = sd[prefix + key]
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    keys = {k[len(prefix):] for k in sd if k.startswith(prefix)}
    required = ["time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight", "label_emb.0.0.weight"]
    missing = [k for k in required if k not in keys]
    if missing:
        raise ValueError(f"not an SVD UNet state dict: missing {', '.join(prefix + k for k in missing)}")
    mc = shape("time_embed.0.weight")[1]
    n_inputs = 1 + max(int(k.split(".")[1]) for k in keys if k.startswith("input_blocks."))
    # Walk the input blocks: a downsampling `op` ends a level.
    mults, res_per_level, attn_levels, count = [], [], [], 0
    for i in range(1, n_inputs):
        if f"input_blocks.{i}.0.op.weight" in keys:
            res_per_level.append(count)
            count = 0
            continue
        out_ch = shape(f"input_blocks.{i}.0.out_layers.3.weight")[0]
        if count == 0:
            mults.append(out_ch // mc)
            if f"input_blocks.{i}.1.proj_in.weight" in keys:
                attn_levels.append(len(mults) - 1)
        count += 1
    res_per_level.append(count)
    if len(set(res_per_level)) != 1:
        raise ValueError(f"unsupported UNet layout: res blocks per level {res_per_level}")
    depth = 1 + max((int(m.group(1)) for k in keys
                     if (m := re.match(r"middle_block\.1\.transformer_blocks\.(\d+)\.", k))), default=0)
    return UNetConfig(
        in_channels=shape("input_blocks.0.0.weight")[1],
        out_channels=shape("out.2.weight")[0],
        model_channels=mc,
        channel_mult=tuple(mults),
        num_res_blocks=res_per_level[0],
        attention_resolutions=tuple(2 ** level for level in attn_levels),
        transformer_depth=depth,
        context_dim=shape("middle_block.1.transformer_blocks.0.attn2.to_k.weight")[1],
        adm_in_channels=shape("label_emb.0.0.weight")[1],
        video_kernel_size=shape("input_blocks.1.0.time_stack.in_layers.2.weight")[2],
    )
