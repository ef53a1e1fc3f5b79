import math

import pytest
import torch

from vidgraph.nodes import schedules
from vidgraph.nodes.schedules import (SCHEDULER_NAMES, SigmaTable, calculate_sigmas, ksampler_sigmas,
                                      step_range)

# The model's sigma table, built here independently: 1000 sigmas evenly spaced in log sigma.
TABLE = torch.linspace(math.log(0.002), math.log(700.0), 1000).exp()
SIGMA_MIN, SIGMA_MAX = float(TABLE[0]), float(TABLE[-1])


def test_scheduler_names_are_comfyuis_in_order():
    assert SCHEDULER_NAMES == ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                               "normal", "linear_quadratic", "kl_optimal"]


def test_parity_sigmas_exactly():
    """The sigmas ComfyUI used for the SVD parity cases (3 steps, float32)."""
    karras = torch.tensor([700.000122, 15.5899734, 0.00200000359, 0], dtype=torch.float32)
    exponential = torch.tensor([699.999939, 1.1832155, 0.00199999986, 0], dtype=torch.float32)
    assert torch.equal(calculate_sigmas("karras", 3), karras)
    assert torch.equal(calculate_sigmas("exponential", 3), exponential)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 20, 25])
def test_every_schedule_is_float32_decreasing_with_a_trailing_zero(name, steps):
    sigmas = calculate_sigmas(name, steps)
    assert sigmas.dtype == torch.float32 and sigmas.ndim == 1
    assert float(sigmas[-1]) == 0.0
    assert bool((sigmas[:-1] > 0).all())
    assert bool((sigmas[1:] < sigmas[:-1]).all()), sigmas
    if name == "ddim_uniform":  # ComfyUI's stride 1000 // steps can leave an extra step
        assert len(sigmas) == len(range(1, 1000, 1000 // steps)) + 1
    elif name == "beta":  # repeated table indices are dropped
        assert 2 <= len(sigmas) <= steps + 1
    else:
        assert len(sigmas) == steps + 1
    assert float(sigmas[0]) <= 700.01


def test_table_ends_are_the_models_sigma_range():
    table = SigmaTable()
    assert torch.equal(table.sigmas, TABLE)
    assert table.sigma_min == SIGMA_MIN and table.sigma_max == SIGMA_MAX
    assert table.sigma_max != 700.0  # float32 rounding, which the parity numbers depend on
    t = table.timestep(torch.tensor(3.0))
    assert math.isclose(float(t), 0.25 * math.log(3.0), rel_tol=1e-6)
    assert math.isclose(float(table.sigma(t)), 3.0, rel_tol=1e-6)


def test_simple_takes_every_nth_table_entry_from_the_top():
    assert torch.equal(calculate_sigmas("simple", 3), torch.stack([TABLE[999], TABLE[666], TABLE[333], torch.tensor(0.0)]))
    assert torch.equal(calculate_sigmas("simple", 4)[:-1], TABLE[[999, 749, 499, 249]])


def test_ddim_uniform_takes_entries_from_index_one():
    expected = TABLE[list(range(1, 1000, 333))].flip(0)
    assert torch.equal(calculate_sigmas("ddim_uniform", 3)[:-1], expected)
    assert float(calculate_sigmas("ddim_uniform", 1)[0]) == float(TABLE[1])


def test_normal_and_sgm_uniform_are_log_spaced_for_this_model():
    for steps in (3, 10, 20):
        normal = calculate_sigmas("normal", steps)
        assert torch.allclose(normal, calculate_sigmas("exponential", steps), rtol=1e-5)
        sgm = calculate_sigmas("sgm_uniform", steps)
        longer = calculate_sigmas("exponential", steps + 1)
        assert torch.allclose(sgm[:-1], longer[:-2], rtol=1e-5)


def test_beta_matches_scipy_quantiles():
    stats = pytest.importorskip("scipy.stats")
    import numpy as np
    for steps in (2, 3, 5, 10, 20, 40):
        quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
        indices = np.rint(stats.beta.ppf(quantiles, 0.6, 0.6) * 999).astype(int)
        kept = [int(i) for k, i in enumerate(indices) if k == 0 or i != indices[k - 1]]
        assert torch.equal(calculate_sigmas("beta", steps)[:-1], TABLE[kept]), steps


def test_beta_ppf_inverts_the_cdf():
    for q in (0.01, 0.3, 0.5, 0.77, 0.999):
        x = schedules.beta_ppf(q, 0.6, 0.6)
        assert math.isclose(schedules._beta_cdf(x, 0.6, 0.6), q, rel_tol=1e-10)
    assert math.isclose(schedules.beta_ppf(0.5, 0.6, 0.6), 0.5, abs_tol=1e-12)  # symmetric


def test_linear_quadratic_starts_linear():
    sigmas = calculate_sigmas("linear_quadratic", 10)
    expected_linear = torch.tensor([1 - i * 0.025 / 5 for i in range(5)]) * SIGMA_MAX
    assert torch.allclose(sigmas[:5], expected_linear, rtol=1e-6)
    assert torch.equal(calculate_sigmas("linear_quadratic", 1), torch.tensor([SIGMA_MAX, 0.0]))


def test_kl_optimal_is_evenly_spaced_in_arctan():
    sigmas = calculate_sigmas("kl_optimal", 8)[:-1].double()
    steps = sigmas.atan().diff()
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-4)
    assert math.isclose(float(sigmas[-1]), SIGMA_MIN, rel_tol=1e-4)
    assert torch.equal(calculate_sigmas("kl_optimal", 1), torch.tensor([SIGMA_MAX, 0.0]))


def test_other_sigma_ranges():
    sigmas = calculate_sigmas("karras", 5, sigma_min=0.03, sigma_max=14.6)
    assert math.isclose(float(sigmas[0]), 14.6, rel_tol=1e-5)
    assert math.isclose(float(sigmas[-2]), 0.03, rel_tol=1e-5)


def test_bad_scheduler_and_steps_are_clear_errors():
    with pytest.raises(ValueError, match="unknown scheduler 'karas'.*karras"):
        calculate_sigmas("karas", 10)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        calculate_sigmas("karras", 0)


def test_ksampler_denoise_keeps_the_tail_of_a_longer_schedule():
    assert torch.equal(ksampler_sigmas("karras", 10, 1.0), calculate_sigmas("karras", 10))
    assert torch.equal(ksampler_sigmas("karras", 10, 0.5), calculate_sigmas("karras", 20)[-11:])
    assert torch.equal(ksampler_sigmas("normal", 4, 0.3), calculate_sigmas("normal", 13)[-5:])
    assert len(ksampler_sigmas("karras", 10, 0.0)) == 0
    assert float(ksampler_sigmas("karras", 10, 0.5)[0]) < SIGMA_MAX / 10


def test_ksampler_drops_the_penultimate_sigma_for_some_samplers():
    for sampler in ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"):
        sigmas = ksampler_sigmas("karras", 6, 1.0, sampler_name=sampler)
        full = calculate_sigmas("karras", 7)
        assert torch.equal(sigmas, torch.cat([full[:-2], full[-1:]]))
        assert len(sigmas) == 7
    assert torch.equal(ksampler_sigmas("karras", 6, 1.0, sampler_name="euler"), calculate_sigmas("karras", 6))


def test_advanced_start_and_end_steps():
    sigmas = calculate_sigmas("karras", 5)
    original = sigmas.clone()
    assert torch.equal(step_range(sigmas, 0, 10000, True), sigmas)
    leftover = step_range(sigmas, 0, 2, force_full_denoise=False)
    assert torch.equal(leftover, sigmas[:3])
    finished = step_range(sigmas, 0, 2, force_full_denoise=True)
    assert torch.equal(finished[:-1], sigmas[:2]) and float(finished[-1]) == 0.0
    assert torch.equal(sigmas, original)  # the caller's schedule is not modified
    assert torch.equal(step_range(sigmas, 2, 10000), sigmas[2:])
    assert torch.equal(step_range(sigmas, 1, 3, True), torch.cat([sigmas[1:3], torch.zeros(1)]))
    assert step_range(sigmas, 5, 10000) is None
    assert step_range(sigmas, 2, 2) is None  # nothing left between start and end


def test_percent_to_sigma():
    table = SigmaTable()
    assert table.percent_to_sigma(0.0) > 1e8
    assert table.percent_to_sigma(1.0) == 0.0
    assert math.isclose(table.percent_to_sigma(0.5), math.sqrt(SIGMA_MIN * SIGMA_MAX), rel_tol=1e-9)


def test_sd_discrete_table_gives_comfyuis_schedules():
    """ComfyUI's SD 1.5 / SDXL KSampler sigmas (parity_sd/README.md in the reference material, bench/reference.py)."""
    from vidgraph.nodes.model_sampling import EPS

    euler = ksampler_sigmas("normal", 4, 1.0, "euler", table=EPS())
    assert euler.tolist() == pytest.approx([14.6146402, 2.91830707, 0.932357967, 0.0291671604, 0.0], rel=1e-7)
    unipc = ksampler_sigmas("normal", 4, 1.0, "uni_pc_bh2", table=EPS())
    assert unipc.tolist() == pytest.approx([14.6146402, 4.08608103, 1.61558032, 0.695149541, 0.0], rel=1e-7)
    assert ksampler_sigmas("normal", 2, 1.0, "uni_pc_bh2", table=EPS()).tolist() == pytest.approx(
        [14.6146402, 1.61558032, 0.0], rel=1e-7)
