"""Classifier-free guidance over any MODEL: the function samplers call, and the sampling run around it.

`Guider(model, positive, negative, cfg).predict(x, sigma)` is the k-diffusion model function a sampler
sees. Inside, for each guidance branch (cond = 0, uncond = 1) every CONDITIONING entry that is active at
this sigma is predicted over its area (whole latent by default) with its mask and strength; entries
that fit together go through the network as one batch (uncond rows first, as ComfyUI batches them).
The branch predictions are averaged by weight, then combined by the CFG function, then passed
through the post-CFG patches. See docs/ARCHITECTURE.md ("MODEL") for the patch points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model import RUN_KEPT, Model
from .sampling_noise import noise_latent

COND, UNCOND = 0, 1
AREA_FEATHER = 8  # rows/columns over which an area's weight ramps up at an inner edge


@dataclass
class Entry:
    """One CONDITIONING entry prepared for prediction."""
    cross_attn: torch.Tensor
    extra: dict
    sigma_range: tuple[float, float] | None
    area: tuple[int, int, int, int] | None   # (h, w, y, x) in latent cells
    strength: float

    def active(self, sigma: float) -> bool:
        if self.sigma_range is None:
            return True
        high, low = self.sigma_range
        return low <= sigma <= high


def prepare_entries(model: Model, conditioning, latent_shape, sample_inputs: dict | None = None) -> list[Entry]:
    """CONDITIONING -> entries with their sigma range and area resolved for this latent; `sample_inputs`
    (the run's latent_image / denoise_mask, for networks that ask for them) join each entry's dict."""
    entries = []
    for cross_attn, extra in conditioning:
        if sample_inputs:
            extra = {**extra, **sample_inputs}
        sigma_range = None
        if "start_percent" in extra or "end_percent" in extra:
            sigma_range = model.percent_range(extra.get("start_percent", 0.0), extra.get("end_percent", 1.0))
        entries.append(Entry(cross_attn, extra, sigma_range, _area(extra.get("area"), latent_shape),
                             float(extra.get("strength", 1.0))))
    return entries


def _area(area, shape):
    """ComfyUI's area: (h, w, y, x) in latent cells, or ("percentage", h, w, y, x) of the latent."""
    if area is None:
        return None
    height, width = shape[-2], shape[-1]
    if area[0] == "percentage":
        h, w, y, x = area[1:]
        area = (round(h * height), round(w * width), round(y * height), round(x * width))
    h, w, y, x = (int(v) for v in area)
    y, x = min(y, height - 1), min(x, width - 1)
    h, w = max(1, min(h, height - y)), max(1, min(w, width - x))
    if (h, w, y, x) == (height, width, 0, 0):
        return None
    return (h, w, y, x)


def _weights(entry: Entry, x, area):
    """The per-element weight of an entry's prediction: strength, times its mask or feathered area."""
    h, w, y, x0 = area if area is not None else (x.shape[-2], x.shape[-1], 0, 0)
    mask = entry.extra.get("mask")
    shape = (x.shape[0], 1, h, w)
    if mask is not None:
        if mask.ndim == 2:
            mask = mask[None]
        strength = float(entry.extra.get("mask_strength", 1.0))
        mask = F.interpolate(mask[:, None].float(), size=(x.shape[-2], x.shape[-1]), mode="bilinear")
        mask = mask[..., y:y + h, x0:x0 + w].to(x.device)
        weight = (mask * strength).expand(-1, 1, -1, -1)
        weight = weight if weight.shape[0] == x.shape[0] else weight[:1].expand(shape)
        return weight * entry.strength
    weight = torch.full(shape, entry.strength, device=x.device)
    if area is not None:
        ramp = [(t + 1) / AREA_FEATHER for t in range(min(AREA_FEATHER, h, w))]
        for t, value in enumerate(ramp):
            if y != 0:
                weight[:, :, t:t + 1, :] *= value
            if y + h < x.shape[-2]:
                weight[:, :, h - 1 - t:h - t, :] *= value
            if x0 != 0:
                weight[:, :, :, t:t + 1] *= value
            if x0 + w < x.shape[-1]:
                weight[:, :, :, w - 1 - t:w - t] *= value
    return weight


def _crop(x, area):
    if area is None:
        return x
    h, w, y, x0 = area
    return x[..., y:y + h, x0:x0 + w]


def _concatenable(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key, value in a.items():
        other = b[key]
        if isinstance(value, torch.Tensor):
            if not isinstance(other, torch.Tensor) or value.shape[1:] != other.shape[1:]:
                return False
        elif value != other:
            return False
    return True


def _concat(cs: list[dict]) -> dict:
    return {k: torch.cat([c[k] for c in cs]) if isinstance(v, torch.Tensor) else v for k, v in cs[0].items()}


def predict_branches(model: Model, branches, x, sigma, batch_together: bool = True, network_args=None):
    """Weighted predictions of each branch ([entries] or None to skip it): [denoised or None]."""
    network_args = network_args if network_args is not None else {}
    s = float(sigma.reshape(-1)[0])
    jobs = []
    for index, entries in enumerate(branches):
        for number, entry in enumerate(entries or ()):
            if entry.active(s):
                key = (index, number, tuple(x.shape))
                if key not in network_args:
                    crop = _crop(x, entry.area)
                    network_args[key] = model.network.conditioning(entry.cross_attn, entry.extra, crop.shape, x.device)
                jobs.append((index, entry, network_args[key], (index, number, len(entries)), key))
    totals = [None if entries is None else torch.zeros_like(x) for entries in branches]
    counts = [None if entries is None else torch.full_like(x, 1e-37) for entries in branches]
    while jobs:
        first = jobs[0]
        group = [j for j in jobs if j[1].area == first[1].area and _concatenable(j[2], first[2])]
        group = group[::-1] if batch_together else group[-1:]   # ComfyUI runs the last-found first
        jobs = [job for job in jobs if not any(job is taken for taken in group)]  # by identity: == compares tensors
        crop = _crop(x, first[1].area)
        rows = crop.shape[0]
        # The same batch at every step of a run is the same tensors: layers may keep what they derive
        # from them for the run (the prompt's attention keys and values, nodes/svd/attention.py).
        batch_key = ("batch",) + tuple(j[4] for j in group)
        if batch_key not in network_args:
            network_args[batch_key] = _concat([j[2] for j in group])
        args = dict(network_args[batch_key])
        # which entry of which branch each chunk is (context windows may give a window one entry only)
        args["transformer_options"] = {**args.get("transformer_options", {}), "cond_entries": [j[3] for j in group],
                                       RUN_KEPT: network_args.setdefault(RUN_KEPT, {})}
        out = model.apply(torch.cat([crop] * len(group)), sigma.reshape(-1)[:1].expand(rows * len(group)),
                          args, cond_or_uncond=[j[0] for j in group])
        for job, pred in zip(group, out.split(rows)):
            index, entry = job[0], job[1]
            weight = _weights(entry, crop, entry.area)
            if entry.area is None and len(branches[index]) == 1 and entry.extra.get("mask") is None:
                totals[index] = pred * weight if entry.strength != 1.0 else pred
                counts[index] = weight if entry.strength != 1.0 else None
                continue
            h, w, y, x0 = entry.area or (x.shape[-2], x.shape[-1], 0, 0)
            totals[index][..., y:y + h, x0:x0 + w] += pred * weight
            counts[index][..., y:y + h, x0:x0 + w] += weight
    return [t if t is None or c is None else t / c for t, c in zip(totals, counts)]


def denoised_for_moved_latent(x, z, denoised_z, sigma, sigma_next):
    """The denoised to report at x so that a first-order step from x lands where a step from z would
    (a denoise wrapper that optimised the latent x into z continues sampling from z)."""
    sigma, sigma_next = float(sigma), float(sigma_next)
    if sigma_next == 0:
        return denoised_z
    return denoised_z + (x - z) * (sigma_next / (sigma_next - sigma))


class Guider:
    """CFG over a MODEL: `predict` is the sampler's model function; `sample` runs a sampler.

    `negative=None` is the BasicGuider (no unconditional branch).
    """

    def __init__(self, model: Model, positive, negative=None, cfg: float = 1.0, batch_cond_uncond: bool = True):
        self.model, self.positive, self.negative = model, positive, negative
        self.cfg = float(cfg)
        self.batch_cond_uncond = batch_cond_uncond
        self.sample_sigmas = None
        self.seed = None
        self._inpaint = None
        self._sample_inputs = {}   # what the network asks of the run (network.sample_inputs), by ComfyUI's names
        self._entries = {}
        self._network_args = {}

    # ---------------------------------------------------------------- the model function

    def entries(self, x):
        key = tuple(x.shape)
        if key not in self._entries:
            self._network_args.clear()
            self._entries = {key: (prepare_entries(self.model, self.positive, x.shape, self._sample_inputs),
                                   None if self.negative is None else
                                   prepare_entries(self.model, self.negative, x.shape, self._sample_inputs))}
        return self._entries[key]

    def guided(self, x, sigma):
        """CFG of the cond and uncond predictions with the model's CFG patches."""
        model, patches, cfg = self.model, self.model.patches, self.cfg
        s = float(sigma.reshape(-1)[0])
        positive, negative = self.entries(x)
        skip_uncond = negative is None or (math.isclose(cfg, 1.0) and not patches.disable_cfg1_optimization)
        conds_out = predict_branches(model, [positive, None if skip_uncond else negative], x, sigma,
                                     self.batch_cond_uncond, self._network_args)
        for patch in patches.pre_cfg:
            if patch.active(s):
                conds_out = patch.fn({"conds": [self.positive, self.negative], "conds_out": conds_out,
                                      "cond_scale": cfg, "timestep": sigma, "input": x, "sigma": sigma,
                                      "model": model, "model_options": patches})
        cond, uncond = conds_out
        if uncond is None:
            denoised = cond
        elif patches.cfg_function is not None and patches.cfg_function.active(s):
            denoised = x - patches.cfg_function.fn({
                "cond": x - cond, "uncond": x - uncond, "cond_scale": cfg, "timestep": sigma, "input": x,
                "sigma": sigma, "cond_denoised": cond, "uncond_denoised": uncond, "model": model,
                "model_options": patches})
        else:
            denoised = uncond + (cond - uncond) * cfg
        for patch in patches.post_cfg:
            if patch.active(s):
                denoised = patch.fn({"denoised": denoised, "cond": self.positive, "uncond": self.negative,
                                     "cond_scale": cfg, "model": model, "uncond_denoised": uncond,
                                     "cond_denoised": cond, "sigma": sigma, "model_options": patches, "input": x})
        return denoised

    def _masked(self, x, sigma):
        """KSampler's inpainting: outside the mask x sits on the noised input latent and D returns it."""
        mask, latent, noise = self._inpaint
        keep = 1.0 - mask
        x = x * mask + (latent + noise * sigma.reshape(-1, *[1] * (x.ndim - 1))) * keep
        return self.guided(x, sigma) * mask + latent * keep

    def predict(self, x, sigma, **_):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        call = self._masked if self._inpaint is not None else self.guided
        s = float(sigma[0])
        for patch in self.model.patches.denoise_wrappers:
            if patch.active(s):
                call = self._wrap(patch.fn, call)
        return call(x, sigma)

    def _wrap(self, fn, inner):
        def call(x, sigma):
            return fn(inner, x, sigma, {"model": self.model, "guider": self, "sample_sigmas": self.sample_sigmas,
                                        "step": self._step(sigma), "seed": self.seed, "cond_scale": self.cfg})
        return call

    def _step(self, sigma) -> int | None:
        """The index i of the sampler step whose interval sample_sigmas[i] >= sigma > sample_sigmas[i+1]."""
        if self.sample_sigmas is None:
            return None
        s = float(sigma.reshape(-1)[0])
        for i in range(len(self.sample_sigmas) - 1):
            if float(self.sample_sigmas[i + 1]) < s <= float(self.sample_sigmas[i]) * (1 + 1e-6):
                return i
        return len(self.sample_sigmas) - 1

    __call__ = predict

    # ---------------------------------------------------------------- a whole run

    def sample(self, sampler, noise, latent_image, sigmas, denoise_mask=None, callback=None, seed=None,
               device="cpu"):
        """Run `sampler` from `latent_image` (the VAE's raw latent) with `noise`; returns the raw latent.

        `denoise_mask` (ComfyUI's noise_mask [B?, H, W] in pixel or latent cells): 1 = resample, 0 = keep.
        """
        model = self.model
        latent = model.latent_format.process_in(latent_image.to(device, torch.float32))
        noise = noise.to(device, torch.float32)
        for transform in model.transformer_options.get("noise_transforms", ()):  # FreeNoise, say
            noise = transform(noise, seed)
        sigmas = sigmas.to(device)
        self.sample_sigmas, self.seed = sigmas, seed
        if denoise_mask is not None:
            self._inpaint = (prepare_mask(denoise_mask, latent.shape, device), latent, noise)
        wanted = getattr(model.network, "sample_inputs", ())
        self._sample_inputs = {name: value for name, value in (
            ("latent_image", latent), ("denoise_mask", self._inpaint[0] if self._inpaint else None)) if name in wanted}
        self._entries.clear()
        x = noise_latent(noise, latent, sigmas, model.sampling.sigma_max)
        try:
            with torch.no_grad():  # not inference_mode: a patch may take gradients through the model
                out = sampler(self.predict, x, sigmas, extra_args={"seed": seed}, callback=callback)
        finally:
            self._inpaint = None
            self._sample_inputs = {}
            self._entries.clear()
            self._network_args.clear()
        return model.latent_format.process_out(out.float())


def prepare_mask(mask, shape, device):
    """A noise mask resized bilinearly to the latent, on every channel and batch row."""
    mask = torch.as_tensor(mask, dtype=torch.float32)
    mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    mask = F.interpolate(mask, size=(shape[-2], shape[-1]), mode="bilinear")
    mask = mask.expand(-1, shape[1], -1, -1)
    if mask.shape[0] != shape[0]:
        repeats = math.ceil(shape[0] / mask.shape[0])
        mask = mask.repeat(repeats, 1, 1, 1)[:shape[0]]
    return mask.to(device)
