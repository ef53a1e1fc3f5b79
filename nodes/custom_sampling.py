"""ComfyUI's custom-sampling family on any MODEL: noise, sampler, sigmas and guider as separate inputs.

NOISE is an object with `seed` and `generate_noise(latent)`; SAMPLER a `Sampler` (name, function,
options); SIGMAS a float32 tensor; GUIDER a `guidance.Guider` (CFGGuider, BasicGuider = no uncond,
DualCFGGuider = two conditionings and a negative). SamplerCustom(Advanced) return the sampled LATENT
and the last x0 estimate (`denoised_output`), as ComfyUI does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .common import CONTEXT, SEED_MAX, NodeInputError, check_model
from .guidance import Guider, predict_branches, prepare_entries
from .sampling import SAMPLER_NAMES, get_sampler
from .sampling_noise import prepare_noise
from .sampling_run import check_conditioning, check_latent, run_guider, sampler_for
from .schedules import SCHEDULER_NAMES, exponential, karras, ksampler_sigmas


@dataclass
class Sampler:
    """SAMPLER: a sampler function with its options (eta, s_noise, ...)."""
    name: str
    options: dict = field(default_factory=dict)

    def __call__(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        return get_sampler(self.name)(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                                      **self.options)


@dataclass
class RandomNoiseSource:
    seed: int

    def generate_noise(self, latent: dict) -> torch.Tensor:
        samples = latent["samples"]
        return prepare_noise(samples.shape, self.seed, latent.get("batch_index"))


@dataclass
class NoNoise:
    seed: int = 0

    def generate_noise(self, latent: dict) -> torch.Tensor:
        return torch.zeros_like(latent["samples"], dtype=torch.float32, device="cpu")


def check_sigmas(node: str, sigmas, input_name: str = "sigmas") -> torch.Tensor:
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise NodeInputError(node, input_name, "expected SIGMAS (a 1-D tensor of noise levels)")
    return sigmas.float()


class KSamplerSelect:
    CATEGORY = "sampling/custom_sampling/samplers"
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler_name": (SAMPLER_NAMES,)}}

    def get_sampler(self, sampler_name):
        sampler_for("KSamplerSelect", sampler_name)   # an unknown name fails here, naming the input
        return (Sampler(sampler_name),)


class _Scheduler:
    """SIGMAS out: what the scheduler nodes share."""
    CATEGORY = "sampling/custom_sampling/schedulers"
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"


class BasicScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "scheduler": (SCHEDULER_NAMES,),
                             "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def get_sigmas(self, model, scheduler, steps, denoise):
        model = check_model("BasicScheduler", model)
        return (ksampler_sigmas(scheduler, steps, denoise, table=model.sampling),)


def sigma_range_inputs(**more) -> dict:
    """The inputs of the schedulers that span sigma_max..sigma_min directly, in ComfyUI's order."""
    sigma = {"min": 0.0, "max": 5000.0, "step": 0.01, "round": False}
    return {"required": {"steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                         "sigma_max": ("FLOAT", {"default": 14.614642, **sigma}),
                         "sigma_min": ("FLOAT", {"default": 0.0291675, **sigma}), **more}}


class KarrasScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return sigma_range_inputs(rho=("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.01, "round": False}))

    def get_sigmas(self, steps, sigma_max, sigma_min, rho):
        return (karras(steps, sigma_min, sigma_max, rho),)


class ExponentialScheduler(_Scheduler):
    @classmethod
    def INPUT_TYPES(cls):
        return sigma_range_inputs()

    def get_sigmas(self, steps, sigma_max, sigma_min):
        return (exponential(steps, sigma_min, sigma_max),)


class _SigmasEdit:
    """SIGMAS in, SIGMAS out: what the nodes that cut or turn a schedule share."""
    CATEGORY = "sampling/custom_sampling/sigmas"
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"


class _SigmasSplit(_SigmasEdit):
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")


class SplitSigmas(_SigmasSplit):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",), "step": ("INT", {"default": 0, "min": 0, "max": 10000})}}

    def get_sigmas(self, sigmas, step):
        sigmas = check_sigmas("SplitSigmas", sigmas)
        return sigmas[:step + 1], sigmas[step:]


class SplitSigmasDenoise(_SigmasSplit):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",),
                             "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def get_sigmas(self, sigmas, denoise):
        sigmas = check_sigmas("SplitSigmasDenoise", sigmas)
        steps = max(sigmas.shape[-1] - 1, 0)
        total = round(steps * denoise)
        return sigmas[:-total] if total else sigmas, sigmas[-(total + 1):]


class FlipSigmas(_SigmasEdit):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sigmas": ("SIGMAS",)}}

    def get_sigmas(self, sigmas):
        sigmas = check_sigmas("FlipSigmas", sigmas)
        if len(sigmas) == 0:
            return (sigmas,)
        sigmas = sigmas.flip(0)
        if sigmas[0] == 0:
            sigmas[0] = 0.0001
        return (sigmas,)


class _NoiseSource:
    """NOISE out: what the noise nodes share."""
    CATEGORY = "sampling/custom_sampling/noise"
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"


class RandomNoise(_NoiseSource):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX,
                                                    "control_after_generate": True})}}

    def get_noise(self, noise_seed):
        return (RandomNoiseSource(noise_seed),)


class DisableNoise(_NoiseSource):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def get_noise(self):
        return (NoNoise(),)


CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})


def _guider_inputs(node, model, **conditionings):
    model = check_model(node, model)
    for name, cond in conditionings.items():
        check_conditioning(node, model, cond, name, (1, model.latent_format.channels, 8, 8))
    return model


class _GuiderNode:
    """GUIDER out: what the guider nodes share."""
    CATEGORY = "sampling/custom_sampling/guiders"
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"


class CFGGuider(_GuiderNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "cfg": CFG}}

    def get_guider(self, model, positive, negative, cfg):
        return (Guider(_guider_inputs("CFGGuider", model, positive=positive, negative=negative), positive, negative, cfg),)


class BasicGuider(_GuiderNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",)}}

    def get_guider(self, model, conditioning):
        return (Guider(_guider_inputs("BasicGuider", model, conditioning=conditioning), conditioning, None, 1.0),)


class DualGuider(Guider):
    """cfg(cond1 against cond2) + cfg_cond2_negative * (cond2 - negative) (ComfyUI's "regular" style)."""

    def __init__(self, model, cond1, cond2, negative, cfg_conds: float, cfg_cond2_negative: float):
        super().__init__(model, cond1, negative, cfg_conds)
        self.middle, self.cfg2 = cond2, float(cfg_cond2_negative)

    def guided(self, x, sigma):
        branches = [prepare_entries(self.model, c, x.shape, self._sample_inputs) for c in (self.positive, self.middle, self.negative)]
        cond1, cond2, negative = predict_branches(self.model, branches, x, sigma, self.batch_cond_uncond)
        return cond2 + (cond1 - cond2) * self.cfg + (cond2 - negative) * self.cfg2


class DualCFGGuider(_GuiderNode):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "cond1": ("CONDITIONING",), "cond2": ("CONDITIONING",),
                             "negative": ("CONDITIONING",), "cfg_conds": CFG, "cfg_cond2_negative": CFG}}

    def get_guider(self, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative):
        model = _guider_inputs("DualCFGGuider", model, cond1=cond1, cond2=cond2, negative=negative)
        return (DualGuider(model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative),)


def sample_custom(node: str, context, guider, sampler, sigmas, noise_source, latent_image):
    if not isinstance(guider, Guider):
        raise NodeInputError(node, "guider", f"expected a GUIDER, got {type(guider).__name__}")
    if not isinstance(sampler, Sampler):
        raise NodeInputError(node, "sampler", f"expected a SAMPLER, got {type(sampler).__name__}")
    sigmas = check_sigmas(node, sigmas)
    check_latent(node, guider.model, latent_image)
    samples = latent_image["samples"].to("cpu", torch.float32)
    noise = noise_source.generate_noise({**latent_image, "samples": samples})
    guider.batch_cond_uncond = not context.settings.get("lowvram", False)
    out, denoised = run_guider(context, guider, sampler, sigmas, noise, latent_image, noise_source.seed,
                               keep_denoised=True)
    denoised_latent = dict(out)
    if denoised is not None:
        denoised_latent["samples"] = guider.model.latent_format.process_out(denoised.float()).cpu()
    return out, denoised_latent


class _CustomSampler:
    """The sampled LATENT and the last x0 estimate out: what SamplerCustom(Advanced) share."""
    CATEGORY = "sampling/custom_sampling"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"


class SamplerCustom(_CustomSampler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "add_noise": ("BOOLEAN", {"default": True}),
                             "noise_seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}),
                             "cfg": CFG, "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "sampler": ("SAMPLER",), "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)},
                "hidden": CONTEXT}

    def sample(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image, context=None):
        model = _guider_inputs("SamplerCustom", model, positive=positive, negative=negative)
        noise = RandomNoiseSource(noise_seed) if add_noise else NoNoise(noise_seed)
        return sample_custom("SamplerCustom", context, Guider(model, positive, negative, cfg), sampler, sigmas, noise,
                             latent_image)


class SamplerCustomAdvanced(_CustomSampler):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                             "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}, "hidden": CONTEXT}

    def sample(self, noise, guider, sampler, sigmas, latent_image, context=None):
        if not callable(getattr(noise, "generate_noise", None)):
            raise NodeInputError("SamplerCustomAdvanced", "noise", f"expected NOISE, got {type(noise).__name__}")
        return sample_custom("SamplerCustomAdvanced", context, guider, sampler, sigmas, noise, latent_image)


NODE_CLASS_MAPPINGS = {
    "KSamplerSelect": KSamplerSelect, "BasicScheduler": BasicScheduler, "KarrasScheduler": KarrasScheduler,
    "ExponentialScheduler": ExponentialScheduler, "SplitSigmas": SplitSigmas, "SplitSigmasDenoise": SplitSigmasDenoise,
    "FlipSigmas": FlipSigmas, "RandomNoise": RandomNoise, "DisableNoise": DisableNoise, "CFGGuider": CFGGuider,
    "BasicGuider": BasicGuider, "DualCFGGuider": DualCFGGuider, "SamplerCustom": SamplerCustom,
    "SamplerCustomAdvanced": SamplerCustomAdvanced,
}
