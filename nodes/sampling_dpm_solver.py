"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927) choosing its own steps: ComfyUI's dpm_fast and dpm_adaptive.

Both use only the schedule's ends: from sigmas[0] down to its smallest nonzero sigma (where they
stop, leaving that little noise in, as ComfyUI's do). They step in t = -ln sigma with the noise
prediction eps = (x - D) / sigma, solvers of order 1 to 3 with the paper's r1, r2.
"""
import math

import torch

from .sampling_base import ancestral_step, report, split_seed
from .sampling_noise import default_noise_sampler


class _Solver:
    """eps evaluations at one step's start and stages, cached so two solvers can share them."""

    def __init__(self, model, model_args):
        self.model, self.model_args, self.evaluations = model, model_args, 0

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, x, t):
        self.evaluations += 1
        denoised = self.model(x, self.sigma(t) * x.new_ones([x.shape[0]]), **self.model_args)
        return (x - denoised) / self.sigma(t)

    def first_order(self, x, t, t_next, cache):
        h = t_next - t
        return x - self.sigma(t_next) * h.expm1() * cache["eps"]

    def _stage(self, x, t, h, r, cache, key):
        if key not in cache:
            u = x - self.sigma(t + r * h) * (r * h).expm1() * cache["eps"]
            cache[key] = self.eps(u, t + r * h)
        return cache[key]

    def second_order(self, x, t, t_next, cache, r1=0.5):
        h = t_next - t
        eps_1 = self._stage(x, t, h, r1, cache, ("r", r1))
        return (x - self.sigma(t_next) * h.expm1() * cache["eps"]
                - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_1 - cache["eps"]))

    def third_order(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps, eps_1 = cache["eps"], self._stage(x, t, h, r1, cache, ("r", r1))
        if ("r", r2) not in cache:
            s2 = t + r2 * h
            u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
                  - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_1 - eps))
            cache[("r", r2)] = self.eps(u2, s2)
        eps_2 = cache[("r", r2)]
        return (x - self.sigma(t_next) * h.expm1() * eps
                - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_2 - eps))

    def step(self, order, x, t, t_next, cache):
        return (self.first_order, self.second_order, self.third_order)[order - 1](x, t, t_next, cache)


def _ends(sigmas):
    """t at the start and at the smallest nonzero sigma, or None when there is nothing to do."""
    if len(sigmas) <= 1:
        return None
    sigma_min = sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]
    if sigma_min <= 0 or sigmas[0] <= 0:
        raise ValueError("dpm_fast / dpm_adaptive: sigma_min and sigma_max must not be 0")
    return sigmas[0].log().neg(), sigma_min.log().neg()


def _ancestral_target(solver, t, t_next, t_end, eta):
    """With eta > 0, step to a lower noise level and make up the rest with fresh noise of size su."""
    if not eta:
        return t_next, 0.0
    sigma_down, _ = ancestral_step(solver.sigma(t), solver.sigma(t_next), eta)
    t_down = torch.minimum(t_end, sigma_down.log().neg())
    return t_down, (solver.sigma(t_next) ** 2 - solver.sigma(t_down) ** 2) ** 0.5


def _report_step(callback, solver, x, i, t, cache):
    denoised = x - solver.sigma(t) * cache["eps"]
    report(callback, x, i, solver.sigma(t), solver.sigma(t), denoised)


@torch.no_grad()
def dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
             eta=0.0, s_noise=1.0):
    """DPM-Solver-Fast: len(sigmas) - 1 model evaluations spent on evenly spaced steps in t,
    third order but for the last one or two."""
    ends = _ends(sigmas)
    if ends is None:
        return x
    t_start, t_end = ends
    model_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    solver = _Solver(model, model_args)
    evaluations = len(sigmas) - 1
    m = evaluations // 3 + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, dtype=sigmas.dtype, device=sigmas.device)
    orders = [3] * (m - 2) + [2, 1] if evaluations % 3 == 0 else [3] * (m - 1) + [evaluations % 3]
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_next_, sigma_up = _ancestral_target(solver, t, t_next, t_end, eta)
        cache = {"eps": solver.eps(x, t)}
        _report_step(callback, solver, x, i, t, cache)
        x = solver.step(order, x, t, t_next_, cache)
        if sigma_up:
            x = x + sigma_up * s_noise * noise_sampler(solver.sigma(t), solver.sigma(t_next))
    return x


class _StepSizeController:
    """PID control of the step size from the error estimate (accept when the factor >= accept_safety)."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order, accept_safety, eps=1e-8):
        self.h, self.accept_safety, self.eps = h, accept_safety, eps
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.inverse_errors = []

    def propose(self, error):
        inverse = 1 / (float(error) + self.eps)
        if not self.inverse_errors:
            self.inverse_errors = [inverse] * 3
        self.inverse_errors[0] = inverse
        e0, e1, e2 = self.inverse_errors
        factor = 1 + math.atan(e0 ** self.b1 * e1 ** self.b2 * e2 ** self.b3 - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inverse_errors = [e0, e0, e1]
        self.h *= factor
        return accept


@torch.no_grad()
def dpm_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0,
                 accept_safety=0.81, eta=0.0, s_noise=1.0):
    """DPM-Solver-12 / -23 with adaptive steps: the lower-order result estimates the error."""
    if order not in (2, 3):
        raise ValueError(f"dpm_adaptive: order must be 2 or 3, got {order}")
    ends = _ends(sigmas)
    if ends is None:
        return x
    t, t_end = ends
    model_args, seed = split_seed(extra_args)
    noise_sampler = noise_sampler or default_noise_sampler(x, seed)
    solver = _Solver(model, model_args)
    controller = _StepSizeController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    atol, rtol = torch.tensor(atol), torch.tensor(rtol)
    x_prev, steps = x, 0
    while t < t_end - 1e-5:
        t_next = torch.minimum(t_end, t + controller.h)
        t_next_, sigma_up = _ancestral_target(solver, t, t_next, t_end, eta)
        cache = {"eps": solver.eps(x, t)}
        _report_step(callback, solver, x, steps, t, cache)
        if order == 2:
            x_low = solver.first_order(x, t, t_next_, cache)
            x_high = solver.second_order(x, t, t_next_, cache)
        else:
            x_low = solver.second_order(x, t, t_next_, cache, r1=1 / 3)
            x_high = solver.third_order(x, t, t_next_, cache)
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if controller.propose(error):
            x_prev = x_low
            x = x_high
            if sigma_up:
                x = x + sigma_up * s_noise * noise_sampler(solver.sigma(t), solver.sigma(t_next))
            t = t_next
        steps += 1
    return x
