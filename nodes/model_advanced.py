"""MODEL patches as nodes: ModelSamplingDiscrete (parameterisation), RescaleCFG (a CFG function) and
FreeU_V2 (an output-block patch). Each returns a patched clone (docs/ARCHITECTURE.md, "MODEL")."""
from __future__ import annotations

import torch

from .common import NodeInputError, check_model
from .model_sampling import EPS, VPrediction

SAMPLINGS = ["eps", "v_prediction", "lcm", "x0", "img_to_img"]


class X0(EPS):
    """The network predicts the clean latent itself."""
    prediction = "x0"

    def calculate_denoised(self, sigma, model_output, x):
        return model_output


class ModelSamplingDiscrete:
    DESCRIPTION = "Sample the model as eps, v-prediction or x0 on SD's discrete schedule, optionally with zero terminal SNR."
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "sampling": (SAMPLINGS,), "zsnr": ("BOOLEAN", {"default": False})}}

    def patch(self, model, sampling, zsnr):
        node = "ModelSamplingDiscrete"
        model = check_model(node, model)
        kinds = {"eps": EPS, "v_prediction": VPrediction, "x0": X0}
        if sampling not in kinds:
            raise NodeInputError(node, "sampling", f"{sampling!r} is not supported here; one of {', '.join(kinds)}")
        patched = model.clone()
        patched.set_sampling(kinds[sampling](zsnr=bool(zsnr)))
        return (patched,)


def rescaled_cfg(multiplier: float):
    """Lin et al. (2023)'s CFG rescale, on the v-prediction form of the two predictions (ComfyUI's)."""
    def cfg_function(args):
        cond_eps, uncond_eps, scale, x = args["cond"], args["uncond"], args["cond_scale"], args["input"]
        sigma = args["sigma"].reshape(-1, *[1] * (x.ndim - 1))
        root = (sigma ** 2 + 1.0) ** 0.5
        x_in = x / (sigma ** 2 + 1.0)
        cond_v = (x_in - (x - cond_eps)) * root / sigma
        uncond_v = (x_in - (x - uncond_eps)) * root / sigma
        guided = uncond_v + scale * (cond_v - uncond_v)
        dims = tuple(range(1, x.ndim))
        rescaled = guided * (cond_v.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        final = multiplier * rescaled + (1.0 - multiplier) * guided
        return x - (x_in - final * sigma / root)
    return cfg_function


class RescaleCFG:
    DESCRIPTION = "Rescale the guided prediction's spread to the conditional one's (less burn at high cfg)."
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "multiplier": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def patch(self, model, multiplier):
        patched = check_model("RescaleCFG", model).clone()
        patched.set_cfg_function(rescaled_cfg(float(multiplier)))
        return (patched,)


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """Scale the lowest frequencies (a 2*threshold square around DC) of each channel by `scale`."""
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    h, w = x.shape[-2:]
    mask = torch.ones_like(freq.real)
    mask[..., h // 2 - threshold:h // 2 + threshold, w // 2 - threshold:w // 2 + threshold] = scale
    out = torch.fft.ifftn(torch.fft.ifftshift(freq * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return out.to(x.dtype)


def freeu_v2(model_channels: int, b1: float, b2: float, s1: float, s2: float):
    """FreeU v2 (Si et al., 2023): backbone features scaled by their normalised mean, skip features
    low-pass damped, at the two deepest decoder widths."""
    scales = {model_channels * 4: (b1, s1), model_channels * 2: (b2, s2)}

    def patch(h, skip, info):
        scale = scales.get(int(h.shape[1]))
        if scale is None:
            return h, skip
        mean = h.mean(1, keepdim=True)
        flat = mean.reshape(mean.shape[0], -1)
        low, high = flat.min(-1).values.reshape(-1, 1, 1, 1), flat.max(-1).values.reshape(-1, 1, 1, 1)
        mean = (mean - low) / (high - low)
        h = h.clone()
        half = h.shape[1] // 2
        h[:, :half] = h[:, :half] * ((scale[0] - 1) * mean + 1)
        return h, fourier_filter(skip, 1, scale[1])
    return patch


class FreeU_V2:
    DESCRIPTION = "FreeU v2: boost the decoder's backbone features and damp its skip connections' low frequencies."
    CATEGORY = "model_patches/unet"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls):
        factor = {"min": 0.0, "max": 10.0, "step": 0.01}
        return {"required": {"model": ("MODEL",), "b1": ("FLOAT", {"default": 1.3, **factor}),
                             "b2": ("FLOAT", {"default": 1.4, **factor}), "s1": ("FLOAT", {"default": 0.9, **factor}),
                             "s2": ("FLOAT", {"default": 0.2, **factor})}}

    def patch(self, model, b1, b2, s1, s2):
        patched = check_model("FreeU_V2", model).clone()
        channels = patched.network.module.config.model_channels
        patched.add_block_patch("output_block", freeu_v2(channels, b1, b2, s1, s2))
        return (patched,)


NODE_CLASS_MAPPINGS = {"ModelSamplingDiscrete": ModelSamplingDiscrete, "RescaleCFG": RescaleCFG, "FreeU_V2": FreeU_V2}
