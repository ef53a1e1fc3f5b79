"""Samplers with the names and meanings of ComfyUI's `sampler_name` list, k-diffusion style.

Every sampler has one signature:

    sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options)

- `model(x, sigma, **extra_args)` returns the denoised prediction D(x; sigma) for x = data + sigma * noise
  (the caller's EDM wrapper applies c_skip/c_out/c_in and classifier-free guidance). `sigma` is a
  tensor with one entry per batch item. The key "seed" of extra_args is not passed on: it seeds
  the noise of ancestral and SDE samplers (see sampling_noise).
- `x` is the noisy start at sigmas[0]; `sigmas` is a decreasing float32 schedule, usually ending in 0.
- `callback({"x", "i", "sigma", "sigma_hat", "denoised"})` runs once per step, before the update.
- `disable` is accepted for compatibility (progress is the callback's business).
- `noise_sampler(sigma, sigma_next)` returns standard normal noise shaped like x.

Single-step samplers live here, multistep ones in `sampling_multistep`, UniPC in `sampling_unipc`,
dpm_fast / dpm_adaptive (which pick their own steps) in `sampling_dpm_solver`, their shared pieces in
`sampling_base`; this module's `SAMPLERS` table names them all.
"""
import torch

from .sampling_base import (ancestral_step, churned_slope, denoise_at, denoise_step, lambda_to_sigma,
                            sigma_to_lambda, split_seed, to_d)
from .sampling_dpm_solver import dpm_adaptive, dpm_fast
from .sampling_multistep import (dpmpp_2m, dpmpp_2m_sde, dpmpp_2m_sde_heun, dpmpp_3m_sde, er_sde,
                                 gradient_estimation, ipndm, lms, res_multistep, res_multistep_ancestral)
from .sampling_noise import BrownianNoiseSampler, default_noise_sampler
from .sampling_unipc import uni_pc, uni_pc_bh2


@torch.no_grad()
def _with_churn(step, model, x, sigmas, extra_args, callback, noise_sampler, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al.'s algorithm 2 frame: optional churn, the slope at sigma_hat, then `step`."""
    model_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        x, sigma_hat, _, d = churned_slope(model, x, sigmas, i, model_args, callback, noise_sampler,
                                           s_churn, s_tmin, s_tmax, s_noise)
        x = step(model, x, d, sigmas, i, sigma_hat, model_args)
    return x


def _euler_step(model, x, d, sigmas, i, sigma_hat, model_args):
    return x + d * (sigmas[i + 1] - sigma_hat)


def _heun_step(model, x, d, sigmas, i, sigma_hat, model_args):
    """Average the slopes at both ends; a plain Euler step onto sigma 0."""
    dt = sigmas[i + 1] - sigma_hat
    if sigmas[i + 1] == 0:
        return x + d * dt
    x_2 = x + d * dt
    d_2 = to_d(x_2, sigmas[i + 1], denoise_at(model, x_2, sigmas[i + 1], model_args))
    return x + (d + d_2) / 2 * dt


def _heunpp2_step(model, x, d, sigmas, i, sigma_hat, model_args):
    """Up to three slopes (here, next, the one after), weighted by sigma / sigmas[0]."""
    s_end = sigmas[-1]
    dt = sigmas[i + 1] - sigma_hat
    if sigmas[i + 1] == s_end:
        return x + d * dt
    x_2 = x + d * dt
    d_2 = to_d(x_2, sigmas[i + 1], denoise_at(model, x_2, sigmas[i + 1], model_args))
    if sigmas[i + 2] == s_end:
        w_2 = sigmas[i + 1] / (2 * sigmas[0])
        return x + (d * (1 - w_2) + d_2 * w_2) * dt
    x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
    d_3 = to_d(x_3, sigmas[i + 2], denoise_at(model, x_3, sigmas[i + 2], model_args))
    w_2, w_3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
    return x + ((1 - w_2 - w_3) * d + w_2 * d_2 + w_3 * d_3) * dt


def _dpm_2_step(model, x, d, sigma, sigma_to, model_args):
    """DPM-Solver-2: take the slope at the geometric midpoint of sigma and sigma_to."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, denoise_at(model, x_2, sigma_mid, model_args))
    return x + d_2 * (sigma_to - sigma)


def _dpm_2_churned_step(model, x, d, sigmas, i, sigma_hat, model_args):
    if sigmas[i + 1] == 0:
        return x + d * (sigmas[i + 1] - sigma_hat)
    return _dpm_2_step(model, x, d, sigma_hat, sigmas[i + 1], model_args)


def _churn_sampler(name: str, step, doc: str):
    """A k-diffusion sampler function (the signature every sampler has) that runs `step` in the
    algorithm 2 frame, with its churn options."""
    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
        return _with_churn(step, model, x, sigmas, extra_args, callback, noise_sampler,
                           s_churn, s_tmin, s_tmax, s_noise)
    sampler.__name__ = sampler.__qualname__ = name
    sampler.__doc__ = doc
    return sampler


euler = _churn_sampler("euler", _euler_step,
                       "Euler steps (Karras et al. 2022, algorithm 2); deterministic unless s_churn > 0.")
heun = _churn_sampler("heun", _heun_step, "Heun's second-order method (Karras et al. 2022, algorithm 2).")
heunpp2 = _churn_sampler("heunpp2", _heunpp2_step, "Heun++ (ComfyUI's heunpp2).")
dpm_2 = _churn_sampler("dpm_2", _dpm_2_churned_step,
                       "DPM-Solver-2 steps in sigma (midpoint in log sigma); Euler onto sigma 0.")


@torch.no_grad()
def _ancestral(move, model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise):
    """Ancestral sampling: `move` x deterministically down to sigma_down, then add fresh noise of
    size sigma_up, so that x lands on the next sigma with part of its noise renewed (eta = 1: the most)."""
    model_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(model, x, sigmas, i, model_args, callback)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            x = move(model, x, denoised, sigmas[i], sigma_down, model_args)
        if sigmas[i + 1] > 0 and sigma_up:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _euler_move(model, x, denoised, sigma, sigma_to, model_args):
    return x + to_d(x, sigma, denoised) * (sigma_to - sigma)


def _dpm_2_move(model, x, denoised, sigma, sigma_to, model_args):
    return _dpm_2_step(model, x, to_d(x, sigma, denoised), sigma, sigma_to, model_args)


def _dpmpp_2s_move(model, x, denoised, sigma, sigma_to, model_args):
    """DPM-Solver++(2S): a data-prediction step through the midpoint in lambda."""
    lam, lam_next = sigma_to_lambda(sigma), sigma_to_lambda(sigma_to)
    h = lam_next - lam
    sigma_mid = lambda_to_sigma(lam + h / 2)
    x_2 = (sigma_mid / lambda_to_sigma(lam)) * x - (-h / 2).expm1() * denoised
    denoised_2 = denoise_at(model, x_2, sigma_mid, model_args)
    return (lambda_to_sigma(lam_next) / lambda_to_sigma(lam)) * x - (-h).expm1() * denoised_2


def euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    eta=1.0, s_noise=1.0):
    """Euler down to sigma_down, then fresh noise back up to the next sigma."""
    return _ancestral(_euler_move, model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)


def dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    eta=1.0, s_noise=1.0):
    """DPM-Solver-2 down to sigma_down, then fresh noise back up to the next sigma."""
    return _ancestral(_dpm_2_move, model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)


def dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                       eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S) down to sigma_down, then fresh noise back up to the next sigma."""
    return _ancestral(_dpmpp_2s_move, model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)


@torch.no_grad()
def dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
              eta=1.0, s_noise=1.0, r=0.5):
    """DPM-Solver++ stochastic: a noisy half step to lambda + r*h, then the full step from both."""
    if len(sigmas) <= 1:
        return x
    model_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or BrownianNoiseSampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(model, x, sigmas, i, model_args, callback)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = sigma_to_lambda(sigmas[i]), sigma_to_lambda(sigmas[i + 1])
        h = lam_t - lam_s
        lam_mid = lam_s + r * h
        sigma_mid = lambda_to_sigma(lam_mid)
        # with data scale 1 every alpha is 1, so the VP formulas reduce to these
        sd, su = ancestral_step(lambda_to_sigma(lam_s), lambda_to_sigma(lam_mid), eta)
        h_ = sigma_to_lambda(sd) - lam_s
        x_2 = (-h_).exp() * x - (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + noise_sampler(sigmas[i], sigma_mid) * s_noise * su
        denoised_2 = denoise_at(model, x_2, sigma_mid, model_args)

        sd, su = ancestral_step(lambda_to_sigma(lam_s), lambda_to_sigma(lam_t), eta)
        h_ = sigma_to_lambda(sd) - lam_s
        fac = 1 / (2 * r)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (-h_).exp() * x - (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def _h_phi_1(h):
    return torch.expm1(h)


def _h_phi_2(h):
    return (torch.expm1(h) - h) / h


@torch.no_grad()
def _seeds(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, fractions, last_weight):
    """SEEDS (Gonzalez et al. 2023, arXiv 2305.14267): stochastic exponential stages at lambda + r*h.

    Each stage and the final point combine D at the step's start with D at the stage before (for the
    final point with `last_weight(h_eta, r_last)`); the injected noise is one Ornstein-Uhlenbeck path
    carried from stage to stage.
    """
    model_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(model, x, sigmas, i, model_args, callback)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = sigma_to_lambda(sigmas[i]), sigma_to_lambda(sigmas[i + 1])
        h = lam_t - lam_s
        h_eta = h * (eta + 1)
        r_prev, sigma_prev, denoised_prev, path = 0.0, sigmas[i], denoised, None
        for r in fractions + [1.0]:
            sigma_r = sigmas[i + 1] if r == 1.0 else lambda_to_sigma(lam_s + r * h)
            if r == 1.0:
                weight = last_weight(h_eta, r_prev)
            else:
                weight = r / r_prev * _h_phi_2(-r * h_eta) if r_prev else 0.0
            x_r = (sigma_r / sigmas[i] * (-r * h * eta).exp() * x
                   - (_h_phi_1(-r * h_eta) - weight) * denoised - weight * denoised_prev)
            if inject:
                fresh = noise_sampler(sigma_prev, sigma_r)
                if path is None:
                    path = (-2 * r * h * eta).expm1().neg().sqrt() * fresh
                else:
                    segment = (r_prev - r) * h * eta
                    path = path * segment.exp() + segment.mul(2).expm1().neg().sqrt() * fresh
                x_r = x_r + path * sigma_r * s_noise
            if r == 1.0:
                x = x_r
            else:
                r_prev, sigma_prev = r, sigma_r
                denoised_prev = denoise_at(model, x_r, sigma_r, model_args)
    return x


def seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
            eta=1.0, s_noise=1.0, r=0.5, solver_type="phi_1"):
    """SEEDS-2: one intermediate stage at lambda + r*h."""
    if solver_type == "phi_1":
        last_weight = lambda h_eta, r_prev: _h_phi_1(-h_eta) / (2 * r_prev)  # noqa: E731
    elif solver_type == "phi_2":
        last_weight = lambda h_eta, r_prev: _h_phi_2(-h_eta) / r_prev  # noqa: E731
    else:
        raise ValueError(f"seeds_2: solver_type must be 'phi_1' or 'phi_2', got {solver_type!r}")
    return _seeds(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, [r], last_weight)


def seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
            eta=1.0, s_noise=1.0, r_1=1.0 / 3, r_2=2.0 / 3):
    """SEEDS-3: intermediate stages at lambda + r_1*h and lambda + r_2*h."""
    return _seeds(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, [r_1, r_2],
                  lambda h_eta, r_prev: _h_phi_2(-h_eta) / r_prev)


@torch.no_grad()
def ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """The DDPM posterior step, taken in the variance-preserving scale x / sqrt(1 + sigma^2)."""
    model_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = denoise_step(model, x, sigmas, i, model_args, callback)
        eps = (x - denoised) / sigma
        x_vp = x / torch.sqrt(1.0 + sigma ** 2.0)
        alpha_bar, alpha_bar_prev = 1 / (sigma * sigma + 1), 1 / (sigma_prev * sigma_prev + 1)
        alpha = alpha_bar / alpha_bar_prev
        x = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * eps / (1 - alpha_bar).sqrt())
        if sigma_prev > 0:
            x = x + ((1 - alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).sqrt() * noise_sampler(sigma, sigma_prev)
            x = x * torch.sqrt(1.0 + sigma_prev ** 2.0)
    return x


@torch.no_grad()
def lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, s_noise=1.0):
    """Latent consistency sampling: jump to the denoised estimate, re-noise to the next sigma."""
    model_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = denoise_step(model, x, sigmas, i, model_args, callback)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigmas[i + 1]
    return x


# ComfyUI's sampler_name list, in its order.
SAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3",
    "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
]

SAMPLERS = {
    "euler": euler, "euler_ancestral": euler_ancestral, "heun": heun, "heunpp2": heunpp2,
    "dpm_2": dpm_2, "dpm_2_ancestral": dpm_2_ancestral, "lms": lms,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral, "dpmpp_sde": dpmpp_sde, "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde, "dpmpp_2m_sde_heun": dpmpp_2m_sde_heun, "dpmpp_3m_sde": dpmpp_3m_sde,
    "dpm_fast": dpm_fast, "dpm_adaptive": dpm_adaptive, "ddpm": ddpm, "lcm": lcm, "seeds_2": seeds_2, "seeds_3": seeds_3, "er_sde": er_sde, "ipndm": ipndm, "res_multistep": res_multistep,
    "res_multistep_ancestral": res_multistep_ancestral, "gradient_estimation": gradient_estimation,
    "uni_pc": uni_pc, "uni_pc_bh2": uni_pc_bh2,
    # ComfyUI's ddim is Euler (it differs only in how an inpainting mask is re-noised)
    "ddim": euler,
    # the *_gpu variants differ from their base only in where ComfyUI keeps the Brownian tree
    "dpmpp_sde_gpu": dpmpp_sde, "dpmpp_2m_sde_gpu": dpmpp_2m_sde,
    "dpmpp_2m_sde_heun_gpu": dpmpp_2m_sde_heun, "dpmpp_3m_sde_gpu": dpmpp_3m_sde,
}

UNSUPPORTED_SAMPLERS = [name for name in SAMPLER_NAMES if name not in SAMPLERS]


def get_sampler(name: str):
    """The sampler function for a ComfyUI sampler_name, or a ValueError that says what exists."""
    if name in SAMPLERS:
        return SAMPLERS[name]
    if name in SAMPLER_NAMES:
        raise ValueError(f"sampler {name!r} is in ComfyUI's list but not implemented in vidgraph; "
                         f"available: {', '.join(SAMPLERS)}")
    raise ValueError(f"unknown sampler {name!r}; available: {', '.join(SAMPLERS)}")
