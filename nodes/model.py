"""The MODEL type: a network, its parameterisation, and patches.

Every model family (SVD, SD 1.x/2.x, SDXL) is sampled through this one class. A `Network` adapter
turns a CONDITIONING entry into the network's keyword arguments and runs the network; the
parameterisation (`model_sampling`) turns its output into D(x; sigma); patches hook in around the
network call, around classifier-free guidance (`guidance.py`), around attention layers and UNet
blocks. Each patch may be limited to a sigma range.

Patching clones: a node that patches calls `model.clone()`, registers on the clone and returns it,
so the MODEL an upstream node cached never changes. See docs/ARCHITECTURE.md ("MODEL").

This module, `model_sampling` and `weights` are the bottom layer the model files (`svd/`, `sd/`)
build on: they import nothing else from the node pack.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch

from .model_patcher_face import ComfyModelPatcher
from .weight_patches import add_to_table, patched_weights

ATTENTION_SITES = ("attn1", "attn2", "temporal_attn1", "temporal_attn2")
# transformer_options key: a dict that lives for one sampling run (the Guider's), where layers keep what
# they derive from the run's unchanging inputs (the prompt's attention keys and values).
RUN_KEPT = "vidgraph.run_kept"
ATTENTION_STAGES = ("input", "replace", "output")
BLOCK_STAGES = ("input_block", "input_block_after_skip", "middle_block", "output_block")


def softmax_attention(q, k, v, heads: int, mask=None):
    """Multi-head softmax attention on [N, L, heads*d] tensors (what a "replace" patch stands in for)."""
    n, lq, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(n, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(n, lq, inner)


# A LATENT made by a sampler or a VAE that knows its latent space carries its name under this key, so a
# latent of another space (an SDXL latent given to SVD, an SVD latent to SDXL) is refused by name.
LATENT_SPACE_KEY = "vidgraph_latent_space"
LATENT_SPACE_NAMES = {"sd": "SD's (SD 1.x / 2.x, SVD)", "sdxl": "SDXL's"}


@dataclass(frozen=True)
class LatentFormat:
    """How the sampler's latent space relates to the VAE's: x_model = (x_vae - shift) * scale_factor.
    `space` names the VAE latent space (LATENT_SPACE_NAMES): models sharing a VAE share it."""
    space: str = "sd"
    channels: int = 4
    scale_factor: float = 0.18215
    shift: float = 0.0
    # Linear latent -> RGB map for cheap previews (one row per latent channel).
    rgb_factors: tuple = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350),
                          (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))

    def process_in(self, latent):
        return (latent - self.shift) * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor + self.shift


SD15_LATENT = LatentFormat()
SDXL_LATENT = LatentFormat(space="sdxl", scale_factor=0.13025, rgb_factors=(
    (0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188)))


@dataclass
class Patch:
    """A registered callable with the sigma range it runs in (None: always)."""
    fn: Callable
    sigma_range: tuple[float, float] | None = None
    block: tuple | None = None
    transformer_index: int | None = None

    def active(self, sigma: float) -> bool:
        if self.sigma_range is None:
            return True
        high, low = self.sigma_range
        return low <= sigma <= high

    def at(self, block, transformer_index) -> bool:
        return ((self.block is None or tuple(self.block) == tuple(block))
                and (self.transformer_index is None or self.transformer_index == transformer_index))


@dataclass
class Patches:
    """Every registration of one MODEL; `copy()` copies the lists, never the callables."""
    model_wrappers: list = field(default_factory=list)
    denoise_wrappers: list = field(default_factory=list)
    cfg_function: Patch | None = None
    pre_cfg: list = field(default_factory=list)
    post_cfg: list = field(default_factory=list)
    disable_cfg1_optimization: bool = False
    attention: dict = field(default_factory=dict)   # (site, stage) -> [Patch]
    blocks: dict = field(default_factory=dict)      # stage -> [Patch]

    def copy(self) -> "Patches":
        return Patches(list(self.model_wrappers), list(self.denoise_wrappers), self.cfg_function,
                       list(self.pre_cfg), list(self.post_cfg), self.disable_cfg1_optimization,
                       {k: list(v) for k, v in self.attention.items()}, {k: list(v) for k, v in self.blocks.items()})

    def touches_attention(self) -> bool:
        return any(self.attention.values())


@dataclass
class AttentionHooks:
    """The patches active at one attention layer for one call, and the `info` they are given."""
    input: list
    replace: Callable | None
    output: list
    info: dict


@dataclass
class CallOptions:
    """What one network call carries down to its layers: the patches and the call's facts.

    `transformer_options` is ComfyUI's free dict (copied per call); the network adds `num_frames`.
    """
    patches: Patches
    sigma: torch.Tensor                      # [N]
    cond_or_uncond: list
    original_shape: tuple
    transformer_options: dict = field(default_factory=dict)
    num_frames: int | None = None

    @property
    def sigma_value(self) -> float:
        return float(self.sigma.reshape(-1)[0])

    @property
    def run_kept(self) -> dict | None:
        """The sampling run's dict for derived values (RUN_KEPT), None outside a Guider's run."""
        return self.transformer_options.get(RUN_KEPT)

    def _info(self, **facts) -> dict:
        info = dict(self.transformer_options)
        info.update(sigmas=self.sigma, cond_or_uncond=self.cond_or_uncond, original_shape=list(self.original_shape),
                    num_frames=self.num_frames, attention=softmax_attention, **facts)
        return info

    def attention_hooks(self, site: str, block, transformer_index: int, heads: int, dim_head: int,
                        activations_shape) -> AttentionHooks | None:
        """The hooks for this layer, or None when no patch runs here (the network may take shortcuts)."""
        if not self.patches.attention:
            return None
        sigma = self.sigma_value
        chosen = {stage: [p for p in self.patches.attention.get((site, stage), ())
                          if p.at(block, transformer_index) and p.active(sigma)] for stage in ATTENTION_STAGES}
        if not any(chosen.values()):
            return None
        info = self._info(block=tuple(block), transformer_index=transformer_index, block_index=transformer_index,
                          site=site, temporal=site.startswith("temporal"), n_heads=heads, dim_head=dim_head,
                          activations_shape=list(activations_shape))
        replace = chosen["replace"][-1].fn if chosen["replace"] else None
        return AttentionHooks([p.fn for p in chosen["input"]], replace, [p.fn for p in chosen["output"]], info)

    def block_patch(self, stage: str, h, block, skip=None):
        """Run the block patches of `stage` at `block`: returns h (or (h, skip) for output_block)."""
        patches = [p for p in self.patches.blocks.get(stage, ()) if p.active(self.sigma_value)]
        if not patches:
            return h if skip is None else (h, skip)
        info = self._info(block=tuple(block))
        for patch in patches:
            if skip is None:
                h = patch.fn(h, info)
            else:
                h, skip = patch.fn(h, skip, info)
        return h if skip is None else (h, skip)


def run_attention(attention_module, x, context, hooks: AttentionHooks):
    """One attention layer with patches: input patches on (x, context, value), the projections,
    softmax attention or the replace patch, `to_out`, then the output patches."""
    n = x
    context = x if context is None else context
    value = context
    for fn in hooks.input:
        n, context, value = fn(n, context, value, hooks.info)
    q, k, v = attention_module.to_q(n), attention_module.to_k(context), attention_module.to_v(value)
    if hooks.replace is not None:
        out = hooks.replace(q, k, v, hooks.info)
    else:
        out = softmax_attention(q, k, v, attention_module.heads)
    out = attention_module.to_out(out)
    for fn in hooks.output:
        out = fn(out, hooks.info)
    return out


class Network:
    """One model family's adapter between the sampler and its nn.Module (see docs/ARCHITECTURE.md).

    Subclasses set `module`, `family` and implement `conditioning` and `__call__`.
    """
    family = "unknown"
    module: torch.nn.Module
    compute_dtype: torch.dtype = torch.float32

    def conditioning(self, cross_attn, extra: dict, x_shape, device) -> dict:
        """CONDITIONING entry -> keyword arguments with one row per row of x (float32 on `device`)."""
        raise NotImplementedError

    def __call__(self, x_in, t, options: CallOptions, **c):
        raise NotImplementedError

    def check_latent(self, shape) -> str | None:
        """Why a latent of this shape cannot be sampled by this network, or None."""
        return None

    @property
    def device(self):
        return next(self.module.parameters()).device


def _scope(sigma_range):
    if sigma_range is None:
        return None
    high, low = (float(s) for s in sigma_range)
    return (high, low) if high >= low else (low, high)


class Model(ComfyModelPatcher):
    """The MODEL type: `network` + `sampling` (parameterisation) + `patches`; see the module docstring."""

    def __init__(self, network: Network, sampling, latent_format: LatentFormat = SD15_LATENT,
                 patches: Patches | None = None, transformer_options: dict | None = None):
        self.network = network
        self.sampling = sampling
        self.latent_format = latent_format
        self.patches = patches or Patches()
        self.transformer_options = transformer_options or {}
        self.weight_patches: dict = {}   # parameter name -> (PatchEntry, ...): see weight_patches.py

    def __repr__(self):
        return f"Model({self.network.family}, {self.sampling.describe()})"

    # ---------------------------------------------------------------- cloning

    def clone(self) -> "Model":
        """Shares the network's weights and the patch callables; every registration list is copied."""
        twin = copy.copy(self)
        twin.patches = self.patches.copy()
        twin.transformer_options = copy.copy(self.transformer_options)
        return twin

    # ---------------------------------------------------------------- registration (on a clone)

    def percent_range(self, start_percent: float, end_percent: float) -> tuple[float, float]:
        """ComfyUI's start/end percent of sampling as a (sigma_high, sigma_low) range."""
        return (self.sampling.percent_to_sigma(start_percent), self.sampling.percent_to_sigma(end_percent))

    def add_model_wrapper(self, fn, sigma_range=None):
        self.patches.model_wrappers.append(Patch(fn, _scope(sigma_range)))

    def add_denoise_wrapper(self, fn, sigma_range=None):
        self.patches.denoise_wrappers.append(Patch(fn, _scope(sigma_range)))

    def set_cfg_function(self, fn, sigma_range=None, disable_cfg1_optimization=False):
        self.patches.cfg_function = Patch(fn, _scope(sigma_range))
        self.patches.disable_cfg1_optimization |= disable_cfg1_optimization

    def add_pre_cfg(self, fn, sigma_range=None, disable_cfg1_optimization=False):
        self.patches.pre_cfg.append(Patch(fn, _scope(sigma_range)))
        self.patches.disable_cfg1_optimization |= disable_cfg1_optimization

    def add_post_cfg(self, fn, sigma_range=None, disable_cfg1_optimization=False):
        self.patches.post_cfg.append(Patch(fn, _scope(sigma_range)))
        self.patches.disable_cfg1_optimization |= disable_cfg1_optimization

    def add_attention_patch(self, site: str, stage: str, fn, block=None, transformer_index=None, sigma_range=None):
        if site not in ATTENTION_SITES:
            raise ValueError(f"unknown attention site {site!r}; expected one of {ATTENTION_SITES}")
        if stage not in ATTENTION_STAGES:
            raise ValueError(f"unknown attention stage {stage!r}; expected one of {ATTENTION_STAGES}")
        if block is not None:
            block = (str(block[0]), int(block[1]))
        self.patches.attention.setdefault((site, stage), []).append(
            Patch(fn, _scope(sigma_range), block, transformer_index))

    def add_block_patch(self, stage: str, fn, sigma_range=None):
        if stage not in BLOCK_STAGES:
            raise ValueError(f"unknown block stage {stage!r}; expected one of {BLOCK_STAGES}")
        self.patches.blocks.setdefault(stage, []).append(Patch(fn, _scope(sigma_range)))

    def set_sampling(self, sampling):
        self.sampling = sampling

    def add_weight_patches(self, patches: dict, strength_patch: float = 1.0, strength_model: float = 1.0) -> list:
        """Add weight patches {parameter name: patch} (`weight_patches.as_patch` forms) on the network's
        parameter names, or ComfyUI's (`diffusion_model.` + name); returns the keys that named a parameter."""
        known = set(self.network.module.state_dict().keys())
        self.weight_patches, matched = add_to_table(
            self.weight_patches, patches, known, strength_patch, strength_model, rename=_network_name)
        return matched

    # ---------------------------------------------------------------- use

    def apply(self, x, sigma, c: dict, cond_or_uncond=None, transformer_options=None):
        """D(x; sigma) for a batch whose network arguments are `c`, through the model wrappers."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        cond_or_uncond = list(cond_or_uncond or [0])
        options = dict(self.transformer_options, **(transformer_options or {}))

        def innermost(input, timestep, **kwargs):
            return self._denoise(input, timestep, kwargs, cond_or_uncond, options)

        call = innermost
        for patch in self.patches.model_wrappers:
            if patch.active(float(sigma[0])):
                call = _wrapped(patch.fn, call, cond_or_uncond)
        return call(x, sigma, **c)

    def _denoise(self, x, sigma, c, cond_or_uncond, transformer_options):
        c = dict(c)
        transformer_options = {**transformer_options, **c.pop("transformer_options", {})}
        options = CallOptions(self.patches, sigma, cond_or_uncond, tuple(x.shape), transformer_options)
        x_in = self.sampling.calculate_input(sigma, x)
        t = self.sampling.timestep(sigma)
        out = self.network(x_in, t, options, **c).float()
        return self.sampling.calculate_denoised(sigma, out, x)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.network.compute_dtype

    @contextmanager
    def active(self, residency):
        """The network ready to run for the duration: `residency(module)` is the caller's context
        manager that puts the weights on the compute device (`model_management.resident`). The MODEL's
        weight patches are applied inside and the original weights are back afterwards."""
        with residency(self.network.module), patched_weights(self.network.module, self.weight_patches):
            yield self


def _network_name(key: str) -> str:
    return key[len("diffusion_model."):] if key.startswith("diffusion_model.") else key


def _wrapped(fn, inner, cond_or_uncond):
    def call(input, timestep, **c):
        return fn(inner, {"input": input, "timestep": timestep, "c": c, "cond_or_uncond": cond_or_uncond})
    return call

