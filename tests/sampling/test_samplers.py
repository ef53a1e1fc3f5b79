"""Samplers on toy denoisers with known answers: exactness, convergence order, seeds, callbacks."""
import pytest
import torch

from vidgraph.nodes import sampling
from vidgraph.nodes.sampling import SAMPLER_NAMES, SAMPLERS, UNSUPPORTED_SAMPLERS, get_sampler
from vidgraph.nodes.schedules import calculate_sigmas

from sampling_toys import GaussianData

REQUIRED = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m",
            "dpmpp_2m_sde", "dpmpp_3m_sde", "dpmpp_sde", "lcm", "ddim", "uni_pc", "uni_pc_bh2"]
STOCHASTIC = ["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
              "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "ddpm", "lcm", "res_multistep_ancestral",
              "seeds_2", "seeds_3", "er_sde"]
DETERMINISTIC = [name for name in SAMPLERS
                 if name not in STOCHASTIC and name != "dpm_adaptive" and not name.endswith("_gpu")]
STOP_AT_SIGMA_MIN = ["dpm_fast", "dpm_adaptive"]  # as ComfyUI's, they leave the last sigma's noise in
SECOND_ORDER_OR_MORE = ["dpm_fast", "heun", "dpm_2", "lms", "dpmpp_2m", "ipndm", "res_multistep", "uni_pc", "uni_pc_bh2"]


def test_sampler_names_are_comfyuis_in_order():
    assert len(SAMPLER_NAMES) == 42
    assert SAMPLER_NAMES[:3] == ["euler", "euler_cfg_pp", "euler_ancestral"]
    assert SAMPLER_NAMES[-3:] == ["ddim", "uni_pc", "uni_pc_bh2"]
    assert set(SAMPLERS) <= set(SAMPLER_NAMES)
    assert set(REQUIRED) <= set(SAMPLERS)
    assert sorted(UNSUPPORTED_SAMPLERS + list(SAMPLERS)) == sorted(SAMPLER_NAMES)


def test_unsupported_and_unknown_samplers_are_clear_errors():
    assert get_sampler("euler") is sampling.euler
    with pytest.raises(ValueError, match="'deis' is in ComfyUI's list but not implemented.*euler"):
        get_sampler("deis")
    with pytest.raises(ValueError, match="unknown sampler 'eular'"):
        get_sampler("eular")


class PointData:
    """All data at one point x0: the exact denoiser is x0 whatever x and sigma are."""

    def __init__(self, x0):
        self.x0 = x0

    def __call__(self, x, sigma, **kwargs):
        return self.x0.expand_as(x).clone()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_lands_on_a_single_data_point(name):
    x0 = torch.tensor([0.7, -1.2, 0.1, 2.0], dtype=torch.float64).reshape(1, 4, 1, 1)
    sigmas = calculate_sigmas("karras", 6, 0.002, 80.0).double()
    noise = torch.randn(3, 4, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = SAMPLERS[name](PointData(x0), noise * sigmas[0], sigmas, extra_args={"seed": 5})
    # uni_pc stops at sigma 0.001 as ComfyUI's does, dpm_fast/dpm_adaptive at the last nonzero sigma
    tolerance = 1e-9
    if name.startswith("uni_pc") or name in STOP_AT_SIGMA_MIN:
        tolerance = 3e-3 * float(noise.abs().max())
    assert float((out - x0).abs().max()) <= tolerance


def ode_error(name, steps, data):
    sigmas = calculate_sigmas("karras", steps, 0.002, 80.0).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 80.0
    out = SAMPLERS[name](data, x, sigmas)
    sigma_end = float(sigmas[-2]) if name in STOP_AT_SIGMA_MIN else 0.0
    return float((out - data.ode_solution(x, float(sigmas[0]), sigma_end)).abs().max())


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_converge_to_the_exact_ode_solution(name, gaussian):
    coarse, fine = ode_error(name, 20, gaussian), ode_error(name, 40, gaussian)
    assert fine < coarse
    assert fine < 0.08
    if name in SECOND_ORDER_OR_MORE:
        assert coarse / fine > 3.0, (coarse, fine)  # second order: error / 4 when steps double
    if name in ("euler", "ddim"):
        assert 1.6 < coarse / fine < 2.6, (coarse, fine)  # first order


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_are_reproducible_from_the_seed(name, gaussian):
    sigmas = calculate_sigmas("karras", 8, 0.002, 80.0)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 80.0
    first = SAMPLERS[name](gaussian, x, sigmas, extra_args={"seed": 42})
    again = SAMPLERS[name](gaussian, x, sigmas, extra_args={"seed": 42})
    other = SAMPLERS[name](gaussian, x, sigmas, extra_args={"seed": 43})
    assert torch.equal(first, again)
    assert float((first - other).abs().max()) > 1e-3


@pytest.mark.parametrize("name", [n for n in STOCHASTIC if n != "lcm"])
def test_stochastic_samplers_sample_the_data_distribution(name):
    data = GaussianData(mean=0.5, std=0.3)
    sigmas = calculate_sigmas("karras", 50, 0.002, 80.0)
    x = torch.randn(2, 4096, generator=torch.Generator().manual_seed(0)) * float((1 + sigmas[0] ** 2).sqrt())
    out = SAMPLERS[name](data, x, sigmas, extra_args={"seed": 1})
    assert abs(float(out.mean()) - 0.5) < 0.015
    assert abs(float(out.std()) - 0.3) < 0.045


@pytest.mark.parametrize("name", [name for name in SAMPLERS if name not in STOP_AT_SIGMA_MIN])
def test_callback_runs_once_per_step_before_the_update(name, gaussian):
    sigmas = calculate_sigmas("karras", 5, 0.002, 80.0)
    x = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0)) * 80.0
    seen = []
    SAMPLERS[name](gaussian, x, sigmas, extra_args={"seed": 1}, callback=seen.append)
    assert [info["i"] for info in seen] == list(range(5))
    for info in seen:
        assert set(info) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert info["x"].shape == x.shape and info["denoised"].shape == x.shape
        assert float(info["sigma"]) == pytest.approx(float(sigmas[info["i"]]), rel=1e-6)
    assert torch.equal(seen[0]["x"], x) or name.startswith("uni_pc")


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_extra_args_reach_the_model_but_the_seed_does_not(name):
    received = []

    def model(x, sigma, **kwargs):
        received.append(kwargs)
        assert sigma.shape == (x.shape[0],)
        return torch.zeros_like(x)

    sigmas = calculate_sigmas("exponential", 3, 0.002, 80.0)
    SAMPLERS[name](model, torch.randn(2, 1, 2, 2), sigmas, extra_args={"seed": 3, "cond": "c"})
    assert received and all(kwargs == {"cond": "c"} for kwargs in received)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_schedule_without_steps_returns_x(name, gaussian):
    x = torch.randn(1, 2, 2, 2)
    assert torch.equal(SAMPLERS[name](gaussian, x, torch.tensor([1.0])), x)
    assert gaussian.calls == 0


def test_ancestral_noise_follows_comfyuis_seeding(gaussian):
    """ComfyUI draws ancestral noise from a CPU generator seeded with seed + 1."""
    sigmas = calculate_sigmas("karras", 4, 0.002, 80.0)
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 80.0
    generator = torch.Generator().manual_seed(8)
    by_hand = sampling.euler_ancestral(gaussian, x, sigmas, noise_sampler=lambda s, t: torch.randn(x.shape, generator=generator))
    assert torch.equal(sampling.euler_ancestral(gaussian, x, sigmas, extra_args={"seed": 7}), by_hand)


def test_churn_adds_noise_only_when_asked(gaussian):
    sigmas = calculate_sigmas("karras", 6, 0.002, 80.0)
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 80.0
    plain = sampling.euler(gaussian, x, sigmas, extra_args={"seed": 1})
    churned = sampling.euler(gaussian, x, sigmas, extra_args={"seed": 1}, s_churn=1.0)
    assert float((plain - churned).abs().max()) > 1e-4
    assert torch.equal(churned, sampling.euler(gaussian, x, sigmas, extra_args={"seed": 1}, s_churn=1.0))


def test_ancestral_with_eta_zero_is_the_deterministic_sampler(gaussian):
    sigmas = calculate_sigmas("karras", 6, 0.002, 80.0)
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 80.0
    assert torch.allclose(sampling.euler_ancestral(gaussian, x, sigmas, eta=0.0),
                          sampling.euler(gaussian, x, sigmas), atol=1e-5)
    assert torch.allclose(sampling.dpm_2_ancestral(gaussian, x, sigmas, eta=0.0),
                          sampling.dpm_2(gaussian, x, sigmas), atol=1e-5)
    assert torch.allclose(sampling.res_multistep_ancestral(gaussian, x, sigmas, eta=0.0),
                          sampling.res_multistep(gaussian, x, sigmas), atol=1e-5)


def test_dpmpp_2m_sde_with_eta_zero_is_dpmpp_2m(gaussian):
    sigmas = calculate_sigmas("karras", 8, 0.002, 80.0).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80.0
    ode = sampling.dpmpp_2m(gaussian, x, sigmas)
    assert torch.allclose(sampling.dpmpp_2m_sde(gaussian, x, sigmas, eta=0.0), ode, atol=1e-9)
    assert not torch.allclose(sampling.dpmpp_2m_sde_heun(gaussian, x, sigmas, eta=0.0), ode, atol=1e-6)


def test_float32_run_from_sigma_700_stays_finite(gaussian):
    sigmas = calculate_sigmas("karras", 3)
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(7)) * float((1 + sigmas[0] ** 2).sqrt())
    for name in SAMPLERS:
        out = SAMPLERS[name](gaussian, x, sigmas, extra_args={"seed": 7})
        assert out.dtype == torch.float32 and bool(out.isfinite().all()), name


def test_sde_samplers_without_noise_are_their_exponential_integrators(gaussian):
    """With eta = 0, dpmpp_sde and seeds_2 are both DPM-Solver++(2S); seeds_3 is third order."""
    def error(name, steps):
        sigmas = calculate_sigmas("karras", steps, 0.002, 80.0).double()
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 80.0
        out = SAMPLERS[name](gaussian, x, sigmas, eta=0.0)
        return out, float((out - gaussian.ode_solution(x, float(sigmas[0]))).abs().max())

    assert torch.allclose(error("seeds_2", 12)[0], error("dpmpp_sde", 12)[0], atol=1e-9)
    assert error("dpmpp_sde", 20)[1] / error("dpmpp_sde", 40)[1] > 3.0
    assert error("seeds_3", 20)[1] / error("seeds_3", 40)[1] > 6.0


def test_dpm_fast_spends_one_model_call_per_scheduled_step(gaussian):
    sigmas = calculate_sigmas("karras", 10, 0.002, 80.0)
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 80.0
    seen = []
    sampling.dpm_fast(gaussian, x, sigmas, callback=seen.append)
    assert gaussian.calls == 10
    assert [info["i"] for info in seen] == list(range(len(seen))) and 2 <= len(seen) <= 10
    assert float(seen[0]["sigma"]) == pytest.approx(float(sigmas[0]), rel=1e-5)


def test_dpm_adaptive_gets_closer_with_a_tighter_tolerance():
    sigmas = calculate_sigmas("karras", 10, 0.002, 80.0).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 80.0
    errors, calls = [], []
    for rtol in (0.05, 0.002):
        data = GaussianData()
        out = sampling.dpm_adaptive(data, x, sigmas, rtol=rtol, atol=rtol / 6)
        errors.append(float((out - data.ode_solution(x, float(sigmas[0]), float(sigmas[-2]))).abs().max()))
        calls.append(data.calls)
    assert errors[1] < errors[0] / 5 and errors[1] < 0.01
    assert calls[1] > calls[0]
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        sampling.dpm_adaptive(GaussianData(), x, sigmas, order=4)


@pytest.mark.parametrize("name", STOP_AT_SIGMA_MIN)
def test_dpm_solvers_with_eta_are_seeded(name, gaussian):
    sigmas = calculate_sigmas("karras", 9, 0.002, 80.0)
    x = torch.randn(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 80.0
    run = lambda seed: SAMPLERS[name](gaussian, x, sigmas, extra_args={"seed": seed}, eta=1.0)  # noqa: E731
    assert torch.equal(run(1), run(1)) and not torch.allclose(run(1), run(2))
