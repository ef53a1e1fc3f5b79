"""The Stable Diffusion UNet (ldm's openaimodel, Rombach et al. 2022): SD 1.x, SD 2.x and SDXL.

ResBlocks carry the timestep (and SDXL's size/pooled-text vector) embedding; spatial transformers
attend to the image tokens (attn1) and to the text (attn2). SVD's `VideoUNet` is this UNet with a
temporal layer after each block (`nodes/svd/unet.py` builds on the blocks here).

Module names are the original checkpoint's keys with `model.diffusion_model.` stripped.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..svd.attention import CrossAttention, FeedForward, GroupNorm32
from ..svd.casting import widened


@dataclass
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    transformer_depth: tuple = (1, 1, 1, 0)       # per level on the way down; 0 = no attention there
    transformer_depth_output: tuple | None = None  # per level on the way up; None = as on the way down
    transformer_depth_middle: int = 1
    num_heads: int = 8                 # SD 1.x: 8 heads; SD 2.x / SDXL use num_head_channels instead
    num_head_channels: int = -1        # channels per head (64), or -1 to use num_heads
    context_dim: int = 768
    use_linear_in_transformer: bool = False  # SD 1.x: 1x1 convolutions around the transformer
    adm_in_channels: int | None = None       # SDXL: pooled text + size embeddings (2816)

    def heads(self, channels: int) -> tuple[int, int]:
        """(heads, dim_head) for a transformer of `channels` channels."""
        heads = self.num_heads if self.num_head_channels == -1 else max(1, channels // self.num_head_channels)
        return heads, channels // heads

    def depth_down(self, level: int) -> int:
        return self.transformer_depth[level]

    def depth_up(self, level: int) -> int:
        return (self.transformer_depth_output or self.transformer_depth)[level]

    def depth_middle(self) -> int:
        return self.transformer_depth_middle

    @property
    def linear_projection(self) -> bool:
        return self.use_linear_in_transformer


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

    def clear_weight_caches(self):
        """The weights were swapped (weight patches): forget the centre tap taken from the old ones."""
        self.__dict__.pop("_centre", None)

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


class ResBlock(nn.Module):
    """The openaimodel ResBlock. dims=3 makes it SVD's temporal block, convolving over frames only."""

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

    def forward(self, x, emb, **video):
        """x [N, C, H, W] with emb [N, E]; or for dims=3 x [B, C, T, H, W] with emb [B, T, E].
        `video` (num_frames, image_only_indicator) is for SVD's subclass."""
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)
        if h.ndim == 5:
            e = e.transpose(1, 2)  # [B, C, T]
        h = h + e.reshape(*e.shape, *[1] * (h.ndim - e.ndim))
        return self.skip_connection(x) + self.out_layers(h)


def attention_hooks(options, site, block, index, attention, x):
    """The patches of this call at one attention layer (model.CallOptions), or None."""
    if options is None:
        return None
    return options.attention_hooks(site, block, index, attention.heads, attention.to_q.out_features // attention.heads,
                                   x.shape)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context, options=None, block=None, index=0):
        """options: the call's `model.CallOptions` (patches), block / index: where this block sits."""
        x = self.attn1(self.norm1(x), hooks=attention_hooks(options, "attn1", block, index, self.attn1, x)) + x
        x = self.attn2(self.norm2(x), context, hooks=attention_hooks(options, "attn2", block, index, self.attn2, x),
                       run_kept=None if options is None else options.run_kept) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Image tokens through `depth` transformer blocks; 1x1 convolutions (SD 1.x) or linear layers
    (SD 2.x, SDXL, SVD) project in and out."""

    def __init__(self, channels, depth, cfg):
        super().__init__()
        heads, dim_head = cfg.heads(channels)
        self.linear = cfg.linear_projection
        self.norm = normalization(channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels) if self.linear else nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, dim_head, cfg.context_dim) for _ in range(depth))
        self.proj_out = nn.Linear(channels, channels) if self.linear else nn.Conv2d(channels, channels, 1)
        self.block = ("input", 0)  # where it sits in the UNet (attention patches name it); set by the UNet

    def tokens(self, x):
        """[N, C, H, W] -> projected tokens [N, H*W, C]."""
        n, c, h, w = x.shape
        x = self.norm(x)
        if not self.linear:
            x = self.proj_in(x)
        x = x.reshape(n, c, h * w).transpose(1, 2).contiguous()  # else matmul falls back to bmm
        return self.proj_in(x) if self.linear else x

    def image(self, x, shape):
        """Tokens [N, H*W, C] -> projected back to [N, C, H, W]."""
        n, c, h, w = shape
        if self.linear:
            x = self.proj_out(x)
        # contiguous: a channels-last view here would make every later conv re-layout its weight
        x = x.transpose(1, 2).reshape(n, c, h, w).contiguous()
        return x if self.linear else self.proj_out(x)

    def forward(self, x, context, options=None, **video):
        x_in = x
        x = self.tokens(x)
        for index, block in enumerate(self.transformer_blocks):
            x = block(x, context, options, self.block, index)
        return self.image(x, x_in.shape) + x_in


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

    def forward(self, x, emb, context, options=None, output_size=None, **video):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, **video)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, options, **video)
            elif isinstance(layer, Upsample):
                x = layer(x, output_size)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """SD's UNet. Subclasses change the blocks through `res_block` and `transformer` (SVD)."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        mc = cfg.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.adm_in_channels:
            self.label_emb = nn.Sequential(nn.Sequential(
                nn.Linear(cfg.adm_in_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)))
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_channels = [mc]
        ch = mc
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [self.res_block(ch, mult * mc, emb_dim)]
                ch = mult * mc
                if cfg.depth_down(level):
                    layers.append(self.transformer(ch, cfg.depth_down(level)))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
        self.middle_block = EmbedSequential(self.res_block(ch, ch, emb_dim),
                                            self.transformer(ch, cfg.depth_middle()),
                                            self.res_block(ch, ch, emb_dim))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [self.res_block(ch + skip_channels.pop(), mult * mc, emb_dim)]
                ch = mult * mc
                if cfg.depth_up(level):
                    layers.append(self.transformer(ch, cfg.depth_up(level)))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(EmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), Conv2d(mc, cfg.out_channels, 3, padding=1))
        for name, blocks in (("input", self.input_blocks), ("middle", [self.middle_block]), ("output", self.output_blocks)):
            for number, block in enumerate(blocks):
                for layer in block:
                    if isinstance(layer, SpatialTransformer):
                        layer.block = (name, number)

    def res_block(self, ch_in, ch_out, emb_dim):
        return ResBlock(ch_in, emb_dim, ch_out)

    def transformer(self, channels, depth):
        return SpatialTransformer(channels, depth, self.config)

    def forward(self, x, timesteps, context, y=None, options=None, **video):
        """x [N, in_channels, h, w]; timesteps [N]; context [N, L, context_dim]; y [N, adm_in_channels]
        (SDXL); options: the call's `model.CallOptions` (attention and block patches) or None.
        Computes in x's dtype; returns [N, out_channels, h, w]."""
        dtype = x.dtype
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if self.config.adm_in_channels:
            if y is None:
                raise ValueError("this UNet needs the vector conditioning y (SDXL: pooled text and sizes)")
            emb = emb + self.label_emb(y.to(dtype))
        context = context.to(dtype)
        skips = []
        h = x
        for number, block in enumerate(self.input_blocks):
            h = block(h, emb, context, options, **video)
            if options is not None:
                h = options.block_patch("input_block", h, ("input", number))
            skips.append(h)
            if options is not None:
                h = options.block_patch("input_block_after_skip", h, ("input", number))
        h = self.middle_block(h, emb, context, options, **video)
        if options is not None:
            h = options.block_patch("middle_block", h, ("middle", 0))
        for number, block in enumerate(self.output_blocks):
            skip = skips.pop()
            if options is not None:
                h, skip = options.block_patch("output_block", h, ("output", number), skip)
            h = torch.cat([h, skip], dim=1)
            h = block(h, emb, context, options, output_size=skips[-1].shape[-2:] if skips else None, **video)
        return self.out(h)


def _shape(sd, key):
    v = sd[key]
    return tuple(v.shape) if hasattr(v, "shape") else tuple(v)


def walk_levels(sd, prefix: str = ""):
    """(model_channels, channel_mult, res blocks per level, input depth per level, output depth per level,
    middle depth) read from the keys and shapes of a UNet state dict (any mapping to tensors or shapes)."""
    keys = {k[len(prefix):] for k in sd if k.startswith(prefix)}
    missing = [k for k in ("time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight") if k not in keys]
    if missing:
        raise ValueError(f"not a UNet state dict: missing {', '.join(prefix + k for k in missing)}")
    mc = _shape(sd, prefix + "time_embed.0.weight")[1]

    def depth(block: str) -> int:
        pattern = re.compile(re.escape(block) + r"\.1\.transformer_blocks\.(\d+)\.")
        return 1 + max((int(m.group(1)) for k in keys if (m := pattern.match(k))), default=-1)

    n_inputs = 1 + max(int(k.split(".")[1]) for k in keys if k.startswith("input_blocks."))
    mults, res_per_level, depths, count = [], [], [], 0
    for i in range(1, n_inputs):
        if f"input_blocks.{i}.0.op.weight" in keys:
            res_per_level.append(count)
            count = 0
            continue
        if count == 0:
            mults.append(_shape(sd, f"{prefix}input_blocks.{i}.0.out_layers.3.weight")[0] // mc)
            depths.append(depth(f"input_blocks.{i}"))
        count += 1
    res_per_level.append(count)
    if len(set(res_per_level)) != 1:
        raise ValueError(f"unsupported UNet layout: res blocks per level {res_per_level}")
    blocks_per_level = res_per_level[0] + 1
    up_depths = [depth(f"output_blocks.{(len(mults) - 1 - level) * blocks_per_level}") for level in range(len(mults))]
    return mc, tuple(mults), res_per_level[0], tuple(depths), tuple(up_depths), depth("middle_block")


def config_from_state_dict(sd, prefix: str = "") -> UNetConfig:
    """SD 1.x / 2.x / SDXL UNet config from key names and shapes. Heads are not in the weights:
    a 768-wide text context means SD 1.x (8 heads), anything else 64 channels per head."""
    mc, mults, res_blocks, depths, up_depths, middle = walk_levels(sd, prefix)
    first = next(i for i, d in enumerate(depths) if d)
    block = f"{prefix}input_blocks.{1 + first * (res_blocks + 1)}.1"
    context_dim = _shape(sd, f"{block}.transformer_blocks.0.attn2.to_k.weight")[1]
    adm = f"{prefix}label_emb.0.0.weight"
    return UNetConfig(
        in_channels=_shape(sd, prefix + "input_blocks.0.0.weight")[1],
        out_channels=_shape(sd, prefix + "out.2.weight")[0],
        model_channels=mc, channel_mult=mults, num_res_blocks=res_blocks,
        transformer_depth=depths, transformer_depth_output=up_depths if up_depths != depths else None,
        transformer_depth_middle=middle,
        num_heads=8 if context_dim == 768 else -1, num_head_channels=-1 if context_dim == 768 else 64,
        context_dim=context_dim,
        use_linear_in_transformer=len(_shape(sd, f"{block}.proj_in.weight")) == 2,
        adm_in_channels=_shape(sd, adm)[1] if adm in sd else None,
    )
