"""The MODEL-with-patches contract on a small random SVD UNet: cloning, CFG hooks, attention and
block patches scoped to sigma ranges, gradients through the model call, inpainting and areas."""
import math

import pytest
import torch

from vidgraph.nodes.guidance import Guider, denoised_for_moved_latent, prepare_mask
from vidgraph.nodes.model import softmax_attention
from vidgraph.nodes.model_sampling import EDMV, EPS, VPrediction, discrete_sigmas
from vidgraph.nodes.sampling import get_sampler
from vidgraph.nodes.svd.denoiser import svd_model, video_cfg_function
from vidgraph.nodes.svd.unet import UNetConfig, VideoUNet

FRAMES = 3


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    cfg = UNetConfig(model_channels=32, channel_mult=(1, 2), context_dim=16, adm_in_channels=12, num_head_channels=16)
    return VideoUNet(cfg).eval()


def conditioning(embedding, concat):
    return [[embedding, {"concat_latent_image": concat, "fps": 6, "motion_bucket_id": 127, "augmentation_level": 0.0}]]


@pytest.fixture(scope="module")
def conds():
    g = torch.Generator().manual_seed(1)
    positive = conditioning(torch.randn(1, 1, 16, generator=g), torch.randn(1, 4, 8, 8, generator=g))
    negative = conditioning(torch.zeros(1, 1, 16), torch.zeros(1, 4, 8, 8))
    return positive, negative


@pytest.fixture
def x():
    return torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 3


def sigma(value):
    return torch.full((FRAMES,), float(value))


def branch(model, cond, x, s):
    c = model.network.conditioning(cond[0][0], cond[0][1], x.shape, x.device)
    return model.apply(x, sigma(s), c)


@torch.no_grad()
def test_guider_is_uncond_plus_scaled_difference_of_the_two_branches(unet, conds, x):
    model = svd_model(unet)
    cond, uncond = branch(model, conds[0], x, 2.0), branch(model, conds[1], x, 2.0)
    guided = Guider(model, *conds, cfg=2.5).predict(x, sigma(2.0))
    assert torch.allclose(guided, uncond + (cond - uncond) * 2.5, atol=1e-5)
    assert not torch.allclose(cond, uncond)


@torch.no_grad()
def test_cfg_1_skips_the_unconditional_branch(unet, conds, x):
    model = svd_model(unet).clone()
    seen = []
    model.add_model_wrapper(lambda apply, args: (seen.append(list(args["cond_or_uncond"])), apply(args["input"], args["timestep"], **args["c"]))[1])
    Guider(model, *conds, cfg=1.0).predict(x, sigma(1.0))
    Guider(model, *conds, cfg=3.0).predict(x, sigma(1.0))
    assert seen == [[0], [1, 0]]  # one batch of both, uncond rows first (ComfyUI's order)


@torch.no_grad()
def test_patching_a_clone_leaves_the_original_unchanged(unet, conds, x):
    model = svd_model(unet)
    before = Guider(model, *conds, cfg=2.0).predict(x, sigma(1.0))
    patched = model.clone()
    patched.add_post_cfg(lambda args: args["denoised"] * 0)
    assert torch.equal(Guider(model, *conds, cfg=2.0).predict(x, sigma(1.0)), before)
    assert torch.count_nonzero(Guider(patched, *conds, cfg=2.0).predict(x, sigma(1.0))) == 0
    assert model.patches.post_cfg == [] and len(patched.patches.post_cfg) == 1


@torch.no_grad()
def test_post_cfg_edits_x0_only_inside_its_sigma_range(unet, conds, x):
    model = svd_model(unet).clone()

    def freeze_to_first_frame(args):  # the motion brush's x0 edit: every frame takes frame 0's x0
        d = args["denoised"]
        return d[:1].expand_as(d)
    model.add_post_cfg(freeze_to_first_frame, sigma_range=(10.0, 1.0))
    inside = Guider(model, *conds, cfg=2.0).predict(x, sigma(5.0))
    outside = Guider(model, *conds, cfg=2.0).predict(x, sigma(0.5))
    assert torch.equal(inside[1], inside[0]) and torch.equal(inside[2], inside[0])
    assert not torch.allclose(outside[1], outside[0])


@torch.no_grad()
def test_percent_range_follows_the_parameterisation(unet):
    model = svd_model(unet)
    high, low = model.percent_range(0.0, 0.5)
    assert high > 1e8 and math.isclose(low, math.sqrt(0.002 * 700.0), rel_tol=1e-3)


@torch.no_grad()
def test_video_cfg_ramp_is_a_cfg_function(unet, conds, x):
    model = svd_model(unet).clone()
    model.set_cfg_function(video_cfg_function("linear", 1.0))
    cond, uncond = branch(model, conds[0], x, 2.0), branch(model, conds[1], x, 2.0)
    guided = Guider(model, *conds, cfg=3.0).predict(x, sigma(2.0))
    scale = torch.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1, 1)
    expected = x - ((x - uncond) + scale * ((x - cond) - (x - uncond)))
    assert torch.allclose(guided, expected, atol=1e-5)


@torch.no_grad()
def test_attention_patches_fire_at_the_chosen_layer_with_its_facts(unet, conds, x):
    model = svd_model(unet).clone()
    calls = []

    def record(stage):
        def patch(*args):
            info = args[-1]
            calls.append((stage, info["site"], info["block"], info["transformer_index"]))
            return args[0] if stage == "output" else args[:-1]
        return patch
    model.add_attention_patch("attn1", "input", record("input"), block=("output", 3))
    model.add_attention_patch("attn1", "output", record("output"), block=("output", 3))
    model.add_attention_patch("temporal_attn2", "output", record("output"), block=("middle", 0))
    plain = Guider(svd_model(unet), *conds, cfg=1.0).predict(x, sigma(1.0))
    patched = Guider(model, *conds, cfg=1.0).predict(x, sigma(1.0))
    assert calls == [("input", "attn1", ("output", 3), 0), ("output", "attn1", ("output", 3), 0),
                     ("output", "temporal_attn2", ("middle", 0), 0)] or sorted(calls) == sorted(
        [("input", "attn1", ("output", 3), 0), ("output", "attn1", ("output", 3), 0),
         ("output", "temporal_attn2", ("middle", 0), 0)])
    # identity patches (and the one-token shortcut skipped at a patched layer) change nothing
    assert torch.allclose(patched, plain, atol=1e-5)


@torch.no_grad()
def test_replace_patch_can_swap_keys_and_values_for_the_first_frames(unet, conds, x):
    """SG-I2V's step 1: every frame's self-attention reads frame 0's keys and values."""
    model = svd_model(unet).clone()
    captured = []

    def first_frame_keys(q, k, v, info):
        frames = info["num_frames"]
        k = k.reshape(-1, frames, *k.shape[1:])[:, :1].expand(-1, frames, -1, -1).reshape(k.shape)
        v = v.reshape(-1, frames, *v.shape[1:])[:, :1].expand(-1, frames, -1, -1).reshape(v.shape)
        return info["attention"](q, k, v, info["n_heads"])

    def capture(out, info):
        captured.append(out.clone())
        return out
    model.add_attention_patch("attn1", "replace", first_frame_keys)
    model.add_attention_patch("attn1", "output", capture, block=("output", 2), transformer_index=0)
    plain = Guider(svd_model(unet), *conds, cfg=1.0).predict(x, sigma(1.0))
    patched = Guider(model, *conds, cfg=1.0).predict(x, sigma(1.0))
    assert not torch.allclose(patched, plain, atol=1e-4)
    assert len(captured) == 1 and captured[0].shape[0] == FRAMES


@torch.no_grad()
def test_default_attention_through_a_replace_patch_is_exact(unet, conds, x):
    model = svd_model(unet).clone()
    model.add_attention_patch("attn1", "replace", lambda q, k, v, info: softmax_attention(q, k, v, info["n_heads"]))
    plain = Guider(svd_model(unet), *conds, cfg=2.0).predict(x, sigma(1.0))
    assert torch.allclose(Guider(model, *conds, cfg=2.0).predict(x, sigma(1.0)), plain, atol=1e-6)


@torch.no_grad()
def test_block_patches_see_every_output_block(unet, conds, x):
    model = svd_model(unet).clone()
    seen = []

    def halve_skip(h, skip, info):
        seen.append(info["block"])
        return h, skip * 0.5
    model.add_block_patch("output_block", halve_skip)
    plain = Guider(svd_model(unet), *conds, cfg=1.0).predict(x, sigma(1.0))
    patched = Guider(model, *conds, cfg=1.0).predict(x, sigma(1.0))
    assert seen == [("output", i) for i in range(len(unet.output_blocks))]
    assert not torch.allclose(patched, plain)


def test_a_denoise_wrapper_can_take_gradient_steps_on_the_latent(unet, conds, x):
    """(c): inside a step, optimise the latent through the model, then continue from it."""
    model = svd_model(unet).clone()
    losses = []

    def optimise(predict, x, sigma, args):
        z = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            for _ in range(2):
                denoised = predict(z, sigma)
                loss = (denoised[1] - denoised[0]).square().mean()  # pull frame 1 towards frame 0
                losses.append(loss.item())
                grad, = torch.autograd.grad(loss, z)
                z = (z - 200.0 * grad).detach().requires_grad_(True)
        i = args["step"]
        sigmas = args["sample_sigmas"]
        return denoised_for_moved_latent(x, z.detach(), predict(z.detach(), sigma), sigma[0], sigmas[i + 1])
    model.add_denoise_wrapper(optimise, sigma_range=(3.0, 1.5))  # the first step only
    guider = Guider(model, *conds, cfg=1.0)
    sigmas = torch.tensor([2.0, 1.0, 0.0])
    out = guider.sample(get_sampler("euler"), torch.randn(FRAMES, 4, 8, 8), torch.zeros(FRAMES, 4, 8, 8), sigmas, seed=0)
    assert out.shape == (FRAMES, 4, 8, 8) and torch.isfinite(out).all()
    assert len(losses) == 2 and losses[1] < losses[0]


def test_moved_latent_correction_is_exact_for_an_euler_step():
    x, z, d = torch.randn(4), torch.randn(4), torch.randn(4)
    reported = denoised_for_moved_latent(x, z, d, 2.0, 0.5)
    step = lambda x, d: x + (x - d) / 2.0 * (0.5 - 2.0)  # noqa: E731
    assert torch.allclose(step(x, reported), step(z, d), atol=1e-6)


@torch.no_grad()
def test_noise_mask_keeps_the_input_latent_outside_the_mask(unet, conds):
    model = svd_model(unet)
    latent = torch.randn(FRAMES, 4, 8, 8)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    out = Guider(model, *conds, cfg=2.0).sample(get_sampler("euler"), torch.randn(FRAMES, 4, 8, 8), latent,
                                                 torch.tensor([5.0, 1.0, 0.0]), denoise_mask=mask, seed=0)
    assert torch.allclose(out[..., :3], latent[..., :3], atol=1e-5)
    assert not torch.allclose(out[..., 5:], latent[..., 5:], atol=1e-2)
    assert prepare_mask(mask, (FRAMES, 4, 8, 8), "cpu").shape == (FRAMES, 4, 8, 8)


@torch.no_grad()
def test_an_area_entry_only_changes_its_area(unet, conds, x):
    model = svd_model(unet)
    positive, negative = conds
    other = [[positive[0][0] * -3, dict(positive[0][1], area=(4, 4, 0, 0), strength=1.0)]]
    plain = Guider(model, positive, negative, cfg=1.0).predict(x, sigma(1.0))
    both = Guider(model, positive + other, negative, cfg=1.0).predict(x, sigma(1.0))
    assert torch.allclose(both[..., 5:, :], plain[..., 5:, :], atol=1e-5)
    assert not torch.allclose(both[..., :3, :3], plain[..., :3, :3], atol=1e-3)


def test_discrete_table_matches_comfyui_sigmas():
    eps = EPS()
    assert len(eps.sigmas) == 1000
    # ComfyUI's euler/normal schedule for SD 1.5 (parity_sd/README.md in the reference material, bench/reference.py)
    got = [float(eps.sigma(t)) for t in torch.linspace(999, 0, 4)]
    assert got == pytest.approx([14.6146402, 2.91830707, 0.932357967, 0.0291671604], rel=1e-7)
    assert float(eps.timestep(torch.tensor([14.6146402]))) == 999.0
    assert float(eps.timestep(torch.tensor([eps.sigma(torch.tensor(500.4))]))) == 500.0
    assert torch.equal(discrete_sigmas(), eps.sigmas)


def test_parameterisations_turn_outputs_into_denoised():
    x, out, s = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2), torch.tensor([2.0, 0.5])
    col = s.reshape(-1, 1, 1, 1)
    assert torch.allclose(EPS().calculate_denoised(s, out, x), x - out * col)
    v = x / (col ** 2 + 1) - out * col / (col ** 2 + 1) ** 0.5
    assert torch.allclose(VPrediction().calculate_denoised(s, out, x), v)
    assert torch.allclose(EDMV().calculate_denoised(s, out, x), v)
    assert torch.allclose(EPS().calculate_input(s, x), x / (col ** 2 + 1) ** 0.5)
    assert torch.allclose(EDMV().timestep(s), s.log() / 4)


def test_gradients_flow_through_a_low_memory_model(unet, conds, x):
    """16-bit weights widened layer by layer (--lowvram) still give the latent its gradient."""
    import copy

    from vidgraph.nodes.svd.casting import cast_on_forward

    low = cast_on_forward(copy.deepcopy(unet).half())
    guider = Guider(svd_model(low, torch.float32), *conds, cfg=2.0)
    z = x.clone().requires_grad_(True)
    with torch.no_grad():
        plain = guider.predict(x, sigma(1.0))
    with torch.enable_grad():
        out = guider.predict(z, sigma(1.0))
        out.square().mean().backward()
    assert torch.allclose(out.detach(), plain, atol=1e-4)
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
