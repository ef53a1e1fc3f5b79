"""The few pieces the samplers share (as in k-diffusion): the callback, the ODE slope, churn, the ancestral split.

Samplers see an EDM denoiser D(x; sigma) with data scale 1, so lambda (the half log-SNR the
exponential integrators step in) is simply -ln sigma.
"""


def split_seed(extra_args):
    """Split the seed off the model's keyword arguments."""
    model_args = dict(extra_args or {})
    return model_args, model_args.pop("seed", None)


def report(callback, x, i, sigma, sigma_hat, denoised):
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


def churn(x, sigmas, i, noise_sampler, s_churn, s_tmin, s_tmax, s_noise):
    """Karras et al.'s stochastic churn: raise sigma by gamma and add the matching noise.

    Returns (x, sigma_hat); with s_churn = 0 (the default everywhere) x is unchanged and
    sigma_hat = sigmas[i].
    """
    gamma = 0.0
    if s_churn > 0 and s_tmin <= sigmas[i] <= s_tmax:
        gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1)
    if gamma == 0:
        return x, sigmas[i]
    sigma_hat = sigmas[i] * (gamma + 1)
    return x + noise_sampler(sigmas[i], sigma_hat) * s_noise * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5, sigma_hat


def sigma_to_lambda(sigma):
    """Half log-SNR of an EDM sigma (data scale 1): the exponential integrators' time."""
    return sigma.log().neg()


def lambda_to_sigma(lam):
    return lam.neg().exp()
