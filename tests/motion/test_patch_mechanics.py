"""The motion patches' mechanics on plain tensors: which frames and regions they change, attention
capture with frame 1's keys/values, where gradients go, the low-pass fusion, the bidirectional step."""
import types

import pytest
import torch

from vidgraph.nodes.motion import brush, keyframes, layout, masks, sgi2v
from vidgraph.nodes.motion.trajectories import Track


class FakeModel:
    """Just what the post-CFG patches read from args["model"]."""

    def __init__(self, options=None):
        self.transformer_options = dict(options or {})


def post_cfg_args(denoised, model, sigma=1.0):
    return {"denoised": denoised, "model": model, "sigma": torch.tensor([sigma])}


def left_half_mask(size=32):
    mask = torch.zeros(1, size, size)
    mask[:, :, : size // 2] = 1.0
    return mask


def test_brush_pins_frames_after_the_first_outside_the_mask_and_leaves_frame_one_and_the_region():
    x0 = torch.randn(5, 4, 4, 4)
    model = FakeModel({brush.OPTIONS_KEY: (brush.Region(left_half_mask(), 1.0),)})
    out = brush.motion_brush_post_cfg(post_cfg_args(x0, model))
    assert torch.equal(out[0], x0[0])                                # frame 1 untouched
    assert torch.equal(out[:, :, :, :2], x0[:, :, :, :2])            # the region moves freely
    assert torch.equal(out[1:, :, :, 2:], x0[:1, :, :, 2:].expand(4, -1, -1, -1))  # the rest copies frame 1


def test_brush_strength_and_several_regions_combine_by_the_freest():
    x0 = torch.randn(3, 4, 4, 4)
    right = torch.zeros(1, 32, 32)
    right[:, :, 16:] = 1.0
    regions = (brush.Region(left_half_mask(), 1.0), brush.Region(right, 0.25))
    out = brush.motion_brush_post_cfg(post_cfg_args(x0, FakeModel({brush.OPTIONS_KEY: regions})))
    assert torch.equal(out[:, :, :, :2], x0[:, :, :, :2])
    expected = x0[1:, :, :, 2:] * 0.25 + x0[:1, :, :, 2:] * 0.75
    assert torch.allclose(out[1:, :, :, 2:], expected, atol=1e-6)


def test_brush_region_outside_its_sigma_range_does_nothing():
    x0 = torch.randn(3, 4, 4, 4)
    region = brush.Region(left_half_mask(), 1.0, sigma_range=(10.0, 5.0))
    model = FakeModel({brush.OPTIONS_KEY: (region,)})
    assert torch.equal(brush.motion_brush_post_cfg(post_cfg_args(x0, model, sigma=1.0)), x0)
    assert not torch.equal(brush.motion_brush_post_cfg(post_cfg_args(x0, model, sigma=7.0)), x0)


def test_feathered_brush_edges_blend_cells_on_the_edge():
    weight = brush.pin_weight((brush.Region(masks.feather(left_half_mask(), 8), 1.0),), 2, 4, 4, 1.0)
    # cells of 8 px: the edge is at x = 16, feathered over 12..20 -> cells 1 and 2 are partly free
    row = weight[1, 0, 0]
    assert row[0] == 0 and row[3] == 1 and 0 < row[1] < 0.5 < row[2] < 1


def test_layout_guide_pulls_x0_to_the_plan_only_where_valid():
    x0 = torch.randn(3, 4, 4, 4)
    plan = torch.randn(3, 4, 4, 4)
    valid = left_half_mask()
    out = layout.layout_post_cfg(plan, 0.75, valid)({"denoised": x0})
    assert torch.allclose(out[..., :2], x0[..., :2] * 0.25 + plan[..., :2] * 0.75, atol=1e-6)
    assert torch.equal(out[..., 2:], x0[..., 2:])
    one_frame = layout.layout_post_cfg(plan[:1], 1.0)({"denoised": x0})
    assert torch.allclose(one_frame, plan[:1].expand(3, -1, -1, -1))


# ---------------------------------------------------------------- SG-I2V pieces

def attention_info(frames, heads=2):
    from torch.nn.functional import scaled_dot_product_attention

    def attention(q, k, v, n_heads):
        n, lq, inner = q.shape
        d = inner // n_heads
        q, k, v = (t.reshape(n, -1, n_heads, d).transpose(1, 2) for t in (q, k, v))
        return scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, lq, inner)
    return {"num_frames": frames, "n_heads": heads, "attention": attention}


def test_aligned_attention_uses_frame_one_keys_and_values_and_sends_gradients_to_the_queries_only():
    q, k, v = (torch.randn(6, 5, 8, requires_grad=True) for _ in range(3))   # 2 videos x 3 frames
    info = attention_info(3)
    out = sgi2v.aligned_attention(q, k, v, info)
    # frame 1 of each video attends to itself exactly as plain attention does
    plain = info["attention"](q, k, v, 2)
    assert torch.allclose(out[[0, 3]], plain[[0, 3]], atol=1e-6)
    # frame 3 of video 1 equals its queries against frame 1's keys/values
    manual = info["attention"](q[2:3], k[0:1], v[0:1], 2)
    assert torch.allclose(out[2:3], manual, atol=1e-6)
    out[1:3].sum().backward()
    assert q.grad.abs().sum() > 0 and k.grad is None and v.grad is None


def test_trajectory_loss_is_zero_when_the_features_follow_the_box_and_positive_otherwise():
    frames, h, w = 4, 12, 12
    base = torch.randn(1, 3, h, w)
    track = Track((2 / 12, 2 / 12, 5 / 12, 5 / 12), ((3.5 / 12, 3.5 / 12), (6.5 / 12, 6.5 / 12)))
    following = torch.zeros(frames, 3, h, w)
    for k, (y0, x0, y1, x1) in enumerate(sgi2v.cell_boxes(track, frames, h, w)):
        following[k] = torch.randn(3, h, w)
        following[k, :, y0:y1, x0:x1] = base[0, :, 2:5, 2:5]
    assert sgi2v.trajectory_loss(following, [track], 0.4).item() == pytest.approx(0.0, abs=1e-10)
    still = base.expand(frames, -1, -1, -1)
    assert sgi2v.trajectory_loss(still, [track], 0.4).item() > 0.1


def test_trajectory_loss_gradient_reaches_only_the_later_frames_boxes():
    frames, h, w = 3, 10, 10
    features = torch.randn(frames, 2, h, w, requires_grad=True)
    track = Track((0.1, 0.1, 0.3, 0.3), ((0.2, 0.2), (0.6, 0.2)))
    sgi2v.trajectory_loss(features, [track], 0.4).backward()
    grad = features.grad.abs().sum(1)
    assert grad[0].sum() == 0                           # the target is detached
    boxes = sgi2v.cell_boxes(track, frames, h, w)
    for k in (1, 2):
        y0, x0, y1, x1 = boxes[k]
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert grad[k][inside].sum() > 0 and grad[k][~inside].sum() == 0


def test_low_pass_fusion_keeps_low_frequencies_of_one_and_high_of_the_other():
    h, w = 16, 16
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    low = torch.cos(2 * torch.pi * x / w).float()[None, None]           # lowest frequency
    high = torch.cos(torch.pi * (x + y)).float()[None, None]             # highest frequency
    fused = sgi2v.low_pass_fuse(low + 0 * high, high + 0 * low, 0.5)
    # the low wave from "optimised", the high wave from "original", each almost unattenuated
    assert torch.allclose(fused, low * 0.99998 + high * 1.0, atol=2e-3)
    assert torch.equal(sgi2v.low_pass_fuse(low, high, 0.0), low)


def test_default_feature_blocks_match_the_paper_on_svd_and_exist_on_the_tiny_model():
    from vidgraph.nodes.svd.tiny import TINY_UNET
    from vidgraph.nodes.svd.unet import UNetConfig
    assert sgi2v.default_feature_blocks(UNetConfig()) == (("output", 7), ("output", 8))
    assert sgi2v.default_feature_blocks(TINY_UNET) == (("output", 4), ("output", 5))


def test_active_steps_are_the_papers_for_fifty_steps():
    assert list(sgi2v.active_steps(50, 0.1, 0.4)) == list(range(5, 21))
    assert list(sgi2v.active_steps(4, 0.0, 1.0)) == [0, 1, 2, 3]


# ---------------------------------------------------------------- bidirectional step

def test_bidirectional_step_flips_time_for_the_end_pass_and_lands_where_the_paper_says():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3, 3)
    sigmas = torch.tensor([3.0, 1.0, 0.0])
    start_x0 = torch.randn(4, 2, 3, 3)
    seen = {}

    def predict(x_in, sigma):                      # start-conditioned: a fixed clean video
        return start_x0

    class EndGuider:
        def __init__(self, model, positive, negative, cfg, batch_cond_uncond=True):
            seen["conds"] = (positive, negative, cfg, batch_cond_uncond)

        def guided(self, x_in, sigma):
            seen["input"] = x_in
            return x_in.flip(0) * 0 + torch.arange(4.0).reshape(4, 1, 1, 1)   # frame index of the flipped clip

    from vidgraph.nodes.motion.keyframes import bidirectional_wrapper

    def moved(x, z, d, s, s_next):
        return {"z": z, "denoised": d, "s": s, "s_next": s_next}

    wrapper = bidirectional_wrapper("END+", "END-", EndGuider, moved)
    out = wrapper(predict, x, torch.tensor([3.0]), {"model": None, "sample_sigmas": sigmas, "step": 0, "seed": 5,
                                                    "cond_scale": 2.5})
    assert seen["conds"] == ("END+", "END-", 2.5, True)
    z_expected = start_x0 + (x - start_x0) / 3 + keyframes.step_noise(x.shape, 5, 0, "cpu", torch.float32) * (8 ** 0.5)
    assert torch.allclose(out["z"], z_expected, atol=1e-6)
    assert torch.allclose(seen["input"], z_expected.flip(0))
    # the end pass's frame 0 is the clip's last frame: flipped back, the last frame gets index 0
    assert out["denoised"][:, 0, 0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert (out["s"], out["s_next"]) == (3.0, 1.0)


def test_bidirectional_noise_is_the_same_for_a_seed_and_differs_between_steps():
    a = keyframes.step_noise((2, 3), 7, 0, "cpu", torch.float32)
    assert torch.equal(a, keyframes.step_noise((2, 3), 7, 0, "cpu", torch.float32))
    assert not torch.equal(a, keyframes.step_noise((2, 3), 7, 1, "cpu", torch.float32))
    assert not torch.equal(a, keyframes.step_noise((2, 3), 8, 0, "cpu", torch.float32))


def test_brush_following_a_plan_pins_each_frame_to_the_plans_frame():
    x0 = torch.randn(3, 4, 4, 4)
    plan = torch.randn(3, 4, 4, 4)
    model = FakeModel({brush.OPTIONS_KEY: (brush.Region(left_half_mask(), 1.0),), brush.FOLLOW_KEY: plan})
    out = brush.motion_brush_post_cfg(post_cfg_args(x0, model))
    assert torch.equal(out[0], x0[0]) and torch.equal(out[:, :, :, :2], x0[:, :, :, :2])
    assert torch.equal(out[1:, :, :, 2:], plan[1:, :, :, 2:])


def test_a_loop_ties_the_end_frames_and_keyframes_do_not():
    """The end conditioning equal to the start's (a loop): frames 1 and N share their x0 at every step."""
    from vidgraph.nodes.motion.keyframes import bidirectional_wrapper, same_conditioning

    start = [[torch.ones(1, 1, 4), {"concat_latent_image": torch.zeros(1, 2, 3, 3), "fps": 6}]]
    twin = [[torch.ones(1, 1, 4), {"concat_latent_image": torch.zeros(1, 2, 3, 3), "fps": 6}]]
    other = [[torch.ones(1, 1, 4), {"concat_latent_image": torch.ones(1, 2, 3, 3), "fps": 6}]]
    assert same_conditioning(start, twin) and not same_conditioning(start, other)
    assert not same_conditioning(start, [[torch.ones(1, 1, 4), {"concat_latent_image": torch.zeros(1, 2, 3, 3), "fps": 7}]])

    class EndGuider:
        def __init__(self, *args, **kwargs):
            pass

        def guided(self, x_in, sigma):
            return torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 2, 3, 3)

    class StartGuider:
        def __init__(self, positive):
            self.positive = positive

    sigmas = torch.tensor([3.0, 1.0, 0.0])

    def run(end):
        wrapper = bidirectional_wrapper(end, "END-", EndGuider, lambda x, z, d, s, s_next: d)
        return wrapper(lambda x, sigma: torch.zeros_like(x), torch.zeros(4, 2, 3, 3), torch.tensor([3.0]),
                       {"model": None, "sample_sigmas": sigmas, "step": 0, "seed": 1, "guider": StartGuider(start)})

    assert run(twin)[:, 0, 0, 0].tolist() == [1.5, 2.0, 1.0, 1.5]    # flipped: [3, 2, 1, 0], ends tied
    assert run(other)[:, 0, 0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
