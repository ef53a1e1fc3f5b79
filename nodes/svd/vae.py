"""The SVD autoencoder: the SD KL encoder and the temporal VideoDecoder (or the plain 2-D decoder).

Parameter names are the original single-file keys with `first_stage_model.` stripped, so the
checkpoint loads with no renaming. Layouts from elsewhere go through `vae_state_dict_from_any`.

Who scales: `encode` returns the UNSCALED posterior mean and `decode` takes an unscaled latent.
As in ComfyUI, a LATENT (VAEEncode's output, VAEDecode's input, `.latent` files) and SVD's concat
latent hold these unscaled values; the 0.18215 factor (`SCALE_FACTOR`) is applied by the sampler
alone, on the way in and back on the way out (`nodes/ksampler.py`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import load_exactly
from .attention import attention

SCALE_FACTOR = 0.18215
CHECKPOINT_PREFIX = "first_stage_model."


@dataclass
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    temporal: bool = True          # sgm VideoDecoder (SVD) vs the plain 2-D SD decoder
    video_kernel_size: int = 3     # the (k,1,1) kernel of the temporal convs
    quant_conv: bool = False       # legacy AutoencoderKL and diffusers carry a 1x1 conv on the moments
    post_quant_conv: bool = False  # plain AutoencoderKL only


def Normalize(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=eps)


def in_place() -> bool:
    """Whether activations and sums may overwrite their inputs: yes without autograd (decode, where
    full-resolution activations are the VAE's peak memory), no while training."""
    return not torch.is_grad_enabled()


def silu(x):
    return F.silu(x, inplace=in_place())


def add(x, y):
    return x.add_(y) if in_place() else x + y


class SiLU(nn.Module):
    def forward(self, x):
        return silu(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = Normalize(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = Normalize(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        if in_ch != out_ch:
            self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x, num_frames=None):
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return add(h, x)


class TemporalResBlock(nn.Module):
    """The `time_stack`: a ResBlock of Conv3d (k,1,1) over [B,C,T,H,W]; the GroupNorm eps is 1e-5 here."""

    def __init__(self, ch: int, k: int):
        super().__init__()
        conv = lambda: nn.Conv3d(ch, ch, (k, 1, 1), padding=(k // 2, 0, 0))  # noqa: E731
        # nn.Identity fills the SiLU / dropout slots so indices match in_layers.2, out_layers.3
        self.in_layers = nn.Sequential(Normalize(ch, 1e-5), SiLU(), conv())
        self.out_layers = nn.Sequential(Normalize(ch, 1e-5), SiLU(), nn.Identity(), conv())

    def forward(self, x):
        return add(self.out_layers(self.in_layers(x)), x)


def to_video(x, num_frames):  # [(B T),C,H,W] -> [B,C,T,H,W]
    return x.unflatten(0, (-1, num_frames)).transpose(1, 2)


def from_video(x):  # [B,C,T,H,W] -> [(B T),C,H,W]
    return x.transpose(1, 2).flatten(0, 1)


class VideoResBlock(ResnetBlock):
    def __init__(self, in_ch: int, out_ch: int, k: int):
        super().__init__(in_ch, out_ch)
        self.time_stack = TemporalResBlock(out_ch, k)
        self.mix_factor = nn.Parameter(torch.zeros(1))

    def forward(self, x, num_frames=None):
        spatial = super().forward(x)
        temporal = from_video(self.time_stack(to_video(spatial, num_frames)))
        # VAE blend: alpha weights the TEMPORAL path (the UNet's mixer weights the spatial one)
        alpha = torch.sigmoid(self.mix_factor.to(spatial.dtype))
        if in_place():
            return spatial.lerp_(temporal, alpha)  # alpha * temporal + (1 - alpha) * spatial
        return torch.lerp(spatial, temporal, alpha)


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with 1x1 conv projections."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = Normalize(ch)
        self.q, self.k, self.v = (nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x, num_frames=None):
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q, k, v = (conv(h).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))
        h = attention(q, k, v, heads=1).transpose(1, 2).reshape(b, c, hh, ww)
        return add(self.proj_out(h), x)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad: odd sizes round up


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    def __init__(self, ch: int, make_block):
        super().__init__()
        self.block_1 = make_block(ch, ch)
        self.attn_1 = AttnBlock(ch)
        self.block_2 = make_block(ch, ch)

    def forward(self, x, num_frames=None):
        return self.block_2(self.attn_1(self.block_1(x, num_frames)), num_frames)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        ch_in = cfg.ch
        for level, mult in enumerate(cfg.ch_mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(ch_in, cfg.ch * mult))
                ch_in = cfg.ch * mult
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(ch_in)
            self.down.append(stage)
        self.mid = MidBlock(ch_in, ResnetBlock)
        self.norm_out = Normalize(ch_in)
        self.conv_out = nn.Conv2d(ch_in, 2 * cfg.z_channels, 3, padding=1)  # double_z: mean and logvar

    def forward(self, x):
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid(h)
        return self.conv_out(silu(self.norm_out(h)))


class TimeMixConv2d(nn.Conv2d):
    """conv_out of the VideoDecoder: a 2-D conv, then `time_mix_conv` (Conv3d (k,1,1)) over the frames."""

    def __init__(self, in_ch: int, out_ch: int, k: int):
        super().__init__(in_ch, out_ch, 3, padding=1)
        self.time_mix_conv = nn.Conv3d(out_ch, out_ch, (k, 1, 1), padding=(k // 2, 0, 0))

    def forward(self, x, num_frames=None):
        return from_video(self.time_mix_conv(to_video(super().forward(x), num_frames)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        k = cfg.video_kernel_size
        if cfg.temporal:
            make_block = lambda i, o: VideoResBlock(i, o, k)  # noqa: E731
        else:
            make_block = ResnetBlock
        self.temporal = cfg.temporal
        ch_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, ch_in, 3, padding=1)
        self.mid = MidBlock(ch_in, make_block)
        up = []
        for level in reversed(range(len(cfg.ch_mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(make_block(ch_in, cfg.ch * cfg.ch_mult[level]))
                ch_in = cfg.ch * cfg.ch_mult[level]
            if level != 0:
                stage.upsample = Upsample(ch_in)
            up.insert(0, stage)
        self.up = nn.ModuleList(up)  # indexed by level: up.0 is the full-resolution stage
        self.norm_out = Normalize(ch_in)
        if cfg.temporal:
            self.conv_out = TimeMixConv2d(ch_in, cfg.out_channels, k)
        else:
            self.conv_out = nn.Conv2d(ch_in, cfg.out_channels, 3, padding=1)

    def forward(self, z, num_frames=None):
        """z: [B*T, C, h, w]; the temporal layers treat each run of `num_frames` frames as one video."""
        num_frames = num_frames or z.shape[0]
        h = self.mid(self.conv_in(z), num_frames)
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h, num_frames)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        h = silu(self.norm_out(h))
        return self.conv_out(h, num_frames) if self.temporal else self.conv_out(h)


class VAE(nn.Module):
    # Set when the weights stay in the file's 16 bits and each layer casts them as it runs.
    compute_dtype: torch.dtype | None = None

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.quant_conv:
            self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        if cfg.post_quant_conv:
            self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    @classmethod
    def from_state_dict(cls, sd, dtype: torch.dtype | None = None) -> "VAE":
        """Detect, build on the meta device and adopt the tensors of a VAE state dict in any layout
        `vae_state_dict_from_any` accepts. Missing, unexpected or mis-shaped keys raise ValueError."""
        sd = vae_state_dict_from_any(sd)
        with torch.device("meta"):
            model = cls(config_from_state_dict(sd))
        return load_exactly(model, sd, dtype, "VAE")

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.config.ch_mult) - 1)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype it computes in (the weights may be kept in 16 bits, see `compute_dtype`)."""
        return self.compute_dtype or self.decoder.conv_in.weight.dtype

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor, chunk: int | None = None, callback=None) -> torch.Tensor:
        """pixels [N,3,H,W] in [-1,1] -> posterior mean [N,z,H/8,W/8], unscaled (see module doc).

        `chunk` encodes that many images at a time (None: all at once); `callback(done, N)` follows
        each chunk (progress; raising from it stops the encode)."""
        if pixels.ndim != 4 or pixels.shape[1] != self.config.in_channels or pixels.shape[0] == 0:
            raise ValueError(f"VAE.encode: pixels must be [N,{self.config.in_channels},H,W], got {list(pixels.shape)}")
        chunk = _check_chunk(chunk, pixels.shape[0])
        param = self.decoder.conv_in.weight
        means = []
        for start in range(0, pixels.shape[0], chunk):
            moments = self.encoder(pixels[start:start + chunk].to(param.device, self.dtype))
            if self.config.quant_conv:
                moments = self.quant_conv(moments)
            means.append(moments[:, : self.config.z_channels])
            if callback is not None:
                callback(min(start + chunk, pixels.shape[0]), pixels.shape[0])
        return torch.cat(means)

    @torch.inference_mode()
    def decode(self, z: torch.Tensor, num_frames: int | None = None, chunk: int | None = 14,
               output_device=None, callback=None) -> torch.Tensor:
        """z [B*T, z, h, w] (unscaled) -> pixels [B*T, 3, 8h, 8w], roughly in [-1,1].

        The batch holds videos of `num_frames` frames each (None: one video of all frames). Each video
        is decoded `chunk` frames at a time and the temporal layers see only their chunk, as sgm's
        decoding_t does, so memory per step does not grow with the clip length. On out-of-memory,
        callers retry with a smaller chunk. None decodes each video in one piece. Frames are collected
        on `output_device` (None: the weights' device; "cpu" keeps a long clip off the GPU).
        `callback(done, N)` follows each chunk (progress; raising from it stops the decode)."""
        if z.ndim != 4 or z.shape[1] != self.config.z_channels or z.shape[0] == 0:
            raise ValueError(f"VAE.decode: latent must be [N,{self.config.z_channels},h,w], got {list(z.shape)}")
        n = z.shape[0]
        num_frames = num_frames or n
        if n % num_frames:
            raise ValueError(f"VAE.decode: {n} latent frames are not a whole number of {num_frames}-frame videos")
        chunk = _check_chunk(chunk, num_frames)
        param = self.decoder.conv_in.weight
        out = None
        for video in range(0, n, num_frames):
            for start in range(video, video + num_frames, chunk):
                stop = min(start + chunk, video + num_frames)
                part = z[start:stop].to(param.device, self.dtype)
                if self.config.post_quant_conv:
                    part = self.post_quant_conv(part)
                pixels = self.decoder(part, num_frames=stop - start)
                if out is None:  # written in place: no second copy of the whole clip
                    out = pixels.new_empty((n, *pixels.shape[1:]), device=output_device or pixels.device)
                out[start:stop] = pixels
                if callback is not None:
                    callback(stop, n)
        return out


def _check_chunk(chunk, total):
    if chunk is None:
        return max(total, 1)
    if int(chunk) < 1:
        raise ValueError(f"VAE: chunk must be a positive number of frames, got {chunk}")
    return int(chunk)


# ---------------------------------------------------------------------------------------------
# Detection, loading and key conversion


def config_from_state_dict(sd) -> VAEConfig:
    """VAEConfig from the keys and shapes of a VAE state dict in this module's layout
    (no prefix). Works on meta tensors. Raises ValueError for what this VAE cannot build."""
    def shape(key):
        if key not in sd:
            raise ValueError(f"VAE state dict: missing {key!r}; not an SD/SVD VAE in the original layout")
        return tuple(sd[key].shape)

    levels = sorted({int(m.group(1)) for key in sd if (m := re.match(r"encoder\.down\.(\d+)\.", key))})
    if not levels:
        raise ValueError("VAE state dict: no encoder.down.* keys; not an SD/SVD VAE in the original layout")
    blocks = {int(m.group(1)) for key in sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", key))}
    if any(re.match(r"(en|de)coder\.(down|up)\.\d+\.attn\.", key) for key in sd):
        raise ValueError("VAE state dict: attention inside down/up stages is not supported (SD/SVD VAEs have none)")
    ch, in_channels = shape("encoder.conv_in.weight")[:2]
    z_channels = shape("decoder.conv_in.weight")[1]
    if shape("encoder.conv_out.weight")[0] != 2 * z_channels:
        raise ValueError("VAE state dict: encoder.conv_out must give 2 x z_channels (double_z) moments")
    temporal = "decoder.conv_out.time_mix_conv.weight" in sd
    return VAEConfig(
        in_channels=in_channels,
        out_channels=shape("decoder.conv_out.weight")[0],
        ch=ch,
        ch_mult=tuple(shape(f"encoder.down.{i}.block.0.conv1.weight")[0] // ch for i in levels),
        num_res_blocks=len(blocks),
        z_channels=z_channels,
        temporal=temporal,
        video_kernel_size=shape("decoder.conv_out.time_mix_conv.weight")[2] if temporal else 3,
        quant_conv="quant_conv.weight" in sd,
        post_quant_conv="post_quant_conv.weight" in sd,
    )


_DIFFUSERS_RESNET = {"conv_shortcut": "nin_shortcut"}
_DIFFUSERS_TEMPORAL = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3"}
_DIFFUSERS_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _diffusers_key(key: str, num_levels: int) -> str:
    """One diffusers AutoencoderKL(TemporalDecoder) key -> the original sgm/ldm key."""
    def resnet(rest):
        if rest.startswith("temporal_res_block."):
            name, param = rest[len("temporal_res_block."):].rsplit(".", 1)
            return f"time_stack.{_DIFFUSERS_TEMPORAL[name]}.{param}"
        if rest.startswith("time_mixer."):
            return rest[len("time_mixer."):]
        rest = rest.removeprefix("spatial_res_block.")
        name, param = rest.rsplit(".", 1)
        return f"{_DIFFUSERS_RESNET.get(name, name)}.{param}"

    side, rest = key.split(".", 1)
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        kind, i, j, tail = m.groups()
        level = int(i) if kind == "down" else num_levels - 1 - int(i)
        return f"{side}.{kind}.{level}.block.{j}.{resnet(tail)}"
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(down|up)samplers\.0\.(.+)", rest):
        kind, i, _, tail = m.groups()
        level = int(i) if kind == "down" else num_levels - 1 - int(i)
        return f"{side}.{kind}.{level}.{kind}sample.{tail}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):
        return f"{side}.mid.block_{int(m.group(1)) + 1}.{resnet(m.group(2))}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)\.(weight|bias)", rest):
        return f"{side}.mid.attn_1.{_DIFFUSERS_ATTN[m.group(1)]}.{m.group(2)}"
    renames = {"conv_norm_out": "norm_out", "time_conv_out": "conv_out.time_mix_conv"}
    name, param = rest.rsplit(".", 1)
    return f"{side}.{renames.get(name, name)}.{param}"


def diffusers_to_original(sd) -> dict:
    """A diffusers AutoencoderKLTemporalDecoder (or AutoencoderKL) state dict -> this module's layout."""
    num_levels = 1 + max(int(m.group(1)) for key in sd if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", key)))
    out = {}
    for key, tensor in sd.items():
        if key.startswith(("quant_conv.", "post_quant_conv.")):
            out[key] = tensor
            continue
        if not key.startswith(("encoder.", "decoder.")):
            continue
        new = _diffusers_key(key, num_levels)
        if ".mid.attn_1." in new and new.endswith("weight") and tensor.ndim == 2:
            tensor = tensor.reshape(*tensor.shape, 1, 1)  # Linear -> 1x1 conv
        out[new] = tensor
    return out


_VAE_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def vae_state_dict_from_any(sd) -> dict:
    """A VAE state dict in any known layout -> this module's layout (tensors untouched except the
    diffusers attention reshape). Accepts: the SVD/SD single file (`first_stage_model.` prefix; other
    model parts are ignored), a bare original-layout VAE file, the diffusers layout (AutoencoderKL or
    AutoencoderKLTemporalDecoder, `vae/diffusion_pytorch_model.safetensors`), or any of them under
    some other prefix (e.g. `vae.`)."""
    anchor = next((k for k in sd if k.endswith("decoder.conv_in.weight")), None)
    if anchor is None:
        raise ValueError(
            "not a VAE: no '*decoder.conv_in.weight' key (first keys: " + ", ".join(list(sd)[:5]) + ")")
    if CHECKPOINT_PREFIX + "decoder.conv_in.weight" in sd:
        prefix = CHECKPOINT_PREFIX
    else:
        prefix = anchor[: -len("decoder.conv_in.weight")]
    bare = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix) and k[len(prefix):].startswith(_VAE_PARTS)}
    if any(k.startswith("decoder.up_blocks.") or k.startswith("encoder.down_blocks.") for k in bare):
        return diffusers_to_original(bare)
    return bare
