"""Sampling a LATENT for the sampling nodes (KSampler, SamplerCustom, the long-clip nodes): their input checks,
the progress callback with latent previews, and the guided run on the compute device."""
from __future__ import annotations

import io

import torch

from .common import NodeInputError
from .guidance import Guider
from .model import LATENT_SPACE_KEY, LATENT_SPACE_NAMES, Model
from .model_management import compute_device, resident
from .sampling import get_sampler
from .sampling_noise import prepare_noise

PREVIEW_SIZE = 256


def check_latent(node: str, model: Model, latent_image, input_name: str = "latent_image") -> torch.Tensor:
    samples = latent_image.get("samples") if isinstance(latent_image, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise NodeInputError(node, input_name, "expected a LATENT with samples [batch, channels, h, w]")
    problem = model.network.check_latent(tuple(samples.shape))
    if problem:
        raise NodeInputError(node, input_name, problem)
    space, wanted = latent_image.get(LATENT_SPACE_KEY), model.latent_format.space
    if space is not None and space != wanted:
        raise NodeInputError(node, input_name, (
            f"this LATENT is in {LATENT_SPACE_NAMES.get(space, space)} latent space, but this {model.network.family} "
            f"MODEL samples in {LATENT_SPACE_NAMES.get(wanted, wanted)}: decode it with the VAE that made it and "
            "encode the image with this model's VAE (an SDXL still reaches SVD as an image, through "
            "SVD_img2vid_Conditioning)"))
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
    result[LATENT_SPACE_KEY] = model.latent_format.space
    return (result, seen.get("denoised")) if keep_denoised else result


def sampler_for(node: str, sampler_name: str):
    """The sampler function for a sampler_name, or an error naming the node's `sampler_name` input."""
    try:
        return get_sampler(sampler_name)
    except (KeyError, ValueError) as error:
        raise NodeInputError(node, "sampler_name", str(error)) from None


def sample(context, model: Model, seed: int, cfg: float, sampler_name: str, sigmas: torch.Tensor,
           positive, negative, latent: dict, add_noise: bool = True, node: str = "KSampler") -> dict:
    """Run one sampler over `sigmas`; returns the new LATENT dict (raw VAE space)."""
    sampler = sampler_for(node, sampler_name)
    samples = latent["samples"].to("cpu", torch.float32)  # noise is made on the CPU (ComfyUI's seeds)
    noise = prepare_noise(samples.shape, seed, latent.get("batch_index")) if add_noise else torch.zeros_like(samples)
    guider = Guider(model, positive, negative, cfg, batch_cond_uncond=not context.settings.get("lowvram", False))
    return run_guider(context, guider, sampler, sigmas, noise, latent, seed)
