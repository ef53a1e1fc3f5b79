"""SVD's MODEL: EDM v-prediction, micro-conditioning, conditioning per frame and per-frame guidance."""

import pytest
import torch

from vidgraph.nodes.guidance import Guider
from vidgraph.nodes.svd.denoiser import (SVDCondition, cfg_scales, edm_v_scalings, micro_conditioning, svd_model,
                                         video_cfg_function)
from vidgraph.nodes.svd.unet import UNetConfig, VideoUNet, timestep_embedding


class RecordingUNet(torch.nn.Module):
    """Returns a fixed function of its inputs and remembers them."""

    def __init__(self):
        super().__init__()
        self.config = UNetConfig(context_dim=8, adm_in_channels=12)
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.calls = []

    def forward(self, x, timesteps, context, y, num_video_frames, image_only_indicator=None, options=None):
        self.calls.append(dict(x=x, t=timesteps, context=context, y=y, frames=num_video_frames))
        # "v" depends on the noisy latent, the concat channels and the context, per frame
        return x[:, :4] * 2 + x[:, 4:] + context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)


def condition(value, frames=1, size=4):
    """SVD_img2vid_Conditioning's CONDITIONING with every tensor filled with `value`."""
    return [[torch.full((1, 1, 8), float(value)), {"concat_latent_image": torch.full((frames, 4, size, size), float(value)),
                                                   "fps": 6, "motion_bucket_id": 127, "augmentation_level": 0.0}]]


def guider(unet, cfg, ramp="constant", positive=None, negative=None, **options):
    model = svd_model(unet)
    if ramp != "constant":
        model = model.clone()
        model.set_cfg_function(video_cfg_function(ramp, 1.0))
    return Guider(model, positive or condition(1.0), negative or condition(0.0), cfg, **options)


def test_model_applies_the_edm_v_scalings_and_appends_the_concat_latent():
    unet = RecordingUNet()
    model = svd_model(unet)
    x = torch.randn(3, 4, 4, 4)
    sigma = torch.tensor(2.0)
    cross_attn, extra = condition(0.5)[0]
    out = model.apply(x, sigma, model.network.conditioning(cross_attn, extra, x.shape, x.device))
    call = unet.calls[0]
    c_skip, c_out, c_in, c_noise = edm_v_scalings(sigma)
    assert call["x"].shape == (3, 8, 4, 4)
    assert torch.allclose(call["x"][:, :4], x * c_in)
    assert torch.equal(call["x"][:, 4:], torch.full((3, 4, 4, 4), 0.5))
    assert torch.allclose(call["t"], torch.full((3,), float(c_noise)))
    assert torch.equal(call["y"][0], micro_conditioning(6, 127, 0.0, dim=4)[0])
    v = x * c_in * 2 + 0.5 + 0.5
    assert torch.allclose(out, c_skip * x + c_out * v, atol=1e-6)


def test_micro_conditioning_embeds_fps_minus_one_motion_and_augmentation():
    y = micro_conditioning(fps=6, motion_bucket_id=127, augmentation_level=0.02)
    expected = torch.cat([timestep_embedding(torch.tensor([v]), 256) for v in (5.0, 127.0, 0.02)], 1)
    assert y.shape == (1, 768)
    assert torch.equal(y, expected)


def test_cfg_ramps_match_comfyui_nodes():
    assert torch.allclose(cfg_scales("linear", 1.0, 2.5, 3), torch.tensor([1.0, 1.75, 2.5]))
    assert torch.allclose(cfg_scales("triangle", 1.0, 2.5, 3), torch.tensor([1.0, 2.5, 1.0]))
    assert torch.allclose(cfg_scales("triangle", 1.0, 3.0, 5), torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0]))
    assert torch.equal(cfg_scales("constant", 1.0, 7.0, 2), torch.tensor([7.0, 7.0]))
    with pytest.raises(ValueError, match="unknown cfg ramp 'cosine'"):
        cfg_scales("cosine", 1.0, 2.0, 3)


@pytest.mark.parametrize("ramp", ["constant", "linear", "triangle"])
def test_guidance_is_per_frame_and_batched_like_separate_calls(ramp):
    x = torch.randn(3, 4, 4, 4)
    sigma = torch.full((3,), 5.0)
    batched_unet = RecordingUNet()
    out = guider(batched_unet, 2.5, ramp).predict(x, sigma)
    assert len(batched_unet.calls) == 1 and batched_unet.calls[0]["x"].shape[0] == 6
    assert batched_unet.calls[0]["frames"] == 3
    assert torch.equal(batched_unet.calls[0]["context"][:3], torch.zeros(3, 1, 8))  # uncond rows first
    separate = guider(RecordingUNet(), 2.5, ramp, batch_cond_uncond=False)
    assert torch.allclose(out, separate.predict(x, sigma), atol=1e-5)
    model = svd_model(RecordingUNet())
    cond, uncond = (model.apply(x, sigma, model.network.conditioning(*c[0], x.shape, x.device))
                    for c in (condition(1.0), condition(0.0)))
    scale = cfg_scales(ramp, 1.0, 2.5, 3).reshape(3, 1, 1, 1)
    assert torch.allclose(out, uncond + scale * (cond - uncond), atol=1e-4)
    assert not torch.allclose(cond, uncond)


def test_scale_one_everywhere_skips_the_unconditional_branch():
    unet = RecordingUNet()
    x = torch.randn(2, 4, 4, 4)
    out = guider(unet, 1.0, "linear").predict(x, torch.full((2,), 3.0))
    assert len(unet.calls) == 1 and unet.calls[0]["x"].shape[0] == 2
    assert out.shape == x.shape


def test_concat_latent_of_another_size_is_fitted_like_comfyui():
    from vidgraph.nodes.svd.denoiser import resize_centre_crop, to_batch_size
    ramp = torch.arange(8.0).reshape(1, 1, 1, 8).expand(1, 4, 4, 8)   # 4x8 latent, wider than the 4x4 target
    fitted = resize_centre_crop(ramp, 4, 4)
    assert fitted.shape == (1, 4, 4, 4)
    assert torch.equal(fitted[0, 0, 0], torch.tensor([2.0, 3.0, 4.0, 5.0]))  # the centre columns
    frames = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert to_batch_size(frames, 2).flatten().tolist() == [0.0, 3.0]
    assert to_batch_size(frames, 8).flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    unet = RecordingUNet()
    guided = guider(unet, 2.0, positive=condition(1.0, size=8), negative=condition(0.0, size=8))
    assert guided.predict(torch.randn(2, 4, 4, 4), torch.ones(2)).shape == (2, 4, 4, 4)
    assert torch.equal(unet.calls[0]["x"][2:, 4:], torch.ones(2, 4, 4, 4))  # the cond rows


def test_conditioning_from_comfyui_format():
    embedding = torch.randn(1, 1, 32)
    concat = torch.randn(1, 4, 8, 8)
    cond = SVDCondition.from_comfy([[embedding, {"concat_latent_image": concat, "fps": 10,
                                                  "motion_bucket_id": 60, "augmentation_level": 0.05}]], dim=32)
    assert torch.equal(cond.y, micro_conditioning(10, 60, 0.05, dim=32))
    assert cond.context is embedding and cond.concat is concat
    with pytest.raises(ValueError, match="concat_latent_image"):
        SVDCondition.from_comfy([[embedding, {"fps": 6}]])


def test_guided_step_through_a_tiny_unet_is_finite_and_batch_independent():
    torch.manual_seed(0)
    unet = VideoUNet(UNetConfig(model_channels=32, channel_mult=(1,), attention_resolutions=(1,),
                                context_dim=16, adm_in_channels=48)).eval()
    extra = {"concat_latent_image": torch.randn(1, 4, 8, 8), "fps": 6, "motion_bucket_id": 127, "augmentation_level": 0.0}
    pos = [[torch.randn(1, 1, 16), extra]]
    neg = [[torch.zeros(1, 1, 16), dict(extra, concat_latent_image=torch.zeros(1, 4, 8, 8))]]
    x = torch.randn(3, 4, 8, 8) * 10
    sigma = torch.full((3,), 10.0)
    with torch.no_grad():
        a = guider(unet, 2.5, "linear", pos, neg).predict(x, sigma)
        b = guider(unet, 2.5, "linear", pos, neg, batch_cond_uncond=False).predict(x, sigma)
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-4)
