"""CLIP's text transformer (Radford et al., 2021): OpenAI's ViT-L/14 (SD 1.x, SDXL's first encoder),
OpenCLIP's ViT-H/14 (SD 2.x) and ViT-bigG/14 (SDXL's second, with its pooled projection).

Module names are Hugging Face's `CLIPTextModel` names (`embeddings.token_embedding`, `encoder.layers.N.
self_attn.q_proj`, `final_layer_norm`, `text_projection`), the layout of CLIP-L in SD checkpoints;
`openclip_to_hf` renames an OpenCLIP tower (`transformer.resblocks.N.attn.in_proj_weight`, ...) into it.

A causal transformer over 77 tokens. `forward` returns the last layer after the final norm, the
hidden state of a chosen layer (ComfyUI's CLIPSetLastLayer / "penultimate"), and the pooled output:
the final-normed state at the first end token, projected when the tower has a projection.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model import softmax_attention

END_TOKEN = 49407


@dataclass
class CLIPTextConfig:
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    vocab_size: int = 49408
    max_positions: int = 77
    activation: str = "quick_gelu"      # OpenAI's towers; OpenCLIP's H and bigG use "gelu"
    projection: bool = False             # a text_projection for the pooled output (bigG)
    eps: float = 1e-5


CLIP_L = CLIPTextConfig()
OPENCLIP_H = CLIPTextConfig(width=1024, layers=24, heads=16, mlp_dim=4096, activation="gelu")
OPENCLIP_BIGG = CLIPTextConfig(width=1280, layers=32, heads=20, mlp_dim=5120, activation="gelu", projection=True)


class Embeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.width)

    def forward(self, tokens, extra=None):
        """tokens [B, L] ids; `extra` {(b, l): vector} replaces single positions (textual inversion)."""
        x = self.token_embedding(tokens.clamp(0, self.token_embedding.num_embeddings - 1)).float()
        if extra:
            x = x.clone()
            for (b, l), vector in extra.items():
                x[b, l] = vector.to(x.device, x.dtype)
        return x + self.position_embedding.weight[:tokens.shape[1]].float()


class Attention(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(cfg.width, cfg.width) for _ in range(4))

    def forward(self, x, mask):
        return self.out_proj(softmax_attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask))


class MLP(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(cfg.width, cfg.mlp_dim), nn.Linear(cfg.mlp_dim, cfg.width)
        self.quick = cfg.activation == "quick_gelu"

    def forward(self, x):
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.quick else F.gelu(h)
        return self.fc2(h)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layer_norm1, self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps), nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.self_attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.layers))


@dataclass
class TextOutput:
    last: torch.Tensor           # [B, L, D] after final_layer_norm
    hidden: torch.Tensor | None  # [B, L, D] the chosen layer's output (see `forward`)
    pooled: torch.Tensor         # [B, D or projection]


class CLIPTextModel(nn.Module):
    """Parameter names: Hugging Face's CLIPTextModel minus the `text_model.` prefix, plus `text_projection`."""

    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        if cfg.projection:
            self.text_projection = nn.Linear(cfg.width, cfg.width, bias=False)

    def forward(self, tokens, extra=None, layer: int | None = None, norm_hidden: bool = False) -> TextOutput:
        """tokens [B, L]; `layer`: a negative index (-1 last, -2 penultimate, ...) whose output is
        returned as `hidden`, final-normed when `norm_hidden` (SD 1.x, SD 2.x) or not (SDXL)."""
        x = self.embeddings(tokens, extra)
        length = tokens.shape[1]
        mask = torch.full((length, length), float("-inf"), device=x.device).triu(1)
        stop = None if layer is None else self.config.layers + layer
        hidden = None
        for index, block in enumerate(self.encoder.layers):
            x = block(x, mask)
            if index == stop:
                hidden = self.final_layer_norm(x) if norm_hidden else x
        last = self.final_layer_norm(x)
        first_end = (tokens == END_TOKEN).int().argmax(dim=-1)
        pooled = last[torch.arange(last.shape[0], device=last.device), first_end]
        if self.config.projection:
            pooled = self.text_projection(pooled)
        return TextOutput(last, hidden, pooled)


# ----------------------------------------------------------------------------------- layouts

def config_from_state_dict(sd, activation: str = "quick_gelu") -> CLIPTextConfig:
    """A text tower's config from HF-named keys (after `openclip_to_hf`). Heads are not in the weights:
    OpenCLIP's / OpenAI's towers have 64-channel heads. `activation`: quick_gelu for OpenAI's CLIP-L
    (Hugging Face layout in SD files), gelu for OpenCLIP's towers."""
    def shape(key):
        v = sd[key]
        return tuple(v.shape) if hasattr(v, "shape") else tuple(v)

    vocab, width = shape("embeddings.token_embedding.weight")
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers."))
    mlp_dim = shape("encoder.layers.0.mlp.fc1.weight")[0]
    heads = max(1, width // 64)
    return CLIPTextConfig(width=width, layers=layers, heads=heads, mlp_dim=mlp_dim, vocab_size=vocab,
                          max_positions=shape("embeddings.position_embedding.weight")[0], activation=activation,
                          projection="text_projection.weight" in sd)


def openclip_to_hf(sd: dict) -> dict:
    """An OpenCLIP text tower (keys without prefix) in Hugging Face names; q/k/v split, projection transposed."""
    out = {}
    for key, value in sd.items():
        if key == "token_embedding.weight":
            out["embeddings.token_embedding.weight"] = value
        elif key == "positional_embedding":
            out["embeddings.position_embedding.weight"] = value
        elif key.startswith("ln_final."):
            out["final_layer_norm." + key.split(".", 1)[1]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous() if hasattr(value, "t") else tuple(reversed(value))
        elif key.startswith("transformer.resblocks."):
            _, _, n, rest = key.split(".", 3)
            base = f"encoder.layers.{n}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]  # weight / bias
                if hasattr(value, "chunk"):
                    q, k, v = value.chunk(3, dim=0)
                else:  # a shape
                    third = (value[0] // 3, *value[1:])
                    q = k = v = third
                for name, part in (("q", q), ("k", k), ("v", v)):
                    out[f"{base}self_attn.{name}_proj.{kind}"] = part
            else:
                renamed = (rest.replace("attn.out_proj.", "self_attn.out_proj.").replace("ln_1.", "layer_norm1.")
                           .replace("ln_2.", "layer_norm2.").replace("mlp.c_fc.", "mlp.fc1.").replace("mlp.c_proj.", "mlp.fc2."))
                out[base + renamed] = value
        # logit_scale and the attention mask buffer are not part of the text encoder
    return out
