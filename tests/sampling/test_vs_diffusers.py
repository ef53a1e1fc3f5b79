"""Samplers and sigma helpers against diffusers' equivalent schedulers, step by step, on a toy denoiser.

diffusers' k-diffusion ports (Euler, Euler ancestral, Heun, LMS) keep x in the EDM scale and take an
epsilon prediction; its DPM-Solver++, UniPC and DDIM keep x in the variance-preserving scale
x * alpha (alpha = 1/sqrt(1 + sigma^2)) and here take the data prediction directly.
"""
import math

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from vidgraph.nodes import sampling, schedules  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def run_ours(sampler, model, x, sigmas, **options):
    """Our trajectory: x before each step (from the callback), then the result."""
    seen = []
    out = sampler(model, x.clone(), sigmas, callback=lambda info: seen.append(info["x"].clone()), **options)
    return seen[1:] + [out]


def run_diffusers_edm(scheduler, model, x, generator=None):
    """diffusers' EDM-scale loop; returns x after each *full* step (Heun's two stages count once)."""
    states, sample = [], x.clone()
    sigmas = scheduler.sigmas
    for index, t in enumerate(scheduler.timesteps):
        sigma = sigmas[index]
        eps = (sample - model(sample, sigma.reshape(1).expand(sample.shape[0]))) / sigma
        extra = {} if generator is None else {"generator": generator}
        sample = scheduler.step(eps, t, sample, **extra).prev_sample
        if getattr(scheduler, "state_in_first_order", True) or index == len(scheduler.timesteps) - 1:
            states.append(sample.clone())
    return states


def run_diffusers_vp(scheduler, model, x_edm, sigmas):
    """diffusers' VP-scale loop on a data-predicting model; returns x after each step, EDM scale."""
    def alpha(s):
        return 1 / math.sqrt(1 + float(s) ** 2)

    states, sample = [], x_edm.clone() * alpha(sigmas[0])
    for index, t in enumerate(scheduler.timesteps):
        s = sigmas[index]
        denoised = model(sample / alpha(s), torch.full((sample.shape[0],), float(s)))
        sample = scheduler.step(denoised, t, sample).prev_sample
        states.append(sample / alpha(sigmas[index + 1]))
    return states


@pytest.fixture
def x_start():
    return torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))


def assert_trajectories_match(ours, theirs, tol):
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        scale = max(1.0, float(b.abs().max()))
        assert float((a - b).abs().max()) <= tol * scale, f"step {step}: {float((a - b).abs().max())}"


@pytest.mark.parametrize("cls, sampler", [
    ("EulerDiscreteScheduler", sampling.euler),
    ("HeunDiscreteScheduler", sampling.heun),
])
def test_deterministic_edm_schedulers(cls, sampler, gaussian, x_start):
    scheduler = getattr(diffusers, cls)(use_karras_sigmas=True, **BETAS)
    scheduler.set_timesteps(8)
    sigmas = torch.unique_consecutive(scheduler.sigmas)
    x = x_start * sigmas[0]
    theirs = run_diffusers_edm(scheduler, gaussian, x)
    assert_trajectories_match(run_ours(sampler, gaussian, x, sigmas), theirs, 2e-5)


def test_lms_matches_until_its_final_denoising_step(gaussian, x_start):
    """ComfyUI's lms jumps to the denoised estimate on the step onto sigma 0; diffusers integrates."""
    pytest.importorskip("scipy")  # diffusers' LMS integrates its coefficients with scipy
    scheduler = diffusers.LMSDiscreteScheduler(use_karras_sigmas=True, **BETAS)
    scheduler.set_timesteps(8)
    x = x_start * scheduler.sigmas[0]
    theirs = run_diffusers_edm(scheduler, gaussian, x)
    ours = run_ours(sampling.lms, gaussian, x, scheduler.sigmas)
    assert_trajectories_match(ours[:-1], theirs[:-1], 2e-5)
    before_last = ours[-2]
    expected_last = gaussian(before_last, scheduler.sigmas[-2].reshape(1).expand(2))
    assert torch.allclose(ours[-1], expected_last, atol=1e-6)


def test_euler_ancestral_with_the_same_noise(gaussian, x_start):
    scheduler = diffusers.EulerAncestralDiscreteScheduler(**BETAS)
    scheduler.set_timesteps(8)
    x = x_start * scheduler.sigmas[0]
    theirs = run_diffusers_edm(scheduler, gaussian, x, generator=torch.Generator().manual_seed(9))
    ours_generator = torch.Generator().manual_seed(9)
    noise = lambda s, t: torch.randn(x.shape, generator=ours_generator)  # noqa: E731
    ours = run_ours(sampling.euler_ancestral, gaussian, x, scheduler.sigmas, noise_sampler=noise)
    assert_trajectories_match(ours, theirs, 2e-5)


def test_dpmpp_2m_matches_dpm_solver_multistep(gaussian, x_start):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        use_karras_sigmas=True, algorithm_type="dpmsolver++", solver_order=2,
        prediction_type="sample", final_sigmas_type="zero", **BETAS)
    scheduler.set_timesteps(8)
    sigmas = scheduler.sigmas
    x = x_start * math.sqrt(1 + float(sigmas[0]) ** 2)
    theirs = run_diffusers_vp(scheduler, gaussian, x, sigmas)
    assert_trajectories_match(run_ours(sampling.dpmpp_2m, gaussian, x, sigmas), theirs, 2e-5)


@pytest.mark.parametrize("variant, sampler", [("bh1", sampling.SAMPLERS["uni_pc"]),
                                              ("bh2", sampling.SAMPLERS["uni_pc_bh2"])])
def test_uni_pc_matches_unipc_multistep(variant, sampler, gaussian, x_start):
    # ending on the table's smallest sigma (not 0) keeps ComfyUI's 0 -> 0.001 substitution out of it
    scheduler = diffusers.UniPCMultistepScheduler(
        timestep_spacing="trailing", solver_order=3, solver_type=variant, predict_x0=True,
        prediction_type="sample", final_sigmas_type="sigma_min", lower_order_final=True, **BETAS)
    scheduler.set_timesteps(8)
    sigmas = scheduler.sigmas
    assert float(sigmas[-1]) < float(sigmas[-2])
    x = x_start * math.sqrt(1 + float(sigmas[0]) ** 2)
    theirs = run_diffusers_vp(scheduler, gaussian, x, scheduler.sigmas)
    # diffusers returns each predictor result and corrects it on the next call; ours reports
    # corrected states, so only the last (never corrected) result is comparable
    ours = run_ours(sampler, gaussian, x, sigmas)
    assert float((ours[-1] - theirs[-1]).abs().max()) < 2e-5


def test_ddim_is_deterministic_ddim(gaussian, x_start):
    """ComfyUI's ddim is Euler; Euler in sigma is exactly DDIM (eta 0) in the VP scale."""
    scheduler = diffusers.DDIMScheduler(prediction_type="sample", set_alpha_to_one=True,
                                        clip_sample=False, **BETAS)
    scheduler.set_timesteps(8)
    alphas_cumprod = scheduler.alphas_cumprod
    sigmas = [float(((1 - alphas_cumprod[t]) / alphas_cumprod[t]).sqrt()) for t in scheduler.timesteps]
    sigmas = torch.tensor(sigmas + [0.0])
    x = x_start * math.sqrt(1 + float(sigmas[0]) ** 2)
    theirs = run_diffusers_vp(scheduler, gaussian, x, sigmas)
    assert_trajectories_match(run_ours(sampling.SAMPLERS["ddim"], gaussian, x, sigmas), theirs, 2e-5)


def test_karras_and_exponential_sigmas_match_diffusers():
    scheduler = diffusers.EulerDiscreteScheduler(**BETAS)
    table = torch.tensor(np.flip(((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod).numpy() ** 0.5).copy())
    for steps in (1, 3, 10, 25):
        expected = scheduler._convert_to_karras(in_sigmas=table, num_inference_steps=steps)
        ours = schedules.karras(steps, float(table[-1]), float(table[0]))
        assert torch.allclose(ours[:-1], torch.as_tensor(expected, dtype=torch.float32), rtol=1e-5)
        expected = scheduler._convert_to_exponential(in_sigmas=table, num_inference_steps=steps)
        ours = schedules.exponential(steps, float(table[-1]), float(table[0]))
        assert torch.allclose(ours[:-1], torch.as_tensor(expected, dtype=torch.float32), rtol=1e-5)
        assert float(ours[-1]) == 0.0
