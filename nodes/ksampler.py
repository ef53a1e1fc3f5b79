"""KSampler and KSamplerAdvanced for SVD.

Step for step what ComfyUI does with a V_PREDICTION_EDM model, so the same workflow and seed give
the same latent: noise from `torch.manual_seed(seed)`; the latent scaled by 0.18215 on the way in
and back on the way out; x = latent + noise * sqrt(1 + sigma_0^2) from the top of the schedule;
cond and uncond batched through the UNet; the per-frame CFG ramp on x - denoised.
"""
from __future__ import annotations

import io

import torch

from .common import SEED_MAX, NodeInputError
from .context_windows import WindowedVideoDenoiser, freenoise
from .model_management import compute_device, resident
from .sampling import SAMPLER_NAMES, get_sampler
from .sampling_noise import noise_latent, prepare_noise
from .schedules import SCHEDULER_NAMES, ksampler_sigmas, step_range
from .svd.denoiser import GuidedDenoiser, VDenoiser
from .svd.vae import SCALE_FACTOR
from .video_model import VideoModel

PREVIEW_SIZE = 256
# Latent RGB factors of the SD 1.x VAE latent space: a cheap preview without running the decoder.
LATENT_RGB = torch.tensor([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
                           [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]])


def _check_inputs(node, model, positive, negative, latent_image):
    if not isinstance(model, VideoModel):
        raise NodeInputError(node, "model", f"expected an SVD MODEL, got {type(model).__name__}")
    for name, cond in (("positive", positive), ("negative", negative)):
        if not (isinstance(cond, list) and cond and isinstance(cond[0], (list, tuple)) and len(cond[0]) == 2):
            raise NodeInputError(node, name, "expected CONDITIONING from SVD_img2vid_Conditioning")
        if "concat_latent_image" not in cond[0][1]:
            raise NodeInputError(node, name, "SVD needs the image conditioning of SVD_img2vid_Conditioning "
                                             "(no concat_latent_image)")
    samples = latent_image.get("samples") if isinstance(latent_image, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise NodeInputError(node, "latent_image", "expected a LATENT with samples [frames, 4, h, w]")
    config = getattr(model.unet, "config", None)
    if config is None:  # a UNet of another class: the model itself reports what it cannot take
        return samples
    if 2 * samples.shape[1] != config.in_channels:
        raise NodeInputError(node, "latent_image", f"the model samples {config.in_channels // 2}-channel latents, "
                                                   f"got {list(samples.shape)}")
    for name, cond in (("positive", positive), ("negative", negative)):
        embedding, concat = cond[0][0], cond[0][1]["concat_latent_image"]
        if not (isinstance(embedding, torch.Tensor) and embedding.ndim in (2, 3)
                and embedding.shape[-1] == config.context_dim):
            got = list(embedding.shape) if isinstance(embedding, torch.Tensor) else type(embedding).__name__
            raise NodeInputError(node, name, f"the model needs a CLIP vision embedding [1, 1, {config.context_dim}], "
                                             f"got {got}")
        if not (isinstance(concat, torch.Tensor) and concat.ndim == 4 and concat.shape[1] == samples.shape[1]):
            got = list(concat.shape) if isinstance(concat, torch.Tensor) else type(concat).__name__
            raise NodeInputError(node, name, f"concat_latent_image must be a latent [1, {samples.shape[1]}, h, w] "
                                             f"like latent_image, got {got}")
    return samples


def _schedule(node, model: VideoModel, scheduler, steps, denoise, sampler_name) -> torch.Tensor:
    """KSampler's sigmas for this model, or an error naming the input at fault."""
    if scheduler not in SCHEDULER_NAMES:
        raise NodeInputError(node, "scheduler", f"unknown scheduler {scheduler!r}; expected one of {SCHEDULER_NAMES}")
    if not isinstance(steps, int) or steps < 1:
        raise NodeInputError(node, "steps", f"must be at least 1, got {steps!r}")
    table = model.table
    return ksampler_sigmas(scheduler, steps, denoise, sampler_name, table.sigma_min, table.sigma_max)


def _latent_preview(denoised: torch.Tensor) -> tuple[str, bytes]:
    """A JPEG of the middle frame's current x0 estimate, through a linear latent→RGB map."""
    from PIL import Image

    frame = denoised[denoised.shape[0] // 2].float().cpu()
    rgb = torch.einsum("chw,cr->hwr", frame, LATENT_RGB)
    rgb = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8).numpy()
    image = Image.fromarray(rgb)
    image.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "JPEG", buffer.getvalue()


def sample(context, model: VideoModel, seed: int, cfg: float, sampler_name: str, sigmas: torch.Tensor,
           positive, negative, latent: dict, add_noise: bool = True, node: str = "KSampler",
           post_denoise=None) -> dict:
    """Run one sampler over `sigmas`; returns the new LATENT dict (raw VAE space).

    `post_denoise(x, sigma, denoised) -> denoised` edits each guided prediction (in the sampler's
    scaled latent space) before the sampler uses it: SVDExtendClip pins known frames with it."""
    samples = latent["samples"].to("cpu", torch.float32)  # noise is made on the CPU (ComfyUI's seeds)
    if sigmas is None or len(sigmas) < 2:  # nothing to do (denoise 0, start past the end)
        return dict(latent)
    try:
        sampler = get_sampler(sampler_name)
    except (KeyError, ValueError) as error:
        raise NodeInputError(node, "sampler_name", str(error)) from None
    if add_noise:
        noise = prepare_noise(samples.shape, seed, latent.get("batch_index"))
    else:
        noise = torch.zeros_like(samples)
    windows = model.context_windows
    if windows is not None and windows.freenoise and add_noise:
        noise = freenoise(noise, windows.length, windows.overlap, seed)
    settings = context.settings
    device = compute_device(settings)
    x = noise_latent(noise, samples * SCALE_FACTOR, sigmas, model.table.sigma_max).to(device)
    steps = len(sigmas) - 1
    preview = settings.get("previews", True)

    def callback(state):
        denoised = state["denoised"]
        context.progress(state["i"] + 1, steps, _latent_preview(denoised) if preview else None)

    with resident(model.unet, settings, context.resources):
        denoiser = VDenoiser(model.unet, model.compute_dtype, model.sigma_min, model.sigma_max)
        positive_cond, negative_cond = denoiser.condition(positive), denoiser.condition(negative)
        if windows is not None:
            denoiser = WindowedVideoDenoiser(denoiser, windows, sigmas, context.check_interrupt)
        guided = GuidedDenoiser(denoiser, positive_cond, negative_cond, cfg, model.cfg_ramp, model.min_cfg,
                                batch_cond_uncond=not settings.get("lowvram", False))
        if post_denoise is not None:
            predict = guided
            guided = lambda x, sigma, **_: post_denoise(x, sigma, predict(x, sigma))  # noqa: E731
        # Inputs were checked against the model up front (_check_inputs); an error from here on is
        # the model's own and is reported as such, not blamed on an input.
        with torch.inference_mode():
            out = sampler(guided, x, sigmas.to(device), extra_args={"seed": seed}, callback=callback)
    result = dict(latent)
    result["samples"] = (out.float().cpu() / SCALE_FACTOR)
    return result


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
