"""The motion nodes on a small random SVD UNet, sampled through the MODEL contract (Guider + euler):
right frames and regions, composition, determinism, nothing when unused, gradients only to the latent."""
import pytest
import torch

from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.guidance import Guider
from vidgraph.nodes.motion import nodes, sgi2v
from vidgraph.nodes.motion.trajectories import tracks_from_json
from vidgraph.nodes.sampling import get_sampler
from vidgraph.nodes.schedules import ksampler_sigmas
from vidgraph.nodes.svd.denoiser import svd_model
from vidgraph.nodes.svd.unet import UNetConfig, VideoUNet

FRAMES, H, W = 4, 8, 8
CONFIG = UNetConfig(model_channels=32, channel_mult=(1, 2), context_dim=16, adm_in_channels=12, num_head_channels=16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return svd_model(VideoUNet(CONFIG).eval())


def conditioning(embedding, concat):
    return [[embedding, {"concat_latent_image": concat, "fps": 6, "motion_bucket_id": 127, "augmentation_level": 0.0}]]


def image_conds(seed):
    g = torch.Generator().manual_seed(seed)
    return (conditioning(torch.randn(1, 1, 16, generator=g), torch.randn(1, 4, H, W, generator=g)),
            conditioning(torch.zeros(1, 1, 16), torch.zeros(1, 4, H, W)))


def run(model, seed=3, steps=4, cfg=2.0, conds=None, sampler="euler"):
    positive, negative = conds or image_conds(1)
    sigmas = ksampler_sigmas("karras", steps, 1.0, sampler, model.sampling.sigma_min, model.sampling.sigma_max)
    noise = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(seed))
    return Guider(model, positive, negative, cfg).sample(get_sampler(sampler), noise, torch.zeros(FRAMES, 4, H, W),
                                                         sigmas, seed=seed)


def left_columns(pixels_wide, size=64):
    mask = torch.zeros(1, size, size)
    mask[:, :, :pixels_wide] = 1.0
    return mask


# ---------------------------------------------------------------- free when unused, deterministic

def test_nodes_that_add_nothing_leave_sampling_bit_identical(model):
    plain = run(model)
    tracks = tracks_from_json('[{"box": [8, 8, 24, 24], "path": [[16, 16], [40, 16]]}]', 64, 64)
    (idle,) = nodes.TrajectoryGuidance().patch(model, tracks, 0, 0.21, 0.1, 0.4, 0.4, 0.5)
    assert torch.equal(run(idle), plain)
    assert not model.patches.post_cfg and not model.patches.denoise_wrappers   # the input MODEL is never patched


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
def test_every_method_is_deterministic_for_a_seed_under_any_sampler(model, sampler):
    (m,) = nodes.MotionBrush().patch(model, left_columns(32), 1.0, 8)
    end_pos, end_neg = image_conds(2)
    (m,) = nodes.KeyframeEnd().patch(m, end_pos, end_neg)
    tracks = tracks_from_json('[{"box": [8, 8, 24, 24], "path": [[16, 16], [40, 16]]}]', 64, 64)
    (m,) = nodes.TrajectoryGuidance().patch(m, tracks, 2, 0.21, 0.0, 0.5, 0.4, 0.5)
    a, b = run(m, sampler=sampler, steps=3), run(m, sampler=sampler, steps=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, run(m, seed=4, sampler=sampler, steps=3))


# ---------------------------------------------------------------- motion brush

def test_motion_brush_keeps_every_frame_equal_to_the_first_outside_the_mask(model):
    (m,) = nodes.MotionBrush().patch(model, left_columns(32), 1.0, 0)
    out = run(m)
    plain = run(model)
    # left half (cells 0..3) may move, right half is frame 1's (the last euler step lands on x0)
    assert torch.allclose(out[1:, :, :, 4:], out[:1, :, :, 4:].expand(FRAMES - 1, -1, -1, -1), atol=1e-5)
    assert (out[1:, :, :, :4] - out[:1, :, :, :4]).abs().mean() > 1e-3
    assert (plain[1:, :, :, 4:] - plain[:1, :, :, 4:]).abs().mean() > 1e-3   # without the brush they move


def test_chained_brushes_add_regions_instead_of_pinning_each_other(model):
    right = torch.zeros(1, 64, 64)
    right[:, :, 48:] = 1.0
    (m,) = nodes.MotionBrush().patch(model, left_columns(16), 1.0, 0)
    (m,) = nodes.MotionBrush().patch(m, right, 1.0, 0)
    assert len(m.patches.post_cfg) == 1
    out = run(m)
    middle = out[:, :, :, 2:6]
    assert torch.allclose(middle[1:], middle[:1].expand(FRAMES - 1, -1, -1, -1), atol=1e-5)
    for cols in (slice(0, 2), slice(6, 8)):
        assert (out[1:, :, :, cols] - out[:1, :, :, cols]).abs().mean() > 1e-3


def test_motion_brush_refuses_a_bad_mask_and_a_model_without_patches(model):
    with pytest.raises(NodeInputError, match="MotionBrush: input 'mask'"):
        nodes.MotionBrush().patch(model, torch.zeros(2, 2, 2, 2), 1.0, 0)
    with pytest.raises(NodeInputError, match="MotionBrush: input 'model'"):
        nodes.MotionBrush().patch(object(), left_columns(8), 1.0, 0)
    with pytest.raises(NodeInputError, match="end_percent"):
        nodes.MotionBrush().patch(model, left_columns(8), 1.0, 0, 0.6, 0.2)


# ---------------------------------------------------------------- layout guide (camera)

def test_layout_guide_over_the_whole_schedule_gives_the_plan_where_it_is_valid(model):
    plan = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(9))
    valid = torch.zeros(1, 64, 64)
    valid[:, :32] = 1.0                                   # top half planned
    (m,) = nodes.LayoutGuide().patch(model, {"samples": plan}, 1.0, 0.0, 1.0, valid)
    out = run(m)
    assert torch.allclose(out[:, :, :4], plan[:, :, :4], atol=1e-5)
    assert not torch.allclose(out[:, :, 4:], plan[:, :, 4:], atol=1e-2)


def test_layout_guide_limited_to_high_noise_only_acts_there(model):
    plan = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(9))
    (early,) = nodes.LayoutGuide().patch(model, {"samples": plan}, 1.0, 0.0, 0.3)
    out, plain = run(early), run(model)
    assert not torch.equal(out, plain)
    assert (out - plan).abs().mean() < (plain - plan).abs().mean()
    assert (out - plan).abs().mean() > 1e-3            # the low-noise steps were the model's own


def test_camera_path_and_warp_nodes_make_a_preview_and_a_valid_mask():
    (path,) = nodes.CameraPath().build(5, "zoom out", 1.0, "linear")
    frames, valid = nodes.CameraWarpImage().warp(torch.rand(1, 32, 48, 3), path)
    assert frames.shape == (5, 32, 48, 3) and valid.shape == (5, 32, 48)
    assert valid[0].min() == 1 and valid[-1].mean() < 0.6
    (custom,) = nodes.CameraPath().build(3, "custom", 1.0, "linear", pan_x=0.5)
    assert custom[-1].pan_x == 0.5
    with pytest.raises(NodeInputError, match="CameraPath: input 'keyframes'"):
        nodes.CameraPath().build(3, "custom", 1.0, "linear", keyframes="[{")
    with pytest.raises(NodeInputError, match="CameraWarpImage: input 'camera_path'"):
        nodes.CameraWarpImage().warp(torch.rand(1, 8, 8, 3), "pan")


# ---------------------------------------------------------------- keyframes

def test_keyframes_run_a_second_guided_pass_per_step_with_the_end_conditioning(model):
    calls = []

    def count(apply, args):
        calls.append(set(args["c"]["concat"][:, 0, 0, 0].tolist()))
        return apply(args["input"], args["timestep"], **args["c"])

    counted = model.clone()
    counted.add_model_wrapper(count)
    end_pos, end_neg = image_conds(2)
    (m,) = nodes.KeyframeEnd().patch(counted, end_pos, end_neg)
    run(counted, steps=3)
    plain_calls = len(calls)
    calls.clear()
    out = run(m, steps=3)
    assert len(calls) == 2 * plain_calls
    end_value = end_pos[0][1]["concat_latent_image"][0, 0, 0, 0].item()
    assert any(end_value in values for values in calls)
    assert not torch.equal(out, run(model, steps=3))


# ---------------------------------------------------------------- trajectories (SG-I2V)

def test_trajectory_optimisation_lowers_the_loss_touches_only_the_latent_and_stops_early(model):
    positive, _ = image_conds(1)
    tracks = tuple(tracks_from_json('[{"box": [0, 0, 32, 32], "path": [[16, 16], [48, 48]]}]', 64, 64))
    blocks = sgi2v.default_feature_blocks(CONFIG)
    settings = sgi2v.TrajectorySettings(tracks, blocks, iterations=5, learning_rate=0.2, fft_cutoff=0.0)
    x = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(5)) * 5
    sigma = torch.full((FRAMES,), 5.0)
    ran = []
    probe = model.clone()
    probe.add_block_patch("output_block", lambda h, skip, info: (ran.append(info["block"]), (h, skip))[1])

    def basic(m, pos):
        return Guider(m, pos, None, 1.0)

    def loss_at(latent):
        store = {}
        try:
            basic(sgi2v.capture_patches(model, blocks, store), positive).guided(latent, sigma)
        except sgi2v._FeaturesCaptured:
            pass
        return sgi2v.trajectory_loss(sgi2v.feature_maps(store, blocks, FRAMES, H, W), tracks, 0.4).item()

    with torch.no_grad():
        z = sgi2v.optimise_latent(probe, positive, x, sigma, settings, basic, blocks)
        assert loss_at(z) < loss_at(x)
    assert not torch.equal(z, x)
    assert all(p.grad is None for p in model.network.module.parameters())
    last = max(b[1] for b in blocks)
    assert ran and max(b[1] for b in ran) <= last          # the blocks after the last captured one never ran


def test_a_learning_rate_per_noise_level_scales_the_first_step_with_sigma(model):
    """AdamW's first step moves each element by about the rate: with lr_per_noise, by the rate times
    sqrt(sigma^2 + 1), so the same relative change at every noise level."""
    positive, _ = image_conds(1)
    tracks = tuple(tracks_from_json('[{"box": [0, 0, 32, 32], "path": [[16, 16], [48, 48]]}]', 64, 64))
    blocks = sgi2v.default_feature_blocks(CONFIG)
    x = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(6)) * 3

    def moved(sigma, per_noise):
        settings = sgi2v.TrajectorySettings(tracks, blocks, iterations=1, learning_rate=0.01, fft_cutoff=0.0,
                                            lr_per_noise=per_noise)
        with torch.no_grad():
            z = sgi2v.optimise_latent(model, positive, x, torch.full((FRAMES,), sigma), settings,
                                      lambda m, pos: Guider(m, pos, None, 1.0), blocks)
        return float((z - x).abs().max())

    constant = moved(3.0, False)
    assert constant == pytest.approx(0.01, rel=0.15)        # (AdamW's weight decay adds a little)
    assert moved(3.0, True) / constant == pytest.approx(10 ** 0.5, rel=0.01)
    assert moved(0.5, True) / constant == pytest.approx(1.25 ** 0.5, rel=0.01)


def test_trajectory_guidance_changes_only_the_chosen_steps(model):
    tracks = tracks_from_json('[{"box": [0, 0, 32, 32], "path": [[16, 16], [48, 48]]}]', 64, 64)
    seen = []
    (m,) = nodes.TrajectoryGuidance().patch(model, tracks, 1, 0.2, 0.5, 0.5, 0.4, 0.5)
    wrapper = m.patches.denoise_wrappers[0].fn

    def spy(predict, x, sigma, args):
        seen.append((args["step"], x.requires_grad))
        return wrapper(predict, x, sigma, args)
    m.patches.denoise_wrappers[0].fn = spy
    out = run(m, steps=4)
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert not torch.equal(out, run(model, steps=4))
    assert list(sgi2v.active_steps(4, 0.5, 0.5)) == [2]


def test_trajectory_nodes_read_kjnodes_splines_and_refuse_bad_settings(model):
    (tracks,) = nodes.SplineToTrajectories().convert("[{'x': 100, 'y': 100}, {'x': 300, 'y': 120}]", 512, 512, 64, 64)
    assert len(tracks) == 1 and tracks[0].path[-1] == (300 / 512, 120 / 512)
    with pytest.raises(NodeInputError, match="SplineToTrajectories: input 'coordinates'"):
        nodes.SplineToTrajectories().convert("[]", 512, 512, 64, 64)
    with pytest.raises(NodeInputError, match="feature_blocks"):
        nodes.TrajectoryGuidance().patch(model, tracks, 5, 0.21, 0.1, 0.4, 0.4, 0.5, "seven")
    with pytest.raises(NodeInputError, match="TrajectoryGuidance: input 'trajectories'"):
        nodes.TrajectoryGuidance().patch(model, "tracks", 5, 0.21, 0.1, 0.4, 0.4, 0.5)
    (m,) = nodes.TrajectoryGuidance().patch(model, tracks, 1, 0.2, 0.0, 1.0, 0.4, 0.5, "99")
    with pytest.raises(ValueError, match="no spatial self-attention"):
        run(m, steps=2)
