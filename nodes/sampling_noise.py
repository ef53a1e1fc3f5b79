"""Seeded noise: the initial latent noise and the noise samplers ancestral/SDE samplers draw from.

A seed means the same thing here as in ComfyUI:
- initial noise: `torch.manual_seed(seed)` then `torch.randn(latent_shape)` in float32 on the CPU;
- step noise of ancestral samplers (euler_ancestral, dpm_2_ancestral, dpmpp_2s_ancestral, ddpm,
  lcm): a private CPU `torch.Generator` seeded with seed + 1 (seed itself on a GPU), one
  `randn` of the latent's shape per call. So these samplers reproduce ComfyUI's noise too.
- SDE samplers (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde): a Brownian motion in sigma, seeded the
  same way. ComfyUI draws it from torchsde's BrownianTree, which vidgraph does not depend on, so
  these runs are reproducible from the seed but are not ComfyUI's exact noise.
"""
import math

import torch


def prepare_noise(latent_shape, seed: int, batch_index=None) -> torch.Tensor:
    """ComfyUI's initial noise for a latent of `latent_shape`.

    batch_index (a list, one per latent in the batch) picks which of a longer run of single-latent
    draws each latent gets, as ComfyUI does for latents cut out of a bigger batch.
    """
    generator = torch.manual_seed(seed)
    shape = tuple(latent_shape)
    if batch_index is None:
        return torch.randn(shape, dtype=torch.float32, generator=generator, device="cpu")
    wanted = sorted(set(int(i) for i in batch_index))
    drawn = {}
    for i in range(wanted[-1] + 1):
        noise = torch.randn((1, *shape[1:]), dtype=torch.float32, generator=generator, device="cpu")
        if i in wanted:
            drawn[i] = noise
    return torch.cat([drawn[int(i)] for i in batch_index])


def is_max_denoise(sigmas: torch.Tensor, sigma_max: float) -> bool:
    """True when sampling starts at (or above) the model's top sigma: a pure-noise start."""
    first = float(sigmas[0])
    return math.isclose(first, sigma_max, rel_tol=1e-5) or first > sigma_max


def noise_latent(noise: torch.Tensor, latent: torch.Tensor, sigmas: torch.Tensor,
                 sigma_max: float) -> torch.Tensor:
    """The sampler's starting x: latent + noise * sigmas[0].

    From the top of the schedule the noise is scaled by sqrt(1 + sigma^2) instead, so that x has
    the variance of the data (std 1) plus the noise, as ComfyUI's EPS-style noise scaling does.
    """
    sigma = sigmas[0]
    scale = torch.sqrt(1.0 + sigma ** 2.0) if is_max_denoise(sigmas, sigma_max) else sigma
    return noise * scale + latent


def default_noise_sampler(x: torch.Tensor, seed: int | None = None):
    """Fresh standard normal noise shaped like x on every call (ComfyUI's seeding)."""
    if seed is None:
        return lambda sigma, sigma_next: torch.randn_like(x)
    generator = None

    def sample(sigma, sigma_next):
        nonlocal generator
        if generator is None:  # made on first use: deterministic samplers never need it
            generator = torch.Generator(device=x.device)
            generator.manual_seed(step_seed(seed) if x.device.type == "cpu" else seed)
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    return sample


def step_seed(seed: int) -> int:
    """ComfyUI's seed + 1 for step noise, wrapped so the largest seed (2**64 - 1) stays valid."""
    return (int(seed) + 1) % 2 ** 64


class BrownianNoiseSampler:
    """Noise from one Brownian path W(sigma): call(s, t) = (W(t) - W(s)) / sqrt|t - s|.

    Overlapping intervals get correlated noise, as an SDE solver that takes a half step and a
    full step from the same sigma expects. The path is sampled lazily: a new point between two
    known ones comes from the Brownian bridge, one outside them from a random walk step. The
    values depend on the seed and the order of queries, so a seed and a schedule fix the noise.
    Points above the latest query but one are forgotten, so memory stays at a few latents.
    """

    def __init__(self, x: torch.Tensor, seed: int | None = None):
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        self.generator = torch.Generator(device="cpu")
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(step_seed(seed))
        self.times: list[float] = []
        self.values: list[torch.Tensor] = []

    def _normal(self) -> torch.Tensor:
        return torch.randn(self.shape, dtype=torch.float64, generator=self.generator)

    def _value_at(self, t: float) -> torch.Tensor:
        if t in self.times:
            return self.values[self.times.index(t)]
        if not self.times:
            value = torch.zeros(self.shape, dtype=torch.float64)
        else:
            below = [i for i, s in enumerate(self.times) if s < t]
            above = [i for i, s in enumerate(self.times) if s > t]
            if below and above:
                i, j = below[-1], above[0]
                t0, t1 = self.times[i], self.times[j]
                w = (t - t0) / (t1 - t0)
                mean = (1 - w) * self.values[i] + w * self.values[j]
                value = mean + math.sqrt((t - t0) * (t1 - t) / (t1 - t0)) * self._normal()
            else:
                edge = below[-1] if below else above[0]
                value = self.values[edge] + math.sqrt(abs(t - self.times[edge])) * self._normal()
        index = sum(1 for s in self.times if s < t)
        self.times.insert(index, t)
        self.values.insert(index, value)
        return value

    def _forget_above(self, t: float):
        """Drop points above t but the nearest: samplers only move down in sigma, and by the Markov
        property a new point depends on its two neighbours alone, so this changes no value."""
        above = [i for i, s in enumerate(self.times) if s > t]
        for i in reversed(above[1:]):
            del self.times[i], self.values[i]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        s, t = float(sigma), float(sigma_next)
        increment = self._value_at(t) - self._value_at(s)
        self._forget_above(max(s, t))
        noise = increment / math.sqrt(abs(t - s))
        return noise.to(dtype=self.dtype, device=self.device)
