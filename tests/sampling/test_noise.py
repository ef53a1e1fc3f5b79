import math

import torch

from vidgraph.nodes.sampling_noise import (BrownianNoiseSampler, default_noise_sampler, is_max_denoise,
                                           noise_latent, prepare_noise)
from vidgraph.nodes.schedules import SigmaTable, calculate_sigmas


def test_initial_noise_is_comfyuis_seeded_cpu_randn():
    noise = prepare_noise([3, 4, 8, 8], 7)
    assert noise.dtype == torch.float32 and noise.device.type == "cpu"
    assert torch.equal(noise, torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(noise, prepare_noise([3, 4, 8, 8], 8))


def test_batch_index_picks_draws_from_a_longer_run():
    single_draws = torch.Generator().manual_seed(5)
    draws = [torch.randn(1, 4, 2, 2, generator=single_draws) for _ in range(4)]
    noise = prepare_noise([2, 4, 2, 2], 5, batch_index=[3, 1])
    assert torch.equal(noise, torch.cat([draws[3], draws[1]]))
    assert torch.equal(prepare_noise([2, 4, 2, 2], 5, batch_index=[2, 2]), torch.cat([draws[2], draws[2]]))


def test_max_denoise_start_scales_noise_to_unit_data_variance():
    table = SigmaTable()
    for scheduler in ("karras", "exponential", "simple"):  # all start at (or just above) sigma_max
        sigmas = calculate_sigmas(scheduler, 3)
        assert is_max_denoise(sigmas, table.sigma_max)
    noise, latent = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    karras = calculate_sigmas("karras", 3)
    assert math.isclose(float(noise_latent(noise, latent, karras, table.sigma_max)),
                        math.sqrt(1 + float(karras[0]) ** 2), rel_tol=1e-6)
    img2img = karras[1:]  # a partial schedule starts below sigma_max: plain sigma scaling
    assert not is_max_denoise(img2img, table.sigma_max)
    latent = torch.full((1, 1, 1, 1), 2.0)
    assert math.isclose(float(noise_latent(noise, latent, img2img, table.sigma_max)),
                        2.0 + float(img2img[0]), rel_tol=1e-6)


def test_default_noise_sampler_seeding():
    x = torch.zeros(2, 3)
    draw = default_noise_sampler(x, seed=10)
    generator = torch.Generator().manual_seed(11)
    assert torch.equal(draw(1.0, 0.5), torch.randn(2, 3, generator=generator))
    assert torch.equal(draw(0.5, 0.1), torch.randn(2, 3, generator=generator))  # fresh noise each call
    unseeded = default_noise_sampler(x)
    assert unseeded(1.0, 0.5).shape == (2, 3)


def test_brownian_noise_is_reproducible_and_standard_normal():
    x = torch.zeros(50000)
    a, b = BrownianNoiseSampler(x, seed=3), BrownianNoiseSampler(x, seed=3)
    first = a(10.0, 5.0)
    assert torch.equal(first, b(10.0, 5.0))
    assert not torch.equal(first, BrownianNoiseSampler(x, seed=4)(10.0, 5.0))
    assert first.dtype == x.dtype
    assert abs(float(first.mean())) < 0.02 and abs(float(first.std()) - 1) < 0.02


def test_brownian_noise_correlates_overlapping_intervals_like_brownian_motion():
    x = torch.zeros(50000)
    draw = BrownianNoiseSampler(x, seed=0)
    whole = draw(10.0, 2.0)
    first_part = draw(10.0, 6.0)  # inside the first interval: a Brownian bridge point
    second_part = draw(6.0, 2.0)
    assert abs(float(torch.corrcoef(torch.stack([whole, first_part]))[0, 1]) - math.sqrt(4 / 8)) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([first_part, second_part]))[0, 1])) < 0.02
    # the increments add up: W(2) - W(10) = (W(6) - W(10)) + (W(2) - W(6))
    assert torch.allclose(whole * math.sqrt(8), first_part * 2 + second_part * 2, atol=1e-4)
    outside = draw(2.0, 0.5)  # beyond every known point: an independent random-walk step
    assert abs(float(torch.corrcoef(torch.stack([whole, outside]))[0, 1])) < 0.02


def test_brownian_noise_keeps_only_a_few_points_while_sampling_down():
    draw = BrownianNoiseSampler(torch.zeros(4), seed=0)
    sigmas = calculate_sigmas("karras", 30)
    for s, t in zip(sigmas[:-2], sigmas[1:-1]):
        draw(s, (s * t).sqrt())  # a half step and a full step from the same sigma, as dpmpp_sde takes
        draw(s, t)
    assert len(draw.times) <= 4
