"""Image latents (ComfyUI's): empty latents, resizing, compositing, and the inpainting masks.

A LATENT is `{"samples": [B, 4, H/8, W/8]}` in the VAE's raw space; `noise_mask` [B, 1, H, W] (or
in latent cells) limits KSampler to the masked part. `common_upscale`'s methods and crop rule are
`resizing.resize`'s; `bislerp` is ComfyUI's spherical interpolation of latent vectors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .common import CONTEXT, MAX_RESOLUTION, NodeInputError, check_fits_in_memory, require_model
from .image_io import check_rgb_batch
from .resizing import center_crop_to_aspect, resize
from .vae_coding import encode_pixels

LATENT_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]


def latent_samples(latent, node: str, input_name: str = "samples") -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise NodeInputError(node, input_name, "expected a LATENT with 'samples' [batch, channels, h, w]")
    return samples


def upscale_latent(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    if method == "bislerp":
        if crop == "center":
            samples = center_crop_to_aspect(samples, width, height)
        return bislerp(samples, width, height)
    return resize(samples, width, height, method, crop)


def _slerp(a, b, t):
    """Spherical interpolation of row vectors a, b [N, C] by t [N, 1]; norms are interpolated linearly."""
    a_norm, b_norm = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    a_unit = torch.where(a_norm > 0, a / a_norm.clamp_min(1e-12), torch.zeros_like(a))
    b_unit = torch.where(b_norm > 0, b / b_norm.clamp_min(1e-12), torch.zeros_like(b))
    dot = (a_unit * b_unit).sum(-1, keepdim=True)
    omega = torch.acos(dot.clamp(-1, 1))
    sin_omega = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / sin_omega) * a_unit + (torch.sin(t * omega) / sin_omega) * b_unit
    out = out * (a_norm * (1 - t) + b_norm * t)
    out = torch.where(dot > 1 - 1e-5, a, out)                      # (nearly) the same direction
    return torch.where(dot < 1e-5 - 1, a * (1 - t) + b * t, out)   # opposite: plain lerp


def _source_positions(old: int, new: int, device):
    """For each of `new` positions: the left source index, the right one and the fraction between,
    as bilinear resampling (half-pixel centres) places them."""
    coords = F.interpolate(torch.arange(old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1),
                           size=(1, new), mode="bilinear").reshape(-1)
    left = coords.floor().long()
    right = (left + 1).clamp(max=old - 1)
    return left, right, (coords - left).reshape(-1, 1)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize [B, C, H, W] by slerping the C-vectors of neighbouring cells, along width then height."""
    dtype = samples.dtype
    x = samples.float()
    b, c, h, w = x.shape
    left, right, t = _source_positions(w, width, x.device)
    rows = x.permute(0, 2, 3, 1)                                          # [B, H, W, C]
    a, z = rows[:, :, left].reshape(-1, c), rows[:, :, right].reshape(-1, c)
    x = _slerp(a, z, t.repeat(b * h, 1)).reshape(b, h, width, c)
    left, right, t = _source_positions(h, height, x.device)
    a, z = x[:, left].reshape(-1, c), x[:, right].reshape(-1, c)
    t = t.reshape(1, -1, 1).expand(b, -1, width).reshape(-1, 1)
    x = _slerp(a, z, t).reshape(b, height, width, c)
    return x.permute(0, 3, 1, 2).to(dtype)


class EmptyLatentImage:
    DESCRIPTION = "A batch of empty (zero) latent images to sample from."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        size = ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8})
        return {"required": {"width": size, "height": size,
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def generate(self, width, height, batch_size=1):
        shape = (batch_size, 4, height // 8, width // 8)
        check_fits_in_memory(shape, "EmptyLatentImage", "batch_size")
        return ({"samples": torch.zeros(shape)},)


class LatentUpscale:
    DESCRIPTION = "Resize latents to a size in pixels (0 keeps the aspect ratio from the other side)."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        size = ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {"required": {"samples": ("LATENT",), "upscale_method": (LATENT_UPSCALE_METHODS,),
                             "width": size, "height": size, "crop": (["disabled", "center"],)}}

    def upscale(self, samples, upscale_method, width, height, crop):
        x = latent_samples(samples, "LatentUpscale")
        if width == 0 and height == 0:
            return (samples,)
        if width == 0:
            height = max(64, height)
            width = max(64, round(x.shape[-1] * height / x.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(x.shape[-2] * width / x.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = upscale_latent(x, width // 8, height // 8, upscale_method, crop)
        out.pop("noise_mask", None)  # it no longer lines up
        return (out,)


class LatentUpscaleBy:
    DESCRIPTION = "Resize latents by a factor."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "upscale_method": (LATENT_UPSCALE_METHODS,),
                             "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01})}}

    def upscale(self, samples, upscale_method, scale_by):
        x = latent_samples(samples, "LatentUpscaleBy")
        width, height = max(1, round(x.shape[-1] * scale_by)), max(1, round(x.shape[-2] * scale_by))
        check_fits_in_memory((x.shape[0], x.shape[1], height, width), "LatentUpscaleBy", "scale_by")
        out = dict(samples)
        out["samples"] = upscale_latent(x, width, height, upscale_method)
        out.pop("noise_mask", None)
        return (out,)


class LatentComposite:
    DESCRIPTION = "Paste one latent onto another at a position (pixels), with a feathered edge."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        offset = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {"required": {"samples_to": ("LATENT",), "samples_from": ("LATENT",), "x": offset, "y": offset,
                             "feather": offset}}

    def composite(self, samples_to, samples_from, x, y, feather):
        to = latent_samples(samples_to, "LatentComposite", "samples_to")
        source = latent_samples(samples_from, "LatentComposite", "samples_from")
        if to.shape[1] != source.shape[1]:
            raise NodeInputError("LatentComposite", "samples_from", f"{source.shape[1]} channels, samples_to has "
                                                                    f"{to.shape[1]}")
        x, y, feather = x // 8, y // 8, feather // 8
        source = source[:, :, :to.shape[2] - y, :to.shape[3] - x]
        mask = torch.ones_like(source)
        for t in range(feather):
            ramp = (t + 1) / feather
            if y != 0:
                mask[:, :, t:t + 1, :] *= ramp
            if y + source.shape[2] < to.shape[2]:
                mask[:, :, mask.shape[2] - 1 - t:mask.shape[2] - t, :] *= ramp
            if x != 0:
                mask[:, :, :, t:t + 1] *= ramp
            if x + source.shape[3] < to.shape[3]:
                mask[:, :, :, mask.shape[3] - 1 - t:mask.shape[3] - t] *= ramp
        out = dict(samples_to)
        samples = to.clone()
        region = samples[:, :, y:y + source.shape[2], x:x + source.shape[3]]
        region.copy_(source * mask + region * (1 - mask))
        out["samples"] = samples
        return (out,)


class SetLatentNoiseMask:
    DESCRIPTION = "Sample only where the mask is 1 (inpainting); the rest of the latent is kept."
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    def set_mask(self, samples, mask):
        latent_samples(samples, "SetLatentNoiseMask")
        if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
            raise NodeInputError("SetLatentNoiseMask", "mask", "expected a MASK [batch, height, width]")
        out = dict(samples)
        out["noise_mask"] = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        return (out,)


class VAEEncodeForInpaint:
    DESCRIPTION = "Encode an image for inpainting: the masked area is greyed out and becomes the noise mask."
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",), "mask": ("MASK",),
                             "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1})},
                "hidden": CONTEXT}

    def encode(self, pixels, vae, mask, grow_mask_by=6, context=None):
        node = "VAEEncodeForInpaint"
        pixels = check_rgb_batch(pixels, node, "pixels")
        require_model(vae, "encode", "VAE", node, "vae")
        if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
            raise NodeInputError(node, "mask", "expected a MASK [batch, height, width]")
        h, w = (pixels.shape[1] // 8) * 8, (pixels.shape[2] // 8) * 8
        mask = F.interpolate(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(),
                             size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
        pixels = pixels.clone()
        if pixels.shape[1] != h or pixels.shape[2] != w:  # crop to whole latent cells, centred
            top, left = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
            pixels = pixels[:, top:top + h, left:left + w]
            mask = mask[:, :, top:top + h, left:left + w]
        if grow_mask_by:
            kernel = torch.ones(1, 1, grow_mask_by, grow_mask_by)
            padding = math.ceil((grow_mask_by - 1) / 2)
            grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)
        else:
            grown = mask
        keep = (1.0 - mask.round()).squeeze(1)
        pixels[..., :3] = (pixels[..., :3] - 0.5) * keep[..., None] + 0.5
        samples = encode_pixels(vae, pixels, context)
        return ({"samples": samples, "noise_mask": grown[:, :, :h, :w].round()},)


NODE_CLASS_MAPPINGS = {
    "EmptyLatentImage": EmptyLatentImage,
    "LatentUpscale": LatentUpscale,
    "LatentUpscaleBy": LatentUpscaleBy,
    "LatentComposite": LatentComposite,
    "SetLatentNoiseMask": SetLatentNoiseMask,
    "VAEEncodeForInpaint": VAEEncodeForInpaint,
}
NODE_DISPLAY_NAME_MAPPINGS = {"EmptyLatentImage": "Empty Latent Image", "LatentUpscale": "Upscale Latent",
                              "LatentUpscaleBy": "Upscale Latent By", "SetLatentNoiseMask": "Set Latent Noise Mask",
                              "VAEEncodeForInpaint": "VAE Encode (for Inpainting)"}
