"""KSampler and KSamplerAdvanced: any MODEL (SVD, SD 1.x/2.x, SDXL) through `guidance.Guider`
(the run itself: `sampling_run.sample`).

Step for step what ComfyUI does, so the same workflow and seed give the same latent: noise from
`torch.manual_seed(seed)`; the latent scaled into the model's latent space on the way in and back
on the way out; x = latent + noise * sqrt(1 + sigma_0^2) from the top of the schedule; cond and
uncond batched through the network; the model's CFG patches (SVD's per-frame ramps) on x - denoised;
a LATENT's `noise_mask` limits sampling to the masked area (inpainting).
"""
from __future__ import annotations

import torch

from vidgraph.engine.context import current_context

from .common import SEED_MAX, NodeInputError, check_model
from .model import Model
from .sampling import SAMPLER_NAMES
from .sampling_run import check_conditioning, check_latent, sample
from .schedules import SCHEDULER_NAMES, ksampler_sigmas, step_range


def check_sampling_inputs(node, model, positive, negative, latent_image):
    check_model(node, model)
    samples = check_latent(node, model, latent_image)
    for name, cond in (("positive", positive), ("negative", negative)):
        check_conditioning(node, model, cond, name, tuple(samples.shape))
    return samples


def ksampler_schedule(node, model: Model, scheduler, steps, denoise, sampler_name) -> torch.Tensor:
    """KSampler's sigmas for this model, or an error naming the input at fault."""
    if scheduler not in SCHEDULER_NAMES:
        raise NodeInputError(node, "scheduler", f"unknown scheduler {scheduler!r}; expected one of {SCHEDULER_NAMES}")
    if not isinstance(steps, int) or steps < 1:
        raise NodeInputError(node, "steps", f"must be at least 1, got {steps!r}")
    return ksampler_sigmas(scheduler, steps, denoise, sampler_name, table=model.sampling)


# The inputs both samplers share, in ComfyUI's order (saved workflows list widget values by it).
SAMPLING_INPUTS = {
    "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
    "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
    "sampler_name": (SAMPLER_NAMES,),
    "scheduler": (SCHEDULER_NAMES,),
    "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
    "latent_image": ("LATENT",),
}


class KSampler:
    DESCRIPTION = "Denoise a latent video with the model, guided by the positive and negative conditioning."
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                             "tooltip": "The noise seed: the same seed gives the same video."}),
            **SAMPLING_INPUTS,
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }, "hidden": {"context": "NODE_CONTEXT"}}

    def sample(self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
               latent_image, denoise=1.0, context=None):
        check_sampling_inputs("KSampler", model, positive, negative, latent_image)
        sigmas = ksampler_schedule("KSampler", model, scheduler, steps, denoise, sampler_name)
        return (sample(context, model, seed, cfg, sampler_name, sigmas, positive, negative, latent_image),)


class KSamplerAdvanced:
    DESCRIPTION = "KSampler with control over noise and the range of steps (for multi-pass sampling)."
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "add_noise": (["enable", "disable"],),
            "noise_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}),
            **SAMPLING_INPUTS,
            "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
            "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
            "return_with_leftover_noise": (["disable", "enable"],),
        }, "hidden": {"context": "NODE_CONTEXT"}}

    def sample(self, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive,
               negative, latent_image, start_at_step, end_at_step, return_with_leftover_noise,
               context=None):
        check_sampling_inputs("KSamplerAdvanced", model, positive, negative, latent_image)
        sigmas = ksampler_schedule("KSamplerAdvanced", model, scheduler, steps, 1.0, sampler_name)
        sigmas = step_range(sigmas, start_at_step, end_at_step,
                            force_full_denoise=return_with_leftover_noise != "enable")
        return (sample(context, model, noise_seed, cfg, sampler_name, sigmas, positive, negative,
                       latent_image, add_noise=add_noise == "enable", node="KSamplerAdvanced"),)


def common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, denoise=1.0,
                    disable_noise=False, start_step=None, last_step=None, force_full_denoise=False):
    """ComfyUI's `nodes.common_ksampler`, which packs call from their own sampler nodes: KSampler's
    schedule (with `denoise`), cut to [start_step, last_step] as KSamplerAdvanced cuts it."""
    node = "common_ksampler"
    check_sampling_inputs(node, model, positive, negative, latent)
    sigmas = step_range(ksampler_schedule(node, model, scheduler, steps, denoise, sampler_name), start_step, last_step,
                        force_full_denoise)
    return (sample(current_context(), model, seed, cfg, sampler_name, sigmas, positive, negative, latent,
                   add_noise=not disable_noise, node=node),)


NODE_CLASS_MAPPINGS = {"KSampler": KSampler, "KSamplerAdvanced": KSamplerAdvanced}
NODE_DISPLAY_NAME_MAPPINGS = {"KSamplerAdvanced": "KSampler (Advanced)"}
