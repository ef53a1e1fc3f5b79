"""VideoUNet: layout against the real checkpoint, config detection, behaviour, parity with diffusers."""
import pytest
import torch

from vidgraph.nodes.svd.unet import UNetConfig, VideoUNet, config_from_state_dict, timestep_embedding


PREFIX = "model.diffusion_model."
# Two levels, attention at the first only (like SVD's last level), one head per transformer.
TINY_UNET = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(1,),
                       context_dim=32, adm_in_channels=96)


def test_full_size_meta_unet_has_exactly_the_checkpoint_keys_and_shapes(shared_file, layout):
    ref = layout(shared_file("reference/svd_keys.txt"))
    assert len(ref) == 2446
    unet_ref = {k[len(PREFIX):]: v for k, v in ref.items() if k.startswith(PREFIX)}
    assert len(unet_ref) == 1428
    cfg = config_from_state_dict(unet_ref)
    assert cfg == UNetConfig()  # the defaults are SVD / SVD-XT
    with torch.device("meta"):
        unet = VideoUNet(cfg)
    mine = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert mine == unet_ref
    assert sum(p.numel() for p in unet.parameters()) == 1_524_623_082


def test_small_parity_layout_is_detected_as_channel_mult_1111(shared_file, layout):
    layout = layout(shared_file("tools/svd_layout_small.txt"))
    cfg = config_from_state_dict(layout, PREFIX)
    assert cfg.channel_mult == (1, 1, 1, 1)
    assert cfg.attention_resolutions == (1, 2, 4)
    with torch.device("meta"):
        unet = VideoUNet(cfg)
    mine = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert mine == {k[len(PREFIX):]: v for k, v in layout.items() if k.startswith(PREFIX)}


def test_tiny_config_round_trips_through_detection():
    with torch.device("meta"):
        unet = VideoUNet(TINY_UNET)
    assert config_from_state_dict(unet.state_dict()) == TINY_UNET


def test_detection_names_what_is_missing():
    with pytest.raises(ValueError, match="time_embed.0.weight"):
        config_from_state_dict({"input_blocks.0.0.weight": (32, 8, 3, 3)})


def test_timestep_embedding_is_cos_first():
    emb = timestep_embedding(torch.tensor([0.0, 2.0]), 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert emb[1, 0] == pytest.approx(torch.cos(torch.tensor(2.0)).item())
    assert emb[1, 4] == pytest.approx(torch.sin(torch.tensor(2.0)).item())


def tiny_inputs(b=2, t=3, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b * t, 8, size, size, generator=g)
    c_noise = torch.full((b * t,), 0.25 * torch.log(torch.tensor(5.0)).item())
    context = torch.randn(b, 1, 32, generator=g).repeat_interleave(t, 0)
    ids = torch.tensor([[5.0, 127.0, 0.02], [9.0, 60.0, 0.1]])[:b]
    y = torch.cat([timestep_embedding(ids[:, i], 32) for i in range(3)], 1).repeat_interleave(t, 0)
    return x, c_noise, context, y, ids


def test_frames_interact_only_through_temporal_layers(randomized):
    unet = randomized(VideoUNet(TINY_UNET)).eval()
    x, c_noise, context, y, _ = tiny_inputs(b=1, t=3)
    with torch.no_grad():
        out = unet(x, c_noise, context, y, num_video_frames=3)
        x2 = x.clone()
        x2[2] += 1.0  # change the last frame only
        out2 = unet(x2, c_noise, context, y, num_video_frames=3)
        # flagging every frame as a still image turns the temporal paths off
        still = torch.ones(1, 3)
        a = unet(x, c_noise, context, y, 3, image_only_indicator=still)
        b = unet(x2, c_noise, context, y, 3, image_only_indicator=still)
    assert out.shape == (3, 4, 16, 16)
    assert (out2[0] - out[0]).abs().max() > 1e-4       # temporal mixing reaches frame 0
    assert torch.allclose(a[0], b[0], atol=1e-6)        # and only the temporal mixing


def test_batch_must_hold_whole_videos():
    unet = VideoUNet(TINY_UNET)
    x, c_noise, context, y, _ = tiny_inputs(b=1, t=3)
    with pytest.raises(ValueError, match="num_video_frames"):
        unet(x, c_noise, context, y, num_video_frames=2)


def diffusers_twin(unet: VideoUNet, load_into_diffusers_unet):
    """diffusers' UNetSpatioTemporalConditionModel holding the same weights."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        addition_time_embed_dim=32, projection_class_embeddings_input_dim=96,
        cross_attention_dim=32, num_attention_heads=(1, 1), num_frames=3)
    return load_into_diffusers_unet(ref, unet)


@pytest.mark.parametrize("size", [16, 2])  # 2: the deepest level is 1x1 (the centre-tap path)
def test_forward_matches_diffusers_within_1e_4(randomized, size, load_into_diffusers_unet):
    unet = randomized(VideoUNet(TINY_UNET), seed=3).eval()
    ref = diffusers_twin(unet, load_into_diffusers_unet)
    x, c_noise, context, y, ids = tiny_inputs(b=2, t=3, size=size)
    with torch.no_grad():
        out = unet(x, c_noise, context, y, num_video_frames=3, image_only_indicator=torch.zeros(2, 3))
        expected = ref(x.reshape(2, 3, 8, size, size), c_noise[::3], context[::3], ids).sample
    assert out.abs().max() > 0.1
    diff = (out - expected.reshape(6, 4, size, size)).abs().max().item()
    print("max abs diff vs diffusers", diff)
    assert diff <= 1e-4, diff


def test_centre_tap_conv_on_a_1x1_map_equals_the_convolution_and_follows_weight_edits():
    from vidgraph.nodes.svd.unet import Conv2d
    torch.manual_seed(0)
    conv = Conv2d(16, 8, 3, padding=1)
    x = torch.randn(3, 16, 1, 1)
    with torch.no_grad():
        expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1)
        assert torch.allclose(conv(x), expected, atol=1e-6)
        conv.weight.mul_(2.0)  # an in-place edit must not leave a stale cached tap
        assert torch.allclose(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1), atol=1e-6)
        assert "_centre" not in dict(conv.state_dict())
        big = torch.randn(3, 16, 4, 4)
        assert torch.allclose(conv(big), torch.nn.functional.conv2d(big, conv.weight, conv.bias, padding=1), atol=1e-6)


def test_odd_latent_sizes_come_back_at_their_size():
    """Latents not divisible by 2**levels (SVD at 1000x576 is 125x72): upsampling follows the skips."""
    unet = VideoUNet(TINY_UNET).eval()
    x, c_noise, context, y, _ = tiny_inputs(b=1, t=2, size=16)
    x = torch.randn(2, 8, 9, 7)
    with torch.no_grad():
        assert unet(x, c_noise[:2], context[:2], y[:2], num_video_frames=2).shape == (2, 4, 9, 7)
