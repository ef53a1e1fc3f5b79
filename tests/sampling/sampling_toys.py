"""Toy denoisers whose exact answers are known, shared by the sampling tests."""
import math


class GaussianData:
    """Data ~ N(mean, std^2) per element: the exact denoiser and probability-flow ODE are closed form."""

    def __init__(self, mean=0.5, std=0.3):
        self.mean, self.std = mean, std
        self.calls = 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        return self.mean + self.std ** 2 / (self.std ** 2 + sigma ** 2) * (x - self.mean)

    def ode_solution(self, x, sigma_from, sigma_to=0.0):
        """Where the probability-flow ODE carries x from sigma_from to sigma_to."""
        ratio = math.sqrt(self.std ** 2 + sigma_to ** 2) / math.sqrt(self.std ** 2 + sigma_from ** 2)
        return self.mean + (x - self.mean) * ratio
