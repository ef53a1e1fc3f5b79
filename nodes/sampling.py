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
"""
import math

import numpy as np
import torch

from .sampling_noise import BrownianNoiseSampler, default_noise_sampler
from .sampling_unipc import uni_pc, uni_pc_bh2


def _model_args(extra_args):
    """Split the seed off the model's keyword arguments."""
    model_args = dict(extra_args or {})
    return model_args, model_args.pop("seed", None)


def _denoise(model, x, sigma, model_args):
    return model(x, sigma * x.new_ones([x.shape[0]]), **model_args)


def _report(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def to_d(x, sigma, denoised):
    """The probability-flow ODE's dx/dsigma."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from, sigma_to, eta=1.0):
    """Split a step into a deterministic move down to sigma_down and fresh noise of size sigma_up."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler):
    """Karras et al.'s stochastic churn: raise sigma by gamma and add the matching noise."""
    gamma = 0.0
    if s_churn > 0 and s_tmin <= sigmas[i] <= s_tmax:
        gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1)
    sigma_hat = sigmas[i] * (gamma + 1) if gamma > 0 else sigmas[i]
    if gamma > 0:
        x = x + noise_sampler(sigmas[i], sigma_hat) * s_noise * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
    return x, sigma_hat


def _lambda(sigma):
    """Half log-SNR of an EDM sigma (data scale 1): the exponential integrators' time."""
    return sigma.log().neg()


def _sigma(lam):
    return lam.neg().exp()


@torch.no_grad()
def euler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
          s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler steps (Karras et al. 2022, algorithm 2); deterministic unless s_churn > 0."""
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = _denoise(model, x, sigma_hat, model_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    eta=1.0, s_noise=1.0):
    """Euler down to sigma_down, then fresh noise back up to the next sigma."""
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised
        else:
            d = to_d(x, sigmas[i], denoised)
            x = x + d * (sigma_down - sigmas[i]) + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def heun(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
         s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun's second-order method; the last step onto sigma 0 is a plain Euler step."""
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = _denoise(model, x, sigma_hat, model_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], _denoise(model, x_2, sigmas[i + 1], model_args))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
            s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun++: up to three slope evaluations per step, weighted by sigma / sigmas[0]."""
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    s_end = sigmas[-1]
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = _denoise(model, x, sigma_hat, model_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == s_end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], _denoise(model, x_2, sigmas[i + 1], model_args))
        if sigmas[i + 2] == s_end:
            w_2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w_2) + d_2 * w_2) * dt
        else:
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = to_d(x_3, sigmas[i + 2], _denoise(model, x_3, sigmas[i + 2], model_args))
            w_2, w_3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + ((1 - w_2 - w_3) * d + w_2 * d_2 + w_3 * d_3) * dt
    return x


def _dpm_2_step(model, x, d, sigma, sigma_to, model_args):
    """DPM-Solver-2: take the slope at the geometric midpoint of sigma and sigma_to."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, _denoise(model, x_2, sigma_mid, model_args))
    return x + d_2 * (sigma_to - sigma)


@torch.no_grad()
def dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
          s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """DPM-Solver-2 steps in sigma (midpoint in log sigma); Euler onto sigma 0."""
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
        denoised = _denoise(model, x, sigma_hat, model_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            x = _dpm_2_step(model, x, d, sigma_hat, sigmas[i + 1], model_args)
    return x


@torch.no_grad()
def dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                    eta=1.0, s_noise=1.0):
    """DPM-Solver-2 down to sigma_down, then fresh noise back up to the next sigma."""
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            x = _dpm_2_step(model, x, d, sigmas[i], sigma_down, model_args)
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


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
    model_args, _ = _model_args(extra_args)
    t = sigmas.detach().cpu().double().numpy()
    slopes = []
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        slopes = (slopes + [to_d(x, sigmas[i], denoised)])[-order:]
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            current_order = min(i + 1, order)
            coeffs = [_lms_coefficient(current_order, t, i, j) for j in range(current_order)]
            x = x + sum(c * d for c, d in zip(coeffs, reversed(slopes)))
    return x


@torch.no_grad()
def dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                       eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S) single-step second order down to sigma_down, plus ancestral noise."""
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            lam, lam_next = _lambda(sigmas[i]), _lambda(sigma_down)
            h = lam_next - lam
            lam_mid = lam + h / 2
            x_2 = (_sigma(lam_mid) / _sigma(lam)) * x - (-h / 2).expm1() * denoised
            denoised_2 = _denoise(model, x_2, _sigma(lam_mid), model_args)
            x = (_sigma(lam_next) / _sigma(lam)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
              eta=1.0, s_noise=1.0, r=0.5):
    """DPM-Solver++ stochastic: a noisy half step to lambda + r*h, then the full step from both."""
    if len(sigmas) <= 1:
        return x
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or BrownianNoiseSampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lam_s, lam_t = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = lam_t - lam_s
        lam_mid = lam_s + r * h
        sigma_mid = _sigma(lam_mid)
        # with data scale 1 every alpha is 1, so the VP formulas reduce to these
        sd, su = ancestral_step(_sigma(lam_s), _sigma(lam_mid), eta)
        h_ = _lambda(sd) - lam_s
        x_2 = (-h_).exp() * x - (-h_).expm1() * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + noise_sampler(sigmas[i], sigma_mid) * s_noise * su
        denoised_2 = _denoise(model, x_2, sigma_mid, model_args)

        sd, su = ancestral_step(_sigma(lam_s), _sigma(lam_t), eta)
        h_ = _lambda(sd) - lam_s
        fac = 1 / (2 * r)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (-h_).exp() * x - (-h_).expm1() * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


@torch.no_grad()
def dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver++(2M): second-order multistep in lambda; first order on the first and last step."""
    model_args, _ = _model_args(extra_args)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        lam, lam_next = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
        h = lam_next - lam
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            ratio = (lam - _lambda(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * ratio)) * denoised - (1 / (2 * ratio)) * old_denoised
        x = (_sigma(lam_next) / _sigma(lam)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def _dpmpp_multistep_sde(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise,
                         max_order, solver_type="midpoint"):
    """DPM-Solver++(2M/3M) SDE: multistep data prediction with noise injected along the way."""
    if len(sigmas) <= 1:
        return x
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or BrownianNoiseSampler(x, seed)
    history = []  # (denoised, h) of earlier steps, newest first
    h = None
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = _lambda(sigmas[i]), _lambda(sigmas[i + 1])
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


@torch.no_grad()
def ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """The DDPM posterior step, taken in the variance-preserving scale x / sqrt(1 + sigma^2)."""
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = _denoise(model, x, sigma, model_args)
        _report(callback, x, i, sigma, sigma, denoised)
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
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigmas[i + 1]
    return x


_IPNDM_WEIGHTS = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12],
                  4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}


@torch.no_grad()
def ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, max_order=4):
    """Improved PNDM: Adams-Bashforth with fixed (uniform-step) weights over up to 4 slopes."""
    model_args, _ = _model_args(extra_args)
    slopes = []  # newest first
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
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
    model_args, _ = _model_args(extra_args)
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        d = to_d(x, sigmas[i], denoised)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
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
    model_args, seed = _model_args(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    phi1 = lambda t: torch.expm1(t) / t
    phi2 = lambda t: (phi1(t) - 1.0) / t
    old_denoised = old_sigma_down = None
    for i in range(len(sigmas) - 1):
        denoised = _denoise(model, x, sigmas[i], model_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if sigma_down == 0 or old_denoised is None:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            lam, lam_old = _lambda(sigmas[i]), _lambda(old_sigma_down)
            lam_next, lam_prev = _lambda(sigma_down), _lambda(sigmas[i - 1])
            h = lam_next - lam
            c2 = (lam_prev - lam_old) / h
            b1 = torch.nan_to_num(phi1(-h) - phi2(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2(-h) / c2, nan=0.0)
            x = _sigma(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigma_up > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised, old_sigma_down = denoised, sigma_down
    return x


def res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, s_noise=1.0):
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, s_noise, eta=0.0)


def res_multistep_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                            eta=1.0, s_noise=1.0):
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, s_noise, eta)


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
    "ddpm": ddpm, "lcm": lcm, "ipndm": ipndm, "res_multistep": res_multistep,
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
