"""KSampler / KSamplerAdvanced / guidance nodes on the tiny checkpoint, every sampler, low-VRAM, OOM retry."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from svd_nodes_support import FRAMES, small_prompt
from vidgraph.nodes.conditioning import VideoLinearCFGGuidance, VideoTriangleCFGGuidance
from vidgraph.nodes.ksampler import KSampler, KSamplerAdvanced
from vidgraph.nodes.model import Model
from vidgraph.nodes.model_management import with_shrinking_chunks
from vidgraph.nodes.sampling import SAMPLERS


@pytest.fixture
def run_sampler(tiny_models, svd_conditioning):
    """KSampler / KSamplerAdvanced on the 64x64, 3-frame conditioning; returns the latent samples."""
    positive, negative, latent = svd_conditioning
    context = tiny_models.env.context("KSampler")

    def basic(seed=1, steps=2, cfg=2.5, sampler="euler", scheduler="karras", denoise=1.0, model=None,
              latent_image=None):
        return KSampler().sample(model or tiny_models.model, seed, steps, cfg, sampler, scheduler, positive,
                                 negative, latent_image or latent, denoise, context=context)[0]["samples"]

    def advanced(add_noise="enable", seed=1, steps=2, start=0, end=10000, leftover="disable",
                 sampler="euler", latent_image=None):
        return KSamplerAdvanced().sample(tiny_models.model, add_noise, seed, steps, 2.5, sampler, "karras",
                                         positive, negative, latent_image or latent, start, end, leftover,
                                         context=context)[0]["samples"]

    return type("Samplers", (), {"basic": staticmethod(basic), "advanced": staticmethod(advanced),
                                 "latent": latent})


# -- KSampler and KSamplerAdvanced -----------------------------------------------------------------

def test_ksampler_is_repeatable_and_seed_dependent(run_sampler):
    first = run_sampler.basic(seed=5)
    assert first.shape == run_sampler.latent["samples"].shape and torch.isfinite(first).all()
    assert torch.equal(first, run_sampler.basic(seed=5))
    assert not torch.allclose(first, run_sampler.basic(seed=6))


def test_advanced_over_all_steps_is_the_ksampler(run_sampler):
    assert torch.equal(run_sampler.advanced(seed=3), run_sampler.basic(seed=3))


def test_advanced_split_in_two_passes_equals_one_pass(run_sampler):
    """Pass 1 keeps its leftover noise, pass 2 adds none: together they are the full schedule."""
    first_half = run_sampler.advanced(seed=4, steps=3, end=1, leftover="enable")
    both = run_sampler.advanced(add_noise="disable", seed=99, steps=3, start=1,
                                latent_image={"samples": first_half})
    assert torch.allclose(both, run_sampler.advanced(seed=4, steps=3), atol=1e-4)


def test_leftover_noise_is_kept_only_when_asked(run_sampler):
    noisy = run_sampler.advanced(seed=4, steps=3, end=1, leftover="enable")
    finished = run_sampler.advanced(seed=4, steps=3, end=1, leftover="disable")
    full = run_sampler.advanced(seed=4, steps=3)
    # One step from sigma 700 leaves noise of the order of the next sigma; forcing the end to 0 does not.
    assert noisy.std() > 10 * finished.std()
    assert finished.std() < 10 * full.std()


def test_add_noise_disable_starts_from_the_latent_itself(run_sampler):
    with_noise = run_sampler.advanced(add_noise="enable", seed=1)
    without = run_sampler.advanced(add_noise="disable", seed=1)
    assert not torch.allclose(with_noise, without)
    assert torch.equal(without, run_sampler.advanced(add_noise="disable", seed=2))  # the seed is unused


def test_start_past_the_end_returns_the_input_latent(run_sampler):
    latent = {"samples": torch.randn(FRAMES, 4, 8, 8)}
    assert torch.equal(run_sampler.advanced(start=5, latent_image=latent), latent["samples"])


def test_denoise_below_one_is_the_tail_of_a_longer_schedule(run_sampler):
    """KSampler(steps=2, denoise=0.5) samples the last 2 steps of a 4-step schedule, as KSamplerAdvanced
    starting at step 2 of 4 does; denoise 0 returns the latent untouched."""
    start = {"samples": torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.2}
    partial = run_sampler.basic(seed=2, steps=2, denoise=0.5, latent_image=start)
    tail = run_sampler.advanced(seed=2, steps=4, start=2, latent_image=start)
    assert torch.allclose(partial, tail, atol=1e-5)
    assert not torch.allclose(partial, run_sampler.basic(seed=2, steps=2, latent_image=start))
    assert torch.equal(run_sampler.basic(denoise=0.0, latent_image=start), start["samples"])


@pytest.mark.parametrize("sampler_name", sorted(SAMPLERS))
def test_every_sampler_runs_two_steps(run_sampler, sampler_name):
    out = run_sampler.basic(seed=1, steps=2, sampler=sampler_name)
    assert out.shape == run_sampler.latent["samples"].shape
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0  # sampled something from the all-zero latent


@pytest.mark.parametrize("sampler_name", ["euler_ancestral", "dpmpp_2m_sde"])
def test_noisy_samplers_are_repeatable_for_a_seed(run_sampler, sampler_name):
    assert torch.equal(run_sampler.basic(seed=8, sampler=sampler_name), run_sampler.basic(seed=8, sampler=sampler_name))


# -- guidance nodes ------------------------------------------------------------------------------------

def test_guidance_nodes_patch_a_copy_of_the_model(tiny_models):
    base = tiny_models.model
    linear = VideoLinearCFGGuidance().patch(base, 1.5)[0]
    triangle = VideoTriangleCFGGuidance().patch(linear, 2.0)[0]
    assert isinstance(linear, Model) and linear.patches.cfg_function is not None
    assert triangle.patches.cfg_function is not linear.patches.cfg_function
    assert base.patches.cfg_function is None  # the loader's MODEL is untouched
    assert linear.network.module is base.network.module is triangle.network.module  # weights shared, not copied


@pytest.mark.parametrize("node, min_cfg, cfg, frames, expected", [
    (VideoLinearCFGGuidance, 1.0, 2.5, 4, [1.0, 1.5, 2.0, 2.5]),
    (VideoTriangleCFGGuidance, 1.0, 3.0, 5, [1.0, 2.0, 3.0, 2.0, 1.0]),
    (None, 1.0, 2.5, 3, [2.5, 2.5, 2.5]),
])
def test_sampler_applies_the_per_frame_scales(tiny_models, svd_conditioning, node, min_cfg, cfg, frames, expected):
    seen = []
    model = node().patch(tiny_models.model, min_cfg)[0] if node else tiny_models.model.clone()

    def scales_seen(args):  # (guided - uncond) / (cond - uncond), frame by frame
        difference = args["cond_denoised"] - args["uncond_denoised"]
        guided = args["denoised"] - args["uncond_denoised"]
        seen.append((guided.flatten(1).sum(1) / difference.flatten(1).sum(1)).tolist())
        return args["denoised"]
    model.add_post_cfg(scales_seen)
    positive, negative, _ = svd_conditioning
    KSampler().sample(model, 1, 1, cfg, "euler", "karras", positive, negative,
                      {"samples": torch.zeros(frames, 4, 8, 8)}, context=tiny_models.env.context())
    assert seen and all(scales == pytest.approx(expected, rel=1e-3) for scales in seen)


def test_ramp_with_min_cfg_equal_to_cfg_is_plain_guidance(run_sampler, tiny_models):
    plain = run_sampler.basic(cfg=2.5)
    flat = VideoLinearCFGGuidance().patch(tiny_models.model, 2.5)[0]
    ramped = VideoLinearCFGGuidance().patch(tiny_models.model, 1.0)[0]
    # The ramp is applied to x - denoised, the plain scale to denoised: equal up to float32
    # cancellation at sigma 700 (x is ~700 times the latent there).
    flat_difference = (run_sampler.basic(cfg=2.5, model=flat) - plain).abs().max()
    ramp_difference = (run_sampler.basic(cfg=2.5, model=ramped) - plain).abs().max()
    assert flat_difference < 5e-3
    assert ramp_difference > 100 * flat_difference


# -- memory: OOM retry and the low-VRAM path -------------------------------------------------------------

def test_with_shrinking_chunks_halves_until_it_fits():
    tried = []

    def decode(chunk):
        tried.append(chunk)
        if chunk > 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return f"decoded in chunks of {chunk}"

    assert with_shrinking_chunks(decode, 14) == "decoded in chunks of 3"
    assert tried == [14, 7, 3]


def test_with_shrinking_chunks_gives_up_at_the_minimum_and_passes_other_errors():
    tried = []

    def always_oom(chunk):
        tried.append(chunk)
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        with_shrinking_chunks(always_oom, 8)
    assert tried == [8, 4, 2, 1]

    def broken(chunk):
        tried.append(chunk)
        raise ValueError("bad latent")

    tried.clear()
    with pytest.raises(ValueError, match="bad latent"):
        with_shrinking_chunks(broken, 8)
    assert tried == [8]


def test_low_vram_settings_give_the_same_frames(svd_env):
    normal = svd_env.executor().run(small_prompt(seed=3))
    low = svd_env.executor(lowvram=True).run(small_prompt(seed=3))
    assert normal.status == low.status == "success", "".join((low.error or {}).get("traceback") or [])
    difference = np.abs(svd_env.frames(normal).astype(int) - svd_env.frames(low).astype(int))
    # cond and uncond run as two UNet calls instead of one batch: float rounding at most
    assert difference.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_low_vram_keeps_models_on_the_cpu_between_uses(svd_env):
    low = svd_env.executor(device="cuda", dtype="fp32", lowvram=True)
    result = low.run(small_prompt(seed=3))
    assert result.status == "success", result.error
    models = low.resources.get(low.resources.keys()[0])
    for module in (models.unet, models.vae, models.clip_vision):
        assert {p.device.type for p in module.parameters()} == {"cpu"}
    normal = svd_env.executor(device="cuda", dtype="fp32")
    assert normal.run(small_prompt(seed=3)).status == "success"
    resident_models = normal.resources.get(normal.resources.keys()[0])
    assert {p.device.type for p in resident_models.unet.parameters()} == {"cuda"}


def test_width_multiple_of_8_but_odd_latent_samples(tiny_models, demo_image):
    from vidgraph.nodes.conditioning import SVD_img2vid_Conditioning

    context = tiny_models.env.context()
    positive, negative, latent = SVD_img2vid_Conditioning().encode(
        tiny_models.clip_vision, demo_image, tiny_models.vae, 72, 64, 2, 127, 6, 0.0, context=context)
    out = KSampler().sample(tiny_models.model, 1, 1, 2.5, "euler", "karras", positive, negative, latent,
                            context=context)[0]["samples"]
    assert out.shape == (2, 4, 8, 9)


def test_the_largest_seed_samples_with_euler(run_sampler):
    from vidgraph.nodes.common import SEED_MAX

    assert torch.isfinite(run_sampler.basic(seed=SEED_MAX, sampler="euler")).all()


def test_ksampler_conditions_for_the_unet_s_micro_conditioning_width(run_sampler):
    """A UNet whose y is not SVD's 768 wide samples: SVDNetwork builds y for the UNet's width."""
    from vidgraph.nodes.svd.tiny import TINY_UNET
    from vidgraph.nodes.svd.denoiser import svd_model
    from vidgraph.nodes.svd.unet import UNetConfig, VideoUNet

    torch.manual_seed(0)
    unet = VideoUNet(UNetConfig(**{**TINY_UNET.__dict__, "adm_in_channels": 3 * 32})).eval().requires_grad_(False)
    out = run_sampler.basic(model=svd_model(unet))
    assert out.shape == run_sampler.latent["samples"].shape and torch.isfinite(out).all()


def test_ksampler_reports_a_model_error_as_the_model_s(run_sampler, tiny_models, monkeypatch):
    """A ValueError from inside the UNet is not relabelled as a problem with latent_image."""
    def broken(*args, **kwargs):
        raise ValueError("the UNet's own complaint")

    monkeypatch.setattr(tiny_models.model.network.module, "forward", broken)
    with pytest.raises(ValueError, match="the UNet's own complaint") as caught:
        run_sampler.basic()
    assert "latent_image" not in str(caught.value)
