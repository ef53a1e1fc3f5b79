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

from .sampling_base import ancestral_step, churn, lambda_to_sigma, report, sigma_to_lambda, split_seed, to_d
from .sampling_dpm_solver import dpm_adaptive, dpm_fast
from .sampling_multistep import (dpmpp_2m, dpmpp_2m_sde, dpmpp_2m_sde_heun, dpmpp_3m_sde, er_sde,
                                 gradient_estimation, ipndm, lms, res_multistep, res_multistep_ancestral)
from .sampling_noise import BrownianNoiseSampler, default_noise_sampler
from .sampling_unipc import uni_pc, uni_pc_bh2


@torch.no_grad()
def euler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
          s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler steps (Karras et al. 2022, algorithm 2); deterministic unless s_churn > 0."""
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def heun(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
         s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun's second-order method (Karras et al. 2022, algorithm 2): average the slopes at both ends
    of the step; a plain Euler step onto sigma 0."""
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
            s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun++ (ComfyUI's heunpp2): up to three slopes (here, next, the one after), weighted by
    sigma / sigmas[0]; Euler onto the last sigma."""
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
        if sigmas[i + 2] == s_end:
            w_2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w_2) + d_2 * w_2) * dt
            continue
        x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
        d_3 = to_d(x_3, sigmas[i + 2], model(x_3, sigmas[i + 2] * s_in, **extra_args))
        w_2, w_3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
        x = x + ((1 - w_2 - w_3) * d + w_2 * d_2 + w_3 * d_3) * dt
    return x


@torch.no_grad()
def dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
          s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """DPM-Solver-2 steps in sigma: the slope at the geometric midpoint of the step; Euler onto sigma 0."""
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat = churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigma_hat, denoised)
        d = to_d(x, sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    eta=1.0, s_noise=1.0):
    """Euler down to sigma_down, then fresh noise of size sigma_up back up to the next sigma, so part
    of x's noise is renewed every step (eta = 1: the most)."""
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0 and sigma_up:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    eta=1.0, s_noise=1.0):
    """DPM-Solver-2 down to sigma_down (the slope at the geometric midpoint), then fresh noise back up."""
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
            x = x + d_2 * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0 and sigma_up:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                       eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S) down to sigma_down (a data-prediction step through the midpoint in lambda),
    then fresh noise back up."""
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            lam, lam_next = sigma_to_lambda(sigmas[i]), sigma_to_lambda(sigma_down)
            h = lam_next - lam
            sigma_mid = lambda_to_sigma(lam + h / 2)
            x_2 = (sigma_mid / lambda_to_sigma(lam)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)
            x = (lambda_to_sigma(lam_next) / lambda_to_sigma(lam)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0 and sigma_up:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
              eta=1.0, s_noise=1.0, r=0.5):
    """DPM-Solver++ stochastic: a noisy half step to lambda + r*h, then the full step from both."""
    if len(sigmas) <= 1:
        return x
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or BrownianNoiseSampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
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
        denoised_2 = model(x_2, sigma_mid * s_in, **extra_args)

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
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    inject = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
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
                denoised_prev = model(x_r, sigma_r * s_in, **extra_args)
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
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        report(callback, x, i, sigma, sigma, denoised)
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
    extra_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
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
