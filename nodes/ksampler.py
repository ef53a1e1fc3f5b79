"""KSampler and KSamplerAdvanced: any MODEL (SVD, SD 1.x/2.x, SDXL) through `guidance.Guider`.

Step for step what ComfyUI does, so the same workflow and seed give the same latent: noise from
`torch.manual_seed(seed)`; the latent scaled into the model's latent space on the way in and back
on the way out; x = latent + noise * sqrt(1 + sigma_0^2) from the top of the schedule; cond and
uncond batched through the network; the model's CFG patches (SVD's per-frame ramps) on x - denoised;
a LATENT's `noise_mask` limits sampling to the masked area (inpainting).
"""
from __future__ import annotations

import io

import torch

from .common import SEED_MAX, NodeInputError, check_model
from .guidance import Guider
from .model import Model
from .model_management import compute_device, resident
from .sampling import SAMPLER_NAMES, get_sampler
from .sampling_noise import prepare_noise
from .schedules import SCHEDULER_NAMES, ksampler_sigmas, step_range

PREVIEW_SIZE = 256


def check_latent(node: str, model: Model, latent_image, input_name: str = "latent_image") -> torch.Tensor:
    samples = latent_image.get("samples") if isinstance(latent_image, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise NodeInputError(node, input_name, "expected a LATENT with samples [batch, channels, h, w]")
    problem = model.network.check_latent(tuple(samples.shape))
    if problem:
        raise NodeInputError(node, input_name, problem)
    return samples


def check_conditioning(node: str, model: Model, conditioning, input_name: str, latent_shape):
    """Every entry turned into the network's arguments once, so a wrong CONDITIONING is reported
    here, naming the input, rather than from inside the sampler."""
    if not (isinstance(conditioning, list) and conditioning and all(
            isinstance(c, (list, tuple)) and len(c) == 2 and isinstance(c[1], dict) for c in conditioning)):
        raise NodeInputError(node, input_name, "expected CONDITIONING (a list of [tensor, dict] entries)")
    for cross_attn, extra in conditioning:
        try:
            model.network.conditioning(cross_attn, extra, latent_shape, "cpu")
        except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as error:
            raise NodeInputError(node, input_name, f"this {model.network.family} MODEL cannot use it: {error}") from None


def _check_inputs(node, model, positive, negative, latent_image):
    check_model(node, model)
    samples = check_latent(node, model, latent_image)
    for name, cond in (("positive", positive), ("negative", negative)):
        check_conditioning(node, model, cond, name, tuple(samples.shape))
    return samples


def _schedule(node, model: Model, scheduler, steps, denoise, sampler_name) -> torch.Tensor:
    """KSampler's sigmas for this model, or an error naming the input at fault."""
    if scheduler not in SCHEDULER_NAMES:
        raise NodeInputError(node, "scheduler", f"unknown scheduler {scheduler!r}; expected one of {SCHEDULER_NAMES}")
    if not isinstance(steps, int) or steps < 1:
        raise NodeInputError(node, "steps", f"must be at least 1, got {steps!r}")
    return ksampler_sigmas(scheduler, steps, denoise, sampler_name, table=model.sampling)


def latent_preview(model: Model, denoised: torch.Tensor) -> tuple[str, bytes]:
    """A JPEG of the middle frame's current x0 estimate, through the latent space's linear RGB map."""
    from PIL import Image

    frame = denoised[denoised.shape[0] // 2].float().cpu()
    factors = torch.tensor(model.latent_format.rgb_factors)
    if frame.shape[0] != factors.shape[0]:
        frame = frame[:factors.shape[0]]
    rgb = torch.einsum("chw,cr->hwr", frame, factors)
    rgb = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8).numpy()
    image = Image.fromarray(rgb)
    image.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "JPEG", buffer.getvalue()


def progress_callback(context, model: Model, steps: int, seen: dict | None = None):
    """The sampler callback: progress (which also checks for interrupts) and latent previews;
    `seen["denoised"]` keeps the last x0 estimate."""
    preview = context.settings.get("previews", True)

    def callback(state):
        if seen is not None:
            seen["denoised"] = state["denoised"]
        context.progress(state["i"] + 1, steps, latent_preview(model, state["denoised"]) if preview else None)
    return callback


def run_guider(context, guider: Guider, sampler, sigmas, noise, latent: dict, seed, keep_denoised: bool = False):
    """Sample `latent` with a guider on the compute device; returns the new LATENT (raw VAE space),
    and with `keep_denoised` also the last x0 estimate (the model's scaled space, or None)."""
    samples = latent["samples"].to("cpu", torch.float32)
    if sigmas is None or len(sigmas) < 2:  # nothing to do (denoise 0, start past the end)
        return (dict(latent), None) if keep_denoised else dict(latent)
    settings = context.settings
    model = guider.model
    seen = {}
    with model.active(lambda module: resident(module, settings, context.resources)):
        out = guider.sample(sampler, noise, samples, sigmas, denoise_mask=latent.get("noise_mask"),
                            callback=progress_callback(context, model, len(sigmas) - 1, seen), seed=seed,
                            device=compute_device(settings))
    result = dict(latent)
    result["samples"] = out.float().cpu()
    return (result, seen.get("denoised")) if keep_denoised else result


def sample(context, model: Model, seed: int, cfg: float, sampler_name: str, sigmas: torch.Tensor,
           positive, negative, latent: dict, add_noise: bool = True, node: str = "KSampler") -> dict:
    """Run one sampler over `sigmas`; returns the new LATENT dict (raw VAE space)."""
    try:
        sampler = get_sampler(sampler_name)
    except (KeyError, ValueError) as error:
        raise NodeInputError(node, "sampler_name", str(error)) from None
    samples = latent["samples"].to("cpu", torch.float32)  # noise is made on the CPU (ComfyUI's seeds)
    noise = prepare_noise(samples.shape, seed, latent.get("batch_index")) if add_noise else torch.zeros_like(samples)
    guider = Guider(model, positive, negative, cfg, batch_cond_uncond=not context.settings.get("lowvram", False))
    return run_guider(context, guider, sampler, sigmas, noise, latent, seed)


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
        _check_inputs("KSampler", model, positive, negative, latent_image)
        sigmas = _schedule("KSampler", model, scheduler, steps, denoise, sampler_name)
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
        _check_inputs("KSamplerAdvanced", model, positive, negative, latent_image)
        sigmas = _schedule("KSamplerAdvanced", model, scheduler, steps, 1.0, sampler_name)
        sigmas = step_range(sigmas, start_at_step, end_at_step,
                            force_full_denoise=return_with_leftover_noise != "enable")
        return (sample(context, model, noise_seed, cfg, sampler_name, sigmas, positive, negative,
                       latent_image, add_noise=add_noise == "enable", node="KSamplerAdvanced"),)


NODE_CLASS_MAPPINGS = {"KSampler": KSampler, "KSamplerAdvanced": KSamplerAdvanced}
NODE_DISPLAY_NAME_MAPPINGS = {"KSamplerAdvanced": "KSampler (Advanced)"}
