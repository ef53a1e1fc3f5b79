"""UniPC (Zhao et al. 2023, arXiv 2302.04867): multistep predictor-corrector, data prediction, B(h) variants.

ComfyUI's uni_pc / uni_pc_bh2 run it in the variance-preserving scale: with
alpha = 1/sqrt(1 + sigma^2) and sigma_vp = sigma * alpha, the solver's x is the EDM x times alpha,
its time is lambda = -ln sigma, and its data prediction is the EDM denoiser D itself. As there, a
schedule ending in 0 is cut at sigma 0.001 (lambda must stay finite), the last step has no
corrector, and the result is the EDM x at that sigma. Order 3 at most, lowered for the first
steps and the last two (`lower_order_final`).
"""
import math

import torch

from .sampling_base import split_seed

FINAL_SIGMA = 0.001


def _coefficients(order, rks, hh, variant):
    """B(h) and the predictor/corrector weights solving UniPC's order conditions."""
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi_k = math.expm1(hh) / hh - 1
    rows, rhs, factorial = [], [], 1
    for k in range(1, order + 1):
        rows.append([r ** (k - 1) for r in rks])
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    rows, rhs = torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64)
    if order == 2:
        rhos_p = [0.5]
    elif order > 2:
        rhos_p = torch.linalg.solve(rows[:-1, :-1], rhs[:-1]).tolist()
    else:
        rhos_p = []
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(rows, rhs).tolist()
    return b_h, rhos_p, rhos_c


def _update(denoise, x, history, sigma_t, order, variant, use_corrector):
    """One UniPC step to sigma_t from history [(sigma, D), ...] (newest last), in the VP scale.

    Returns the new x and the model output at the predicted point (None without the corrector):
    UniPC reuses that evaluation as the next step's newest history entry.
    """
    sigma_0, model_0 = history[-1]
    lam_0, lam_t = -math.log(sigma_0), -math.log(sigma_t)
    h = lam_t - lam_0
    alpha_t = 1 / math.sqrt(1 + sigma_t ** 2)
    std_ratio = (sigma_t * alpha_t) / (sigma_0 / math.sqrt(1 + sigma_0 ** 2))

    rks, differences = [], []
    for k in range(1, order):
        sigma_k, model_k = history[-(k + 1)]
        rk = (-math.log(sigma_k) - lam_0) / h
        rks.append(rk)
        differences.append((model_k - model_0) / rk)
    rks.append(1.0)
    b_h, rhos_p, rhos_c = _coefficients(order, rks, -h, variant)

    x_linear = std_ratio * x - alpha_t * math.expm1(-h) * model_0
    x_t = x_linear - alpha_t * b_h * sum(r * d for r, d in zip(rhos_p, differences))
    if not use_corrector:
        return x_t, None
    model_t = denoise(x_t, sigma_t)
    correction = sum(r * d for r, d in zip(rhos_c[:-1], differences)) + rhos_c[-1] * (model_t - model_0)
    return x_linear - alpha_t * b_h * correction, model_t


@torch.no_grad()
def _unipc(model, x, sigmas, extra_args, callback, variant):
    model_args, _ = split_seed(extra_args)
    steps_sigmas = [float(s) for s in sigmas]
    if steps_sigmas[-1] == 0:
        steps_sigmas[-1] = FINAL_SIGMA
    steps = len(steps_sigmas) - 1
    if steps < 1:
        return x
    order = max(1, min(3, steps - 1))

    def scale(sigma):  # alpha: EDM x -> VP x
        return 1 / math.sqrt(1 + sigma ** 2)

    def denoise(x_vp, sigma):
        x_edm = x_vp / scale(sigma)
        return model(x_edm, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device), **model_args)

    def report(i, x_vp, sigma, denoised):
        if callback is not None:
            s = torch.tensor(sigma, dtype=sigmas.dtype)
            callback({"x": x_vp / scale(sigma), "i": i, "sigma": s, "sigma_hat": s, "denoised": denoised})

    x = x * scale(steps_sigmas[0])
    history = [(steps_sigmas[0], denoise(x, steps_sigmas[0]))]
    report(0, x, steps_sigmas[0], history[-1][1])
    for step in range(1, steps + 1):
        sigma_t = steps_sigmas[step]
        step_order = min(order, step, steps + 1 - step)
        use_corrector = step < steps
        x, model_t = _update(denoise, x, history[-order:], sigma_t, step_order, variant, use_corrector)
        if step < steps:
            history.append((sigma_t, model_t))
            report(step, x, sigma_t, model_t)
    return x / scale(steps_sigmas[-1])


def uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """UniPC with B(h) = h (ComfyUI's uni_pc)."""
    return _unipc(model, x, sigmas, extra_args, callback, "bh1")


def uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """UniPC with B(h) = e^h - 1 (ComfyUI's uni_pc_bh2)."""
    return _unipc(model, x, sigmas, extra_args, callback, "bh2")
