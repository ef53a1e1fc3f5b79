"""ComfyUI's sampling API for node packs, over vidgraph's Guider and samplers (nodes/guidance.py).

- `comfy.sample.sample` / `sample_custom`: what packs' own KSampler variants call (Frame-Interpolation's
  "KSampler Gradually Adding More Denoise"): KSampler's schedule, or a SAMPLER and SIGMAS, with the
  noise tensor the pack made (`comfy.sample.prepare_noise`); the sampled raw latent back.
- `comfy.samplers.CFGGuider`: a GUIDER packs build and subclass (KJNodes' scheduled CFG overrides
  `predict_noise`). It is a vidgraph `Guider`, so SamplerCustomAdvanced runs it; every model call of
  a run goes through `predict_noise(x, timestep, model_options, seed)`, whose default is vidgraph's
  CFG with the MODEL's patches; `model_options["transformer_options"]["sample_sigmas"]` is the run's
  schedule, as in ComfyUI.
- `comfy.samplers.sampling_function(model, x, timestep, uncond, cond, cond_scale, ...)`: CFG of the
  given conditionings (vidgraph's CONDITIONING lists; `uncond=None` = the cond branch alone) on the
  guider's `inner_model`.
- `comfy.samplers.KSAMPLER(fn, extra_options)`: a SAMPLER from a k-diffusion-style function
  `fn(model, x, sigmas, extra_args, callback, disable, **extra_options)`, the signature vidgraph's
  own samplers share.
"""
from __future__ import annotations

import torch

from vidgraph.engine.context import current_context

from .custom_sampling import Sampler
from .guidance import Guider
from .ksampler import check_sampling_inputs, ksampler_schedule
from .model_patcher_face import BaseModelView
from .sampling_run import run_guider, sampler_for
from .schedules import step_range


def _reporting(sampler, pack_callback, total_steps: int):
    """The sampler, also reporting each step to a pack's callback `(step, x0, x, total_steps)`
    (ComfyUI's form) beside vidgraph's own progress callback (k-diffusion's dict)."""
    if pack_callback is None:
        return sampler

    def run(model, x, sigmas, extra_args=None, callback=None, disable=None):
        def both(d):
            if callback is not None:
                callback(d)
            pack_callback(d["i"], d["denoised"], d["x"], total_steps)
        return sampler(model, x, sigmas, extra_args=extra_args, callback=both, disable=disable)
    return run


def _run(guider: Guider, sampler, sigmas, noise, latent_image, noise_mask, callback, seed) -> torch.Tensor:
    """The sampled raw latent (the input itself when the schedule leaves no step)."""
    if sigmas is None or len(sigmas) < 2:
        return latent_image
    latent = {"samples": latent_image}
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask
    sampler = _reporting(sampler, callback, len(sigmas) - 1)
    return run_guider(current_context(), guider, sampler, sigmas, noise, latent, seed)["samples"]


def sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0,
           disable_noise=False, start_step=None, last_step=None, force_full_denoise=False, noise_mask=None,
           sigmas=None, callback=None, disable_pbar=False, seed=None):
    """comfy.sample.sample: KSampler(Advanced) on a raw latent tensor with the pack's noise."""
    node = "comfy.sample.sample"
    check_sampling_inputs(node, model, positive, negative, {"samples": latent_image})
    if sigmas is None:
        sigmas = step_range(ksampler_schedule(node, model, scheduler, steps, denoise, sampler_name), start_step, last_step,
                            force_full_denoise)
    sampler = sampler_for(node, sampler_name)
    noise = torch.zeros_like(latent_image) if disable_noise else noise
    return _run(Guider(model, positive, negative, cfg), sampler, sigmas, noise, latent_image, noise_mask, callback,
                seed)


def sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent_image, noise_mask=None,
                  callback=None, disable_pbar=False, seed=None):
    """comfy.sample.sample_custom: a SAMPLER over SIGMAS with CFG."""
    check_sampling_inputs("comfy.sample.sample_custom", model, positive, negative, {"samples": latent_image})
    return _run(Guider(model, positive, negative, cfg), sampler, sigmas, noise, latent_image, noise_mask, callback,
                seed)


class InnerModel(BaseModelView):
    """`CFGGuider.inner_model`: ComfyUI's BaseModel as packs read it, which `sampling_function` runs
    through guiders kept per conditioning pair (each keeps its prepared conditioning across the steps)."""

    def __init__(self, model):
        super().__init__(model)
        self.model_patcher = model
        self._guiders: dict = {}

    def guided(self, x, sigma, cond, uncond, cond_scale):
        key = (id(cond), id(uncond))
        guider = self._guiders.get(key)
        if guider is None:
            guider = self._guiders[key] = Guider(self.model_patcher, cond, uncond, cond_scale)
        guider.cfg = float(cond_scale)
        return guider.guided(x, torch.as_tensor(sigma, dtype=torch.float32).reshape(-1))


def sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options=None, seed=None):
    """CFG of `cond` and `uncond` (None: the cond prediction alone) at sigma `timestep`."""
    if not isinstance(model, InnerModel):
        raise TypeError(f"comfy.samplers.sampling_function: expected a CFGGuider's inner_model, got {type(model).__name__}")
    return model.guided(x, timestep, cond, uncond, cond_scale)


class CFGGuider(Guider):
    """ComfyUI's CFGGuider: built on a MODEL, conditionings and cfg set afterwards."""

    def __init__(self, model_patcher):
        super().__init__(model_patcher, None, None, 1.0)
        self.model_patcher = model_patcher
        self.inner_model = InnerModel(model_patcher)
        self.conds: dict = {}
        self.original_conds: dict = {}

    def set_conds(self, positive, negative):
        self.inner_set_conds({"positive": positive, "negative": negative})

    def inner_set_conds(self, conds: dict):
        self.conds = dict(conds)
        self.original_conds = dict(conds)
        self.positive, self.negative = conds.get("positive"), conds.get("negative")
        self._entries.clear()

    def set_cfg(self, cfg):
        self.cfg = float(cfg)

    @property
    def model_options(self) -> dict:
        options = dict(self.model_patcher.model_options)
        options["transformer_options"] = {**options.get("transformer_options", {}), "sample_sigmas": self.sample_sigmas}
        return options

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        return Guider.guided(self, x, torch.as_tensor(timestep, dtype=torch.float32).reshape(-1))

    def guided(self, x, sigma):
        return self.predict_noise(x, sigma, model_options=self.model_options, seed=self.seed)

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None, **kwargs):
        """ComfyUI's argument order (noise, latent_image, sampler, sigmas, ...) when a pack calls it
        itself; vidgraph's own order (sampler, noise, latent_image, sigmas, ...) when a sampler node does."""
        if not isinstance(noise, torch.Tensor):   # vidgraph's order: a sampler comes first
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask=denoise_mask, callback=callback,
                                  seed=seed, **kwargs)
        return _run(self, sampler, sigmas, noise, latent_image, denoise_mask, callback, seed)


class KSAMPLER(Sampler):
    """A SAMPLER from a pack's k-diffusion-style sampler function and its options."""

    def __init__(self, sampler_function, extra_options=None, inpaint_options=None):
        super().__init__(getattr(sampler_function, "__name__", "pack_sampler"), dict(extra_options or {}))
        self.sampler_function = sampler_function
        self.inpaint_options = dict(inpaint_options or {})

    def __call__(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        return self.sampler_function(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                     **self.options)


def fill_samplers(module, registry) -> None:
    for name in ("CFGGuider", "sampling_function", "KSAMPLER"):
        setattr(module, name, globals()[name])
    module.Sampler = Sampler


def fill_sample(module, registry) -> None:
    module.sample = sample
    module.sample_custom = sample_custom


VIDGRAPH_COMPAT_FACES = {"comfy.samplers": fill_samplers, "comfy.sample": fill_sample}
