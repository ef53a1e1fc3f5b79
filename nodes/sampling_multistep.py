"""Multistep samplers: each step reuses the denoiser outputs (or slopes) of the steps before it.

Same signature and conventions as `sampling` (which lists them under ComfyUI's names).
"""
import numpy as np
import torch

from .sampling_base import ancestral_step, lambda_to_sigma, report, sigma_to_lambda, split_seed, to_d
from .sampling_noise import BrownianNoiseSampler, default_noise_sampler


def _lms_coefficient(order, t, i, j):
    """Integral over [t[i], t[i+1]] of the Lagrange basis polynomial of node t[i-j]."""
    others = [t[i - k] for k in range(order) if k != j]
    basis = np.polynomial.Polynomial([1.0])
    if others:
        basis = np.polynomial.Polynomial.fromroots(others) / np.prod([t[i - j] - r for r in others])
    antiderivative = basis.integ()
    return float(antiderivative(t[i + 1]) - antiderivative(t[i]))


@torch.no_grad()
def lms(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, order=4):
    """Linear multistep (Adams-Bashforth in sigma) over the last `order` slopes."""
    extra_args, _ = split_seed(extra_args)
    s_in = x.new_ones([x.shape[0]])
    t = sigmas.detach().cpu().double().numpy()
    slopes = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        slopes = (slopes + [to_d(x, sigmas[i], denoised)])[-order:]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            current_order = min(i + 1, order)
            coeffs = [_lms_coefficient(current_order, t, i, j) for j in range(current_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(slopes)))
    return x


@torch.no_grad()
def dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver++(2M): second-order multistep in lambda; first order on the first and last step."""
    extra_args, _ = split_seed(extra_args)
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        lam, lam_next = sigma_to_lambda(sigmas[i]), sigma_to_lambda(sigmas[i + 1])
        h = lam_next - lam
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            ratio = (lam - sigma_to_lambda(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * ratio)) * denoised - (1 / (2 * ratio)) * old_denoised
        x = (lambda_to_sigma(lam_next) / lambda_to_sigma(lam)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def _dpmpp_multistep_sde(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise,
                         max_order, solver_type="midpoint"):
    """DPM-Solver++(2M/3M) SDE: multistep data prediction with noise injected along the way."""
    if len(sigmas) <= 1:
        return x
    extra_args, seed = split_seed(extra_args)
    s_in = x.new_ones([x.shape[0]])
    noise_sampler = noise_sampler or BrownianNoiseSampler(x, seed)
    history = []  # (denoised, h) of earlier steps, newest first
    h = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = sigma_to_lambda(sigmas[i]), sigma_to_lambda(sigmas[i + 1])
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + (-h_eta).expm1().neg() * denoised
            if max_order == 3 and len(history) >= 2:
                (d_1, h_1), (d_2, h_2) = history[0], history[1]
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif history and history[0][1] is not None:
                d_1, h_1 = history[0]
                if max_order == 3:
                    phi_2 = h_eta.neg().expm1() / h_eta + 1
                    x = x + phi_2 * (denoised - d_1) / (h_1 / h)
                elif solver_type == "heun":
                    x = x + ((-h_eta).expm1().neg() / (-h_eta) + 1) * (h / h_1) * (denoised - d_1)
                else:
                    x = x + 0.5 * (-h_eta).expm1().neg() * (h / h_1) * (denoised - d_1)
            if eta > 0 and s_noise > 0:
                x = x + (noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
                         * (-2 * h * eta).expm1().neg().sqrt() * s_noise)
        history = [(denoised, h)] + history[:1]
    return x


def dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 eta=1.0, s_noise=1.0, solver_type="midpoint"):
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"dpmpp_2m_sde: solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    return _dpmpp_multistep_sde(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, 2, solver_type)


def dpmpp_2m_sde_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                      eta=1.0, s_noise=1.0):
    return _dpmpp_multistep_sde(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, 2, "heun")


def dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 eta=1.0, s_noise=1.0):
    return _dpmpp_multistep_sde(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, 3)


_IPNDM_WEIGHTS = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12],
                  4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


@torch.no_grad()
def ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, max_order=4):
    """Improved PNDM: Adams-Bashforth with fixed (uniform-step) weights over up to 4 slopes."""
    extra_args, _ = split_seed(extra_args)
    s_in = x.new_ones([x.shape[0]])
    slopes = []  # newest first
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        slopes = [(x - denoised) / sigmas[i]] + slopes[:max_order - 1]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            weights = _IPNDM_WEIGHTS[min(max_order, i + 1)]
            x = x + (sigmas[i + 1] - sigmas[i]) * sum(w * d for w, d in zip(weights, slopes))
    return x


@torch.no_grad()
def gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        ge_gamma=2.0):
    """Euler plus (ge_gamma - 1) times the change in slope since the previous step."""
    extra_args, _ = split_seed(extra_args)
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + d * dt
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


@torch.no_grad()
def _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, s_noise, eta):
    """RES second-order multistep exponential integrator (arXiv 2308.02157)."""
    extra_args, seed = split_seed(extra_args)
    s_in = x.new_ones([x.shape[0]])
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    phi1 = lambda t: torch.expm1(t) / t
    phi2 = lambda t: (phi1(t) - 1.0) / t
    old_denoised = old_sigma_down = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if sigma_down == 0 or old_denoised is None:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            lam, lam_old = sigma_to_lambda(sigmas[i]), sigma_to_lambda(old_sigma_down)
            lam_next, lam_prev = sigma_to_lambda(sigma_down), sigma_to_lambda(sigmas[i - 1])
            h = lam_next - lam
            c2 = (lam_prev - lam_old) / h
            b1 = torch.nan_to_num(phi1(-h) - phi2(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2(-h) / c2, nan=0.0)
            x = lambda_to_sigma(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigma_up > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised, old_sigma_down = denoised, sigma_down
    return x


def res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, s_noise=1.0):
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, s_noise, eta=0.0)


def res_multistep_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                            eta=1.0, s_noise=1.0):
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, s_noise, eta)


def _er_noise_scaler(lam):
    return lam * ((lam ** 0.3).exp() + 10.0)


@torch.no_grad()
def er_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
           s_noise=1.0, max_stage=3):
    """Extended reverse-time SDE solver, VP ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169).

    With data scale 1 its lambda (sigma / alpha) is sigma itself. Stages 2 and 3 add the first and
    second differences of D, their weights integrated numerically over 200 points.
    """
    extra_args, seed = split_seed(extra_args)
    s_in = x.new_ones([x.shape[0]])
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    points = torch.arange(200, dtype=sigmas.dtype, device=sigmas.device)
    old_denoised = old_slope = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        report(callback, x, i, sigmas[i], sigmas[i], denoised)
        lam_s, lam_t = sigmas[i], sigmas[i + 1]
        if lam_t == 0:
            x = denoised
        else:
            ratio = _er_noise_scaler(lam_t) / _er_noise_scaler(lam_s)
            x = ratio * x + (1 - ratio) * denoised
            stage = min(max_stage, i + 1)
            if stage >= 2:
                dt = lam_t - lam_s
                dl = -dt / len(points)
                grid = lam_t + points * dl
                scaled = _er_noise_scaler(grid)
                slope = (denoised - old_denoised) / (lam_s - sigmas[i - 1])
                x = x + (dt + (1 / scaled).sum() * dl * _er_noise_scaler(lam_t)) * slope
                if stage >= 3:
                    curvature = (slope - old_slope) / ((lam_s - sigmas[i - 2]) / 2)
                    weight = dt ** 2 / 2 + ((grid - lam_s) / scaled).sum() * dl * _er_noise_scaler(lam_t)
                    x = x + weight * curvature
                old_slope = slope
            if s_noise > 0:
                spread = (lam_t ** 2 - lam_s ** 2 * ratio ** 2).sqrt().nan_to_num(nan=0.0)
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * spread
        old_denoised = denoised
    return x
