"""How a network's output becomes a denoised latent: eps, v and EDM-v parameterisations.

A sampler works with an EDM denoiser D(x; sigma), x = data + sigma * noise. A parameterisation says
how to get there from the network: the input scaling (`calculate_input`), the time the network is
given (`timestep`), and how its output and x combine into D (`calculate_denoised`). It also carries
the model's sigma table, which the table-based schedulers (`schedules.py`) index.

- `EPS`: the network predicts the noise (SD 1.x, SD 2.x base, SDXL). D = x - sigma * eps.
- `VPrediction`: it predicts v (SD 2.x 768-v). D = c_skip x + c_out v with sigma_data 1.
- `EDMV`: v-prediction on a continuous sigma range with t = ln(sigma) / 4 (SVD).

Discrete models (the first two) have ldm's 1000-step table; their `timestep(sigma)` is the index of
the nearest table entry and `sigma(t)` interpolates the table in log sigma, as ComfyUI does.
"""
from __future__ import annotations

import math
from functools import cached_property

import torch

SIGMA_DATA = 1.0


def discrete_sigmas(beta_schedule: str = "linear", linear_start: float = 0.00085,
                    linear_end: float = 0.012, timesteps: int = 1000) -> torch.Tensor:
    """ldm's noise table as sigmas (ascending, float32): betas, then cumulative alphas in float64."""
    if beta_schedule == "linear":
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    elif beta_schedule == "scaled_linear":  # the same curve under diffusers' name
        betas = torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2
    elif beta_schedule == "sqrt_linear":
        betas = torch.linspace(linear_start, linear_end, timesteps, dtype=torch.float64) ** 0.5
    elif beta_schedule == "cosine":
        s = 0.008
        t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"unknown beta schedule {beta_schedule!r}")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


def rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2023): shift and scale sqrt(alpha_cumprod) so the last step has zero SNR.

    The last sigma becomes infinite in theory; like ComfyUI it is capped at 4096.
    """
    alphas_cumprod = 1 / (sigmas.double() ** 2 + 1)
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * first / (first - last)
    alphas_cumprod = root ** 2
    alphas_cumprod[-1] = 4.8973451890853435e-08  # sigma 4096
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).float()


def _column(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sigma [N] shaped to broadcast over x [N, ...]."""
    return sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))


class _Parameterisation:
    """Shared arithmetic; subclasses give the sigma table, the time and the output kind."""
    prediction = "eps"
    sigma_data = SIGMA_DATA

    @property
    def sigmas(self) -> torch.Tensor:
        raise NotImplementedError

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def calculate_input(self, sigma, x):
        return x / (_column(sigma, x) ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma, model_output, x):
        s = _column(sigma, x)
        if self.prediction == "eps":
            return x - model_output * s
        var = s ** 2 + self.sigma_data ** 2
        return x * self.sigma_data ** 2 / var - model_output * s * self.sigma_data / var ** 0.5

    def describe(self) -> str:
        return f"{type(self).__name__}(sigma {self.sigma_min:.4g}..{self.sigma_max:.4g})"


class EPS(_Parameterisation):
    """A discrete-time model on ldm's table (default: SD's linear betas 0.00085 .. 0.012)."""
    prediction = "eps"

    def __init__(self, sigmas: torch.Tensor | None = None, zsnr: bool = False):
        table = discrete_sigmas() if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float32)
        if zsnr:
            table = rescale_zero_terminal_snr(table)
        self.zsnr = zsnr
        self._sigmas = table
        self.log_sigmas = table.log()

    @property
    def sigmas(self) -> torch.Tensor:
        return self._sigmas

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The index of the table entry nearest in log sigma (float, as the network takes it)."""
        distance = sigma.float().log().reshape(1, -1) - self.log_sigmas.to(sigma.device)[:, None]
        return distance.abs().argmin(dim=0).reshape(sigma.shape).float()

    def sigma(self, timestep) -> torch.Tensor:
        t = torch.as_tensor(timestep, dtype=torch.float32).clamp(0, len(self._sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        log_sigmas = self.log_sigmas.to(t.device)
        return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * 999.0)))


class VPrediction(EPS):
    prediction = "v"


class EDMV(_Parameterisation):
    """SVD's continuous v-prediction: t = ln(sigma) / 4; the table is 1000 log-spaced sigmas."""
    prediction = "v"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 700.0, sigma_data: float = SIGMA_DATA):
        self.sigma_min_requested, self.sigma_max_requested = sigma_min, sigma_max
        self.sigma_data = sigma_data

    @cached_property
    def sigmas(self) -> torch.Tensor:
        return torch.linspace(math.log(self.sigma_min_requested), math.log(self.sigma_max_requested), 1000).exp()

    @staticmethod
    def timestep(sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log() / 4

    @staticmethod
    def sigma(timestep) -> torch.Tensor:
        return (torch.as_tensor(timestep) * 4).exp()

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        log_min = math.log(self.sigma_min)
        return math.exp((math.log(self.sigma_max) - log_min) * (1.0 - percent) + log_min)
