"""SVD's EDM v-prediction denoiser and its per-frame classifier-free guidance.

D(x, sigma) = c_skip * x + c_out * F(c_in * x, c_noise) with sigma_data 1 (sgm's VScalingWithEDMcNoise,
ComfyUI's V_PREDICTION_EDM). A sampler sees `GuidedDenoiser` as a k-diffusion model function:
`denoised = model(x, sigma)` with x the video latent [T, 4, h, w] (frames in the batch dimension).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model import SD15_LATENT, Model, Network
from ..model_sampling import EDMV
from .unet import VideoUNet, timestep_embedding

SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
SIGMA_DATA = 1.0
CFG_RAMPS = ("constant", "linear", "triangle")


def edm_v_scalings(sigma, sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) of EDM with v-prediction."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32)
    var = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / var, -sigma * sigma_data / var ** 0.5, 1 / var ** 0.5, sigma.log() / 4


def micro_conditioning(fps: int, motion_bucket_id: int, augmentation_level: float, dim: int = 256):
    """SVD's vector conditioning y [1, 3*dim]: sinusoids of fps-1 (sgm's fps_id), the motion bucket
    and the noise augmentation level, in that order."""
    values = torch.tensor([fps - 1, motion_bucket_id, augmentation_level], dtype=torch.float32)
    return timestep_embedding(values, dim).reshape(1, -1)


def cfg_scales(ramp: str, min_cfg: float, cfg: float, num_frames: int):
    """Per-frame guidance scale [T]: constant cfg, linear from min_cfg (first frame) to cfg (last),
    or a triangle with min_cfg at both ends and cfg in the middle."""
    if ramp == "constant":
        return torch.full((num_frames,), float(cfg))
    if ramp == "linear":
        return torch.linspace(min_cfg, cfg, num_frames)
    if ramp == "triangle":
        v = torch.linspace(0, 1, num_frames)
        return (2 * (v - torch.floor(v + 0.5)).abs()) * (cfg - min_cfg) + min_cfg
    raise ValueError(f"unknown cfg ramp {ramp!r}; expected one of {', '.join(CFG_RAMPS)}")


@dataclass
class SVDCondition:
    """One guidance branch: CLIP context [1, L, D], VAE concat latent [1 or T, 4, h, w], y [1, 768]."""
    context: torch.Tensor
    concat: torch.Tensor
    y: torch.Tensor

    @classmethod
    def from_comfy(cls, conditioning, dim: int = 256):
        """From ComfyUI's CONDITIONING [[embedding, {concat_latent_image, fps, motion_bucket_id,
        augmentation_level}]] (the first entry)."""
        embedding, extra = conditioning[0]
        y = micro_conditioning(extra.get("fps", 6), extra.get("motion_bucket_id", 127),
                               extra.get("augmentation_level", 0.0), dim)
        if embedding.ndim == 2:
            embedding = embedding[:, None]
        concat = extra.get("concat_latent_image")
        if concat is None:
            raise ValueError("SVD conditioning has no concat_latent_image (use SVD_img2vid_Conditioning)")
        return cls(embedding, concat, y)

    def for_frames(self, num_frames: int, shape, device, dtype):
        """(context, concat, y) with one row per frame. A concat latent of another size or frame count
        is fitted to the video latent as ComfyUI does (centre crop to the aspect, bilinear resize;
        frames picked evenly)."""
        concat = self.concat.to(device, dtype)
        if tuple(concat.shape[-2:]) != tuple(shape[-2:]):
            concat = resize_centre_crop(concat, shape[-2], shape[-1])
        return (to_batch_size(self.context.to(device, dtype), num_frames), to_batch_size(concat, num_frames),
                to_batch_size(self.y.to(device, dtype), num_frames))


def resize_centre_crop(x, height: int, width: int):
    """x [N, C, h, w] cropped about its centre to the aspect of height x width, then resized bilinearly."""
    h, w = x.shape[-2:]
    old, new = w / h, width / height
    if old > new:
        cut = round((w - w * (new / old)) / 2)
        x = x[..., :, cut:w - cut]
    elif old < new:
        cut = round((h - h * (old / new)) / 2)
        x = x[..., cut:h - cut, :]
    return F.interpolate(x, size=(height, width), mode="bilinear")


def to_batch_size(x, n: int):
    """x's rows repeated, or picked evenly, to n rows."""
    rows = x.shape[0]
    if rows == n:
        return x
    if rows == 1:
        return x.expand(n, *x.shape[1:])
    if n < rows:
        scale = (rows - 1) / max(n - 1, 1)
        index = [min(round(i * scale), rows - 1) for i in range(n)]
    else:
        scale = rows / n
        index = [min(math.floor((i + 0.5) * scale), rows - 1) for i in range(n)]
    return x[index]


class VDenoiser:
    """The EDM v-prediction wrapper around a VideoUNet (one or more videos of `num_frames` each)."""

    def __init__(self, unet: VideoUNet, compute_dtype: torch.dtype | None = None,
                 sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, sigma_data: float = SIGMA_DATA):
        self.unet = unet
        first = next(unet.parameters())
        self.device = first.device
        self.compute_dtype = compute_dtype or first.dtype
        self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data

    def condition(self, conditioning) -> SVDCondition:
        """ComfyUI CONDITIONING -> SVDCondition with this UNet's micro-conditioning width (SVD's 768
        for a network without a config)."""
        config = getattr(self.unet, "config", None)
        return SVDCondition.from_comfy(conditioning, dim=config.adm_in_channels // 3 if config else 256)

    def __call__(self, x, sigma, context, concat, y, num_frames: int, image_only_indicator=None):
        """x [N*T, 4, h, w] float32; sigma scalar or [N*T]; context/concat/y one row per frame."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        s = sigma.reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data ** 2
        # Same operation order as ComfyUI's ModelSamplingContinuousEDM (float32 rounding at sigma 700).
        x_in = x / (s ** 2 + sd2) ** 0.5
        net_in = torch.cat([x_in, concat.to(x_in.dtype)], dim=1).to(self.device, self.compute_dtype)
        with torch.inference_mode():
            v = self.unet(net_in, (sigma.log() / 4).to(self.device), context.to(self.device, self.compute_dtype),
                          y.to(self.device, self.compute_dtype), num_frames, image_only_indicator)
        v = v.to(x.device, torch.float32)
        return x * sd2 / (s ** 2 + sd2) - v * s * self.sigma_data / (s ** 2 + sd2) ** 0.5


class GuidedDenoiser:
    """Classifier-free guidance with a scale per frame; cond and uncond go through the UNet as one
    batch of two videos (or one after the other with `batch_cond_uncond=False`, half the activations)."""

    def __init__(self, denoiser: VDenoiser, positive: SVDCondition, negative: SVDCondition,
                 cfg: float, ramp: str = "constant", min_cfg: float = 1.0, batch_cond_uncond: bool = True):
        if ramp not in CFG_RAMPS:
            raise ValueError(f"unknown cfg ramp {ramp!r}; expected one of {', '.join(CFG_RAMPS)}")
        self.denoiser, self.positive, self.negative = denoiser, positive, negative
        self.cfg, self.ramp, self.min_cfg = cfg, ramp, min_cfg
        self.batch_cond_uncond = batch_cond_uncond

    def scales(self, num_frames: int):
        return cfg_scales(self.ramp, self.min_cfg, self.cfg, num_frames)

    def __call__(self, x, sigma):
        t = x.shape[0]
        scale = self.scales(t).to(x.device).reshape(t, 1, 1, 1)
        pos = self.positive.for_frames(t, x.shape, x.device, torch.float32)
        if bool((scale == 1.0).all()):  # the uncond branch cannot change the result
            return self.denoiser(x, sigma, *pos, num_frames=t)
        neg = self.negative.for_frames(t, x.shape, x.device, torch.float32)
        if self.batch_cond_uncond:
            both = [torch.cat(pair) for pair in zip(pos, neg)]
            sigma2 = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(t).repeat(2)
            cond, uncond = self.denoiser(torch.cat([x, x]), sigma2, *both, num_frames=t).chunk(2)
        else:
            cond = self.denoiser(x, sigma, *pos, num_frames=t)
            uncond = self.denoiser(x, sigma, *neg, num_frames=t)
        if self.ramp == "constant":
            return uncond + (cond - uncond) * scale
        # The video ramps are applied as ComfyUI's sampler_cfg_function does: on x - denoised.
        cond_eps, uncond_eps = x - cond, x - uncond
        return x - (uncond_eps + scale * (cond_eps - uncond_eps))


def video_cfg_function(ramp: str, min_cfg: float):
    """The MODEL patch of VideoLinearCFGGuidance / VideoTriangleCFGGuidance: the guidance scale per frame
    (ComfyUI's sampler_cfg_function, on x - denoised)."""
    if ramp not in CFG_RAMPS:
        raise ValueError(f"unknown cfg ramp {ramp!r}; expected one of {', '.join(CFG_RAMPS)}")

    def per_frame_cfg(args):
        cond, uncond = args["cond"], args["uncond"]
        scale = cfg_scales(ramp, min_cfg, args["cond_scale"], cond.shape[0]).to(cond.device)
        return uncond + scale.reshape(-1, *[1] * (cond.ndim - 1)) * (cond - uncond)
    return per_frame_cfg


class SVDNetwork(Network):
    """The MODEL adapter of a VideoUNet: one CONDITIONING entry -> per-frame context, concat latent, y."""
    family = "svd"

    def __init__(self, unet: VideoUNet, compute_dtype: torch.dtype | None = None):
        self.module = unet
        self.compute_dtype = compute_dtype or next(unet.parameters()).dtype

    def conditioning(self, cross_attn, extra, x_shape, device) -> dict:
        condition = SVDCondition.from_comfy([[cross_attn, extra]], dim=self.module.config.adm_in_channels // 3)
        frames = x_shape[0]
        context, concat, y = condition.for_frames(frames, x_shape, device, torch.float32)
        return {"context": context, "concat": concat, "y": y, "num_video_frames": frames}

    def check_latent(self, shape):
        config = self.module.config
        if len(shape) != 4 or 2 * shape[1] != config.in_channels:
            return (f"the model samples {config.in_channels // 2}-channel video latents [frames, "
                    f"{config.in_channels // 2}, h, w], got {list(shape)}")
        return None

    def __call__(self, x_in, t, options, context, concat, y, num_video_frames, image_only_indicator=None):
        options.num_frames = num_video_frames
        device, dtype = self.device, self.compute_dtype
        net_in = torch.cat([x_in, concat.to(x_in.dtype)], dim=1).to(device, dtype)
        out = self.module(net_in, t.to(device), context.to(device, dtype), y.to(device, dtype), num_video_frames,
                          image_only_indicator, options=options)
        return out.to(x_in.device, torch.float32)


def svd_model(unet: VideoUNet, compute_dtype: torch.dtype | None = None,
              sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX) -> Model:
    """The MODEL of an SVD UNet: EDM v-prediction, SD's VAE latent space."""
    return Model(SVDNetwork(unet, compute_dtype), EDMV(sigma_min, sigma_max, SIGMA_DATA), SD15_LATENT)
