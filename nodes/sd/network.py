"""SD 1.x / 2.x / SDXL as a MODEL: the text conditioning and SDXL's size vector, in ComfyUI's terms.

A CONDITIONING entry is `[cross_attn [1, 77k, D], {"pooled_output": [1, P] (SDXL), "width", "height",
"crop_w", "crop_h", "target_width", "target_height", "aesthetic_score" (refiner), ...}]`. The UNet gets
the cross-attention context repeated to the latent's batch and, for SDXL, `y` = the pooled text
followed by 256-wide sinusoids of the sizes (base: height, width, crop_h, crop_w, target_height,
target_width; refiner: height, width, crop_h, crop_w, aesthetic score). Sizes default to the
latent's size in pixels (ComfyUI's rule for a plain CLIPTextEncode).

An inpainting UNet (9 input channels: sd-v1-5-inpainting, SD 2 / SDXL inpainting) also takes `concat` = the
mask (1 channel, rounded: 1 = repaint) and the masked image's latent (4), as ComfyUI builds them: the
entry's `concat_mask` or the sampler's `denoise_mask` (the LATENT's noise_mask), and its
`concat_latent_image` (raw VAE latent) or the sampled latent itself (`latent_image`, VAEEncodeForInpaint's
greyed pixels); without a mask, an all-ones mask and the latent of a grey image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import SD15_LATENT, SDXL_LATENT, Model, Network
from ..model_sampling import EPS, VPrediction
from .unet import UNet, timestep_embedding

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")
SIZE_EMBEDDING = 256
# A grey image's latent in the model's scaled space, per channel (ComfyUI's blank inpainting image for SD's VAE)
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)


def size_vector(extra: dict, latent_shape, refiner: bool = False, positive: bool = True) -> torch.Tensor:
    """SDXL's micro-conditioning sinusoids [1, 6*256] (refiner: [1, 5*256]) from a CONDITIONING entry."""
    height = extra.get("height", latent_shape[-2] * 8)
    width = extra.get("width", latent_shape[-1] * 8)
    crop_h, crop_w = extra.get("crop_h", 0), extra.get("crop_w", 0)
    if refiner:
        score = extra.get("aesthetic_score", 6.0 if positive else 2.5)
        values = [height, width, crop_h, crop_w, score]
    else:
        values = [height, width, crop_h, crop_w, extra.get("target_height", height), extra.get("target_width", width)]
    sinusoids = timestep_embedding(torch.tensor([float(v) for v in values]), SIZE_EMBEDDING)
    return sinusoids.reshape(1, -1)


class SDNetwork(Network):
    """The MODEL adapter of an SD UNet (`family`: sd1, sd2, sdxl, sdxl_refiner)."""

    def __init__(self, unet: UNet, family: str, compute_dtype: torch.dtype | None = None):
        if family not in FAMILIES:
            raise ValueError(f"unknown SD family {family!r}; one of {FAMILIES}")
        self.module, self.family = unet, family
        self.compute_dtype = compute_dtype or next(unet.parameters()).dtype

    @property
    def inpainting(self) -> bool:
        config = self.module.config
        return config.in_channels == config.out_channels + 5

    @property
    def sample_inputs(self) -> tuple:
        """What the sampler adds to each CONDITIONING entry's dict for `conditioning` (guidance.py)."""
        return ("latent_image", "denoise_mask") if self.inpainting else ()

    def check_latent(self, shape):
        channels = self.module.config.out_channels
        if len(shape) != 4 or shape[1] != channels:
            return f"the {self.family} model samples {channels}-channel image latents [batch, {channels}, h, w], got {list(shape)}"
        return None

    def conditioning(self, cross_attn, extra, x_shape, device) -> dict:
        config = self.module.config
        if not isinstance(cross_attn, torch.Tensor) or cross_attn.ndim != 3 or cross_attn.shape[-1] != config.context_dim:
            got = list(cross_attn.shape) if isinstance(cross_attn, torch.Tensor) else type(cross_attn).__name__
            raise ValueError(f"needs text conditioning [1, tokens, {config.context_dim}] (a {self.family} text "
                             f"encoder's), got {got}")
        if "concat_latent_image" in extra:
            raise ValueError("this is video conditioning (concat_latent_image): an image model cannot use it")
        rows = x_shape[0]
        c = {"context": _to_rows(cross_attn.to(device, torch.float32), rows)}
        if self.inpainting:
            c["concat"] = self.inpainting_concat(extra, x_shape, device)
        if config.adm_in_channels:
            pooled = extra.get("pooled_output")
            width = config.adm_in_channels - (5 if self.family == "sdxl_refiner" else 6) * SIZE_EMBEDDING
            if pooled is None:
                pooled = torch.zeros(1, width)
            pooled = pooled.reshape(pooled.shape[0], -1).float()
            if pooled.shape[-1] != width:
                raise ValueError(f"pooled_output must be [1, {width}] for this model, got {list(pooled.shape)}")
            sizes = size_vector(extra, x_shape, self.family == "sdxl_refiner", extra.get("prompt_type", "positive") != "negative")
            c["y"] = _to_rows(torch.cat([pooled[:1], sizes], dim=1).to(device), rows)
        return c

    def inpainting_concat(self, extra: dict, x_shape, device) -> torch.Tensor:
        """[rows, 5, h, w]: the repaint mask, then the masked image's latent (model space)."""
        rows, (h, w) = x_shape[0], tuple(x_shape[-2:])
        mask = extra.get("concat_mask", extra.get("denoise_mask"))
        image = extra.get("concat_latent_image")
        if image is not None:
            latent_format = SDXL_LATENT if self.family.startswith("sdxl") else SD15_LATENT
            image = latent_format.process_in(image.to(device, torch.float32))
        else:
            image = extra.get("latent_image")
        if mask is None:
            mask = torch.ones(1, 1, h, w, device=device)
            image = torch.tensor(BLANK_INPAINT_LATENT, device=device).reshape(1, 4, 1, 1).expand(1, 4, h, w)
        elif image is None:
            raise ValueError("an inpainting model needs the image to repaint: a latent_image or concat_latent_image")
        mask = torch.as_tensor(mask, dtype=torch.float32).to(device)
        mask = mask.reshape(-1, 1, *mask.shape[-2:]) if mask.ndim != 4 else mask[:, :1]
        image = image.to(device, torch.float32)
        if tuple(mask.shape[-2:]) != (h, w):
            mask = F.interpolate(mask, size=(h, w), mode="bilinear")
        if tuple(image.shape[-2:]) != (h, w):
            image = F.interpolate(image, size=(h, w), mode="bilinear")
        return torch.cat([_to_rows(mask.round(), rows), _to_rows(image, rows)], dim=1)

    def __call__(self, x_in, t, options, context, y=None, concat=None):
        device, dtype = self.device, self.compute_dtype
        if concat is not None:
            x_in = torch.cat([x_in, concat.to(x_in.device, x_in.dtype)], dim=1)
        out = self.module(x_in.to(device, dtype), t.to(device), context.to(device, dtype),
                          None if y is None else y.to(device, dtype), options=options)
        return out.to(x_in.device, torch.float32)


def _to_rows(x, rows: int):
    if x.shape[0] == rows:
        return x
    if x.shape[0] == 1:
        return x.expand(rows, *x.shape[1:])
    return x.repeat((rows + x.shape[0] - 1) // x.shape[0], *[1] * (x.ndim - 1))[:rows]


def sd_model(unet: UNet, family: str, prediction: str = "eps", compute_dtype: torch.dtype | None = None,
             zsnr: bool = False) -> Model:
    """The MODEL of an SD UNet: ldm's discrete schedule, eps or v, SD's or SDXL's latent space."""
    sampling = VPrediction(zsnr=zsnr) if prediction == "v" else EPS(zsnr=zsnr)
    latent = SDXL_LATENT if family.startswith("sdxl") else SD15_LATENT
    return Model(SDNetwork(unet, family, compute_dtype), sampling, latent)
