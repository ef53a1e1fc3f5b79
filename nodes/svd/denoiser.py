"""SVD as a MODEL: its conditioning, micro-conditioning and per-frame classifier-free guidance.

D(x, sigma) = c_skip * x + c_out * F(c_in * x, c_noise) with sigma_data 1 (sgm's VScalingWithEDMcNoise,
ComfyUI's V_PREDICTION_EDM: `model_sampling.EDMV`). `SVDNetwork` turns SVD_img2vid_Conditioning's
CONDITIONING into the UNet's per-frame arguments; `svd_model` makes the MODEL samplers run through
`guidance.Guider`, with x the video latent [T, 4, h, w] (frames in the batch dimension).
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
    """(c_skip, c_out, c_in, c_noise) of EDM with v-prediction (what `EDMV` applies; training uses them)."""
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
        config = self.module.config
        if "concat_latent_image" not in extra:
            raise ValueError("SVD needs the image conditioning of SVD_img2vid_Conditioning (no concat_latent_image)")
        if not (isinstance(cross_attn, torch.Tensor) and cross_attn.ndim in (2, 3)
                and cross_attn.shape[-1] == config.context_dim):
            got = list(cross_attn.shape) if isinstance(cross_attn, torch.Tensor) else type(cross_attn).__name__
            raise ValueError(f"the model needs a CLIP vision embedding [1, 1, {config.context_dim}], got {got}")
        concat = extra["concat_latent_image"]
        latent_channels = config.in_channels - x_shape[1]
        if not (isinstance(concat, torch.Tensor) and concat.ndim == 4 and concat.shape[1] == latent_channels):
            got = list(concat.shape) if isinstance(concat, torch.Tensor) else type(concat).__name__
            raise ValueError(f"concat_latent_image must be a latent [1, {latent_channels}, h, w] like the "
                             f"sampled latent, got {got}")
        condition = SVDCondition.from_comfy([[cross_attn, extra]], dim=config.adm_in_channels // 3)
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
