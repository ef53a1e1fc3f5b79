"""Transformer parts shared by SVD's spatial and temporal transformer blocks.

Module and parameter names follow the original checkpoint (`to_q`, `to_out.0`, `ff.net.0.proj`, ...),
so state dicts load without renaming.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..model import run_attention
from ..model import softmax_attention as attention  # the one softmax attention (VAE and CLIP use it too)


class CrossAttention(nn.Module):
    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None, hooks=None, run_kept=None):
        """Returns the attention output; with a one-token context the result is [N, 1, C] and
        broadcasts over the queries (see `single_token`). `hooks`: this layer's patches for this call
        (`model.CallOptions.attention_hooks`), None when no patch runs here; `run_kept`: the sampling
        run's dict (`CallOptions.run_kept`), where the context's keys and values are kept."""
        if hooks is not None:
            return run_attention(self, x, context, hooks)
        if context is None:
            context = x
        elif context.shape[1] == 1:
            return self.single_token(context)
        k, v = self.context_keys_values(context, run_kept)
        return self.to_out(attention(self.to_q(x), k, v, self.heads))

    def context_keys_values(self, context, run_kept=None):
        """to_k / to_v of a cross-attention context. A sampler gives the same context tensor (the Guider's
        batch of prompts) at every step of a run, so within a run (`run_kept`) they are computed once: the
        prompt's keys and values are ~5% of an SDXL step at 512x512. Kept only outside autograd, and only
        while the context is that same, unmodified tensor (the weights do not change within a run)."""
        if run_kept is None or torch.is_grad_enabled():
            return self.to_k(context), self.to_v(context)
        version = None if context.is_inference() else context._version   # inference tensors have no counter
        kept = run_kept.get(self)
        if kept is None or kept[0] is not context or kept[1] != version:
            kept = run_kept[self] = (context, version, self.to_k(context), self.to_v(context))
        return kept[2], kept[3]

    def single_token(self, context):
        # Softmax over a single key is exactly 1, so every query receives that key's value:
        # the query and key projections cannot change the result and are skipped.
        return self.to_out(self.to_v(context))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dim_out: int | None = None, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim_out or dim))

    def forward(self, x):
        return self.net(x)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the activations' dtype (fp16 statistics overflow)."""

    def forward(self, x):
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)
