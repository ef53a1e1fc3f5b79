"""The OpenCLIP ViT-H/14 vision tower that gives SVD its image embedding, with ComfyUI's preprocessing.

Parameter names are the OpenCLIP `visual.*` names, i.e. the SVD single-file keys with
`conditioner.embedders.0.open_clip.model.visual.` stripped. The Hugging Face `vision_model.*`
layout goes through `clip_vision_state_dict_from_any`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..weights import load_exactly
from .attention import attention
from .casting import widened

CHECKPOINT_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Head counts are not in the weights. OpenCLIP's towers by width: B 768/12, L 1024/16, H 1280/16
# (head dim 80), bigG 1664/16 (head dim 104). Any other width uses OpenCLIP's default head dim 64.
KNOWN_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}


def default_heads(width: int) -> int:
    if width in KNOWN_HEADS:
        return KNOWN_HEADS[width]
    return width // 64 if width % 64 == 0 else 1


@dataclass
class CLIPVisionConfig:
    width: int = 1280
    layers: int = 32
    heads: int = 16
    mlp_dim: int = 5120
    patch_size: int = 14
    image_size: int = 224
    output_dim: int = 1024
    in_channels: int = 3
    eps: float = 1e-5


class SelfAttention(nn.Module):
    """nn.MultiheadAttention's parameter names (packed q,k,v), computed with SDPA."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):
        q, k, v = F.linear(x, widened(self.in_proj_weight, x.dtype), widened(self.in_proj_bias, x.dtype, "bias")).chunk(3, dim=-1)
        return self.out_proj(attention(q, k, v, self.heads))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))  # exact (erf) GELU, as ViT-H was trained


class ResidualAttentionBlock(nn.Module):
    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.attn = SelfAttention(cfg.width, cfg.heads)
        self.ln_2 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = MLP(cfg.width, cfg.mlp_dim)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CLIPVisionOutput(dict):
    """ComfyUI's CLIP_VISION_OUTPUT: readable as `out["image_embeds"]` and as `out.image_embeds`.

    image_embeds [N,output_dim] (ln_post on the class token, then proj);
    last_hidden_state [N,tokens,width] (the last block's output, before ln_post);
    penultimate_hidden_states [N,tokens,width] (the second-to-last block's output)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class CLIPVision(nn.Module):
    # Set when the weights stay in the file's 16 bits and each layer casts them as it runs (the
    # checkpoint loader does this for fp32 compute, as ComfyUI keeps its CLIP vision in fp16).
    compute_dtype: torch.dtype | None = None

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"CLIP vision: width {cfg.width} is not divisible by {cfg.heads} heads")
        self.config = cfg
        grid = cfg.image_size // cfg.patch_size
        self.conv1 = nn.Conv2d(cfg.in_channels, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(cfg.width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, cfg.width))
        self.ln_pre = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.layers))
        self.ln_post = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.proj = nn.Parameter(torch.empty(cfg.width, cfg.output_dim))

    @classmethod
    def from_state_dict(cls, sd, heads: int | None = None, dtype: torch.dtype | None = None) -> "CLIPVision":
        """Detect, build on the meta device and adopt the tensors of a CLIP vision state dict in any
        layout `clip_vision_state_dict_from_any` accepts (ValueError on missing/extra/mis-shaped keys)."""
        sd = clip_vision_state_dict_from_any(sd)
        with torch.device("meta"):
            model = cls(config_from_state_dict(sd, heads))
        return load_exactly(model, sd, dtype, "CLIP vision")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype it computes in."""
        return self.compute_dtype or self.proj.dtype

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor) -> CLIPVisionOutput:
        """pixel_values: [N,3,S,S], already normalised (see `clip_preprocess`)."""
        size = self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (self.config.in_channels, size, size):
            raise ValueError(f"CLIP vision: pixel_values must be [N,3,{size},{size}], got {list(pixel_values.shape)}")
        dtype = self.dtype
        x = self.conv1(pixel_values.to(self.proj.device, dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding.to(dtype))
        blocks = self.transformer.resblocks
        penultimate = x
        for i, block in enumerate(blocks):
            x = block(x)
            if i == len(blocks) - 2:
                penultimate = x
        image_embeds = self.ln_post(x[:, 0]) @ self.proj.to(dtype)
        return CLIPVisionOutput(image_embeds=image_embeds, last_hidden_state=x, penultimate_hidden_states=penultimate)

    def encode_image(self, image: torch.Tensor, crop: bool = True) -> CLIPVisionOutput:
        """ComfyUI IMAGE [B,H,W,C] in 0..1 -> CLIPVisionOutput (ComfyUI's CLIPVisionEncode)."""
        return self(clip_preprocess(image, self.config.image_size, crop=crop))


def clip_preprocess(image: torch.Tensor, size: int = 224, crop: bool = True) -> torch.Tensor:
    """ComfyUI's CLIP preprocessing: IMAGE [B,H,W,C] in 0..1 -> normalised [B,3,size,size].

    crop=True: bicubic antialiased resize so the short side is `size`, then a centre crop;
    crop=False: squash the whole frame to size x size. Images already size x size are not resampled.
    Values are rounded to 8-bit levels before CLIP's mean/std, as an 8-bit image would be."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"CLIP preprocess: image must be [B,H,W,3], got {list(image.shape)}")
    x = image[..., :3].movedim(-1, 1).float()
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if crop:
            scale = size / min(h, w)
            target = (max(size, round(h * scale)), max(size, round(w * scale)))
        else:
            target = (size, size)
        x = F.interpolate(x, size=target, mode="bicubic", antialias=True)
        top, left = (target[0] - size) // 2, (target[1] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = (x * 255).clamp(0, 255).round() / 255
    mean = x.new_tensor(CLIP_MEAN).view(3, 1, 1)
    std = x.new_tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------
# Detection and key conversion


def config_from_state_dict(sd, heads: int | None = None) -> CLIPVisionConfig:
    """CLIPVisionConfig from the shapes of a state dict in this module's layout (works on meta
    tensors). `heads` is not in the weights: pass it, or `default_heads(width)` is used."""
    def shape(key):
        if key not in sd:
            raise ValueError(f"CLIP vision state dict: missing {key!r}; not an OpenCLIP vision tower")
        return tuple(sd[key].shape)

    width, in_channels, patch, _ = shape("conv1.weight")
    tokens = shape("positional_embedding")[0]
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1:
        raise ValueError(f"CLIP vision: positional_embedding has {tokens} tokens, not 1 + a square grid")
    layers = len({m.group(1) for k in sd if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    if layers == 0:
        raise ValueError("CLIP vision state dict: no transformer.resblocks.* keys")
    return CLIPVisionConfig(
        width=width,
        layers=layers,
        heads=heads or default_heads(width),
        mlp_dim=shape("transformer.resblocks.0.mlp.c_fc.weight")[0],
        patch_size=patch,
        image_size=grid * patch,
        output_dim=shape("proj")[1],
        in_channels=in_channels,
    )


_HF_LAYER = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
_HF_TOP = {
    "embeddings.class_embedding": "class_embedding",
    "embeddings.patch_embedding.weight": "conv1.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "pre_layrnorm.weight": "ln_pre.weight", "pre_layrnorm.bias": "ln_pre.bias",
    "post_layernorm.weight": "ln_post.weight", "post_layernorm.bias": "ln_post.bias",
}


def hf_to_openclip(sd, prefix: str = "") -> dict:
    """A transformers CLIPVisionModelWithProjection state dict (`vision_model.*`, `visual_projection`)
    -> this module's layout. q/k/v are packed into in_proj; the projection is transposed."""
    vm = prefix + "vision_model."
    out = {}
    for key, tensor in sd.items():
        if not key.startswith(vm):
            continue
        rest = key[len(vm):]
        if rest in _HF_TOP:
            out[_HF_TOP[rest]] = tensor
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", rest):
            layer, name, param = m.groups()
            if name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                continue  # packed below
            if name not in _HF_LAYER:
                raise ValueError(f"CLIP vision (Hugging Face layout): unknown key {key!r}")
            out[f"transformer.resblocks.{layer}.{_HF_LAYER[name]}.{param}"] = tensor
    layers = {m.group(1) for k in sd if (m := re.match(re.escape(vm) + r"encoder\.layers\.(\d+)\.", k))}
    for layer in layers:
        base = f"{vm}encoder.layers.{layer}.self_attn."
        for param in ("weight", "bias"):
            out[f"transformer.resblocks.{layer}.attn.in_proj_{param}"] = torch.cat(
                [sd[f"{base}{p}_proj.{param}"] for p in "qkv"])
    projection = prefix + "visual_projection.weight"
    if projection not in sd:
        raise ValueError("CLIP vision (Hugging Face layout): no visual_projection.weight; "
                         "a CLIPVisionModel without projection cannot give image_embeds")
    out["proj"] = sd[projection].t().contiguous()
    return out


def clip_vision_state_dict_from_any(sd) -> dict:
    """A CLIP vision state dict in any known layout -> this module's layout. Accepts the SVD single
    file (`conditioner.embedders.0.open_clip.model.visual.`; the rest ignored), an OpenCLIP model
    file (`visual.*`, text tower ignored), a bare tower, or the Hugging Face layout
    (`vision_model.*` + `visual_projection.weight`, text tower ignored), under any prefix."""
    hf = next((k for k in sd if k.endswith("vision_model.embeddings.patch_embedding.weight")), None)
    if hf is not None:
        return hf_to_openclip(sd, hf[: -len("vision_model.embeddings.patch_embedding.weight")])
    if CHECKPOINT_PREFIX + "conv1.weight" in sd:
        prefix = CHECKPOINT_PREFIX
    else:
        anchors = [k for k in sd if k.endswith("conv1.weight") and k[: -len("conv1.weight")] + "ln_pre.weight" in sd]
        if not anchors:
            raise ValueError("not a CLIP vision model: no 'conv1.weight' beside 'ln_pre.weight' and no "
                             "'vision_model.*' keys (first keys: " + ", ".join(list(sd)[:5]) + ")")
        prefix = min(anchors, key=len)[: -len("conv1.weight")]
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
