"""Noise schedules (sigma sequences) with the names and numbers of ComfyUI's `scheduler` list.

Every scheduler returns a float32 tensor of decreasing sigmas ending in 0. The ones ComfyUI
builds from the model's sigma table (simple, sgm_uniform, ddim_uniform, beta, normal,
linear_quadratic) read it from the model's parameterisation (`model_sampling`: `.sigmas`,
`.timestep`, `.sigma`). For a continuous EDM model such as SVD that table is 1000 sigmas spaced
evenly in log sigma between sigma_min and sigma_max, and the model's own sigma_min/sigma_max are
that table's float32 ends (700 becomes 699.99994); SD's discrete models have ldm's table.
karras, exponential and kl_optimal use only the two ends.

Also here: the KSampler's denoise rule and KSamplerAdvanced's start/end step rules.
"""
import math

import torch

from .model_sampling import EDMV

SCHEDULER_NAMES = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                   "normal", "linear_quadratic", "kl_optimal"]

# These samplers take one more sigma than the steps asked for and drop the next-to-last one
# (their last step is otherwise a wasted second-order step onto sigma 0).
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}


# A continuous EDM model's range seen as the 1000-entry log-spaced table schedulers index (SVD).
SigmaTable = EDMV


def _with_zero(sigmas) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def simple(table: SigmaTable, steps: int) -> torch.Tensor:
    """Every (1000/steps)-th table entry, from the top."""
    stride = len(table.sigmas) / steps
    return _with_zero([float(table.sigmas[-(1 + int(i * stride))]) for i in range(steps)])


def ddim_uniform(table: SigmaTable, steps: int) -> torch.Tensor:
    """Table entries 1, 1+k, 1+2k, ... (k = 1000 // steps), reversed.

    Like ComfyUI this can give more than steps+1 sigmas when 999 is not a multiple of k.
    """
    stride = max(len(table.sigmas) // steps, 1)
    picked = [float(table.sigmas[i]) for i in range(1, len(table.sigmas), stride)]
    return torch.tensor([*picked[::-1], 0.0], dtype=torch.float32)


def normal(table: SigmaTable, steps: int, sgm: bool = False) -> torch.Tensor:
    """Evenly spaced in the model's timestep (0.25 ln sigma) from sigma_max to sigma_min.

    sgm=True (sgm_uniform) spaces steps+1 points and drops the last, so it never lands on sigma_min.
    """
    start = table.timestep(table.sigmas[-1])
    end = table.timestep(table.sigmas[0])
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        timesteps = torch.linspace(start, end, steps)
    return _with_zero([float(table.sigma(t)) for t in timesteps])


def sgm_uniform(table: SigmaTable, steps: int) -> torch.Tensor:
    return normal(table, steps, sgm=True)


def beta(table: SigmaTable, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Table indices at the Beta(alpha, beta) quantiles of 1, 1-1/steps, ... (arXiv 2407.12173).

    Repeated indices are dropped, so few-step schedules can come out shorter than steps+1.
    """
    last_index = len(table.sigmas) - 1
    picked, previous = [], None
    for i in range(steps):
        index = round_half_even(beta_ppf(1.0 - i / steps, alpha, beta_) * last_index)
        if index != previous:
            picked.append(float(table.sigmas[index]))
        previous = index
    return _with_zero(picked)


def linear_quadratic(table: SigmaTable, steps: int, threshold_noise: float = 0.025,
                     linear_steps: int | None = None) -> torch.Tensor:
    """Mochi's schedule: linear in the first half, quadratic after, scaled by sigma_max."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps ** 2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / quadratic_steps ** 2
        const = quadratic_coef * linear_steps ** 2
        quadratic = [quadratic_coef * i ** 2 + linear_coef * i + const
                     for i in range(linear_steps, steps)]
        fractions = [1.0 - f for f in linear + quadratic + [1.0]]
    return torch.tensor(fractions, dtype=torch.float32) * table.sigmas[-1]


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, steps)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _with_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in log sigma."""
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in arctan(sigma) (AUTOMATIC1111 PR 15608).

    ComfyUI divides by steps-1 and so returns NaN for one step; here one step is [sigma_max, 0].
    """
    if steps == 1:
        return _with_zero([sigma_max])
    ramp = torch.arange(steps, dtype=torch.float32) / (steps - 1)
    return _with_zero((ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan())


_TABLE_SCHEDULERS = {"simple": simple, "sgm_uniform": sgm_uniform, "ddim_uniform": ddim_uniform,
                     "beta": beta, "normal": normal, "linear_quadratic": linear_quadratic}
_RANGE_SCHEDULERS = {"karras": karras, "exponential": exponential, "kl_optimal": kl_optimal}


def calculate_sigmas(scheduler_name: str, steps: int, sigma_min: float = 0.002,
                     sigma_max: float = 700.0, table=None) -> torch.Tensor:
    """The sigmas ComfyUI's scheduler `scheduler_name` gives a model: `table` is its parameterisation
    (`model_sampling`); without one, a continuous EDM model on [sigma_min, sigma_max]."""
    if steps < 1:
        raise ValueError(f"scheduler {scheduler_name!r}: steps must be at least 1, got {steps}")
    table = table if table is not None else EDMV(sigma_min, sigma_max)
    if scheduler_name in _TABLE_SCHEDULERS:
        return _TABLE_SCHEDULERS[scheduler_name](table, steps)
    if scheduler_name in _RANGE_SCHEDULERS:
        return _RANGE_SCHEDULERS[scheduler_name](steps, table.sigma_min, table.sigma_max)
    raise ValueError(f"unknown scheduler {scheduler_name!r}; expected one of {SCHEDULER_NAMES}")


def ksampler_sigmas(scheduler_name: str, steps: int, denoise: float = 1.0,
                    sampler_name: str | None = None, sigma_min: float = 0.002,
                    sigma_max: float = 700.0, table=None) -> torch.Tensor:
    """The sigmas the KSampler node samples along.

    denoise < 1 (img2img): schedule int(steps / denoise) steps and keep the last steps+1 sigmas.
    denoise <= 0 gives an empty tensor: nothing to sample, the latent passes through.
    """
    def full(n):
        if sampler_name in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
            sigmas = calculate_sigmas(scheduler_name, n + 1, sigma_min, sigma_max, table)
            return torch.cat([sigmas[:-2], sigmas[-1:]])
        return calculate_sigmas(scheduler_name, n, sigma_min, sigma_max, table)

    if denoise is None or denoise > 0.9999:
        return full(steps)
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float32)
    return full(int(steps / denoise))[-(steps + 1):]


def step_range(sigmas: torch.Tensor, start_step: int | None = None, last_step: int | None = None,
               force_full_denoise: bool = False) -> torch.Tensor | None:
    """KSamplerAdvanced's start_at_step / end_at_step cut of a schedule.

    Ending early keeps sigmas[:last_step+1]; with force_full_denoise (return_with_leftover_noise
    disabled) its last sigma becomes 0. Returns None when start_step leaves no step to take: the
    node then returns its input latent unchanged.
    """
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas


def round_half_even(value: float) -> int:
    return int(round(value))  # Python rounds halves to even, as numpy.rint does


def beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of the regularized incomplete beta function I_x(a, b), by bisection."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def _beta_cdf(x: float, a: float, b: float) -> float:
    """I_x(a, b) by its continued fraction (Lentz's method), using the symmetry for large x."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _beta_cdf(1.0 - x, b, a)
    return math.exp(log_front) * _beta_continued_fraction(x, a, b) / a


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-16:
            break
    return result
