"""The SVD VAE: layout, detection, conversion, and parity with diffusers' AutoencoderKLTemporalDecoder."""
import pytest
import torch

from vidgraph.nodes.svd.vae import (
    CHECKPOINT_PREFIX, VAE, VAEConfig, config_from_state_dict, vae_state_dict_from_any,
)

TINY = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=2, z_channels=4)


def randomize(module, seed=0, scale=0.2):
    """Every parameter random (norms and mix factors included) so a wrong mapping cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (scale if p.ndim > 1 else 0.5))
    return module


def test_full_size_meta_model_has_exactly_the_checkpoint_keys(svd_keys):
    with torch.device("meta"):
        vae = VAE(VAEConfig())
    mine = {k: list(v.shape) for k, v in vae.state_dict().items()}
    ref = svd_keys(CHECKPOINT_PREFIX)
    assert len(ref) == 372
    assert mine == ref


def test_detects_full_size_config_from_meta_checkpoint_keys():
    with torch.device("meta"):
        sd = {CHECKPOINT_PREFIX + k: v for k, v in VAE(VAEConfig()).state_dict().items()}
        sd["model.diffusion_model.out.2.weight"] = torch.empty(4, 320, 3, 3)
    bare = vae_state_dict_from_any(sd)
    assert all(k.startswith(("encoder.", "decoder.")) for k in bare)
    assert config_from_state_dict(bare) == VAEConfig()


def test_detects_tiny_and_plain_2d_configs():
    assert config_from_state_dict(VAE(TINY).state_dict()) == TINY
    plain = VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, temporal=False, quant_conv=True, post_quant_conv=True)
    with torch.device("meta"):
        sd = VAE(plain).state_dict()
    assert not any("time_stack" in k or "mix_factor" in k for k in sd)
    assert config_from_state_dict(sd) == plain


def test_not_a_vae_gives_clear_error():
    with pytest.raises(ValueError, match="not a VAE"):
        vae_state_dict_from_any({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing 'encoder.conv_in.weight'"):
        sd = VAE(TINY).state_dict()
        del sd["encoder.conv_in.weight"]
        config_from_state_dict(sd)


def test_bad_shapes_and_chunks_are_rejected():
    vae = VAE(TINY)
    with pytest.raises(ValueError, match="pixels must be"):
        vae.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="latent must be"):
        vae.decode(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="latent must be"):
        vae.decode(torch.zeros(0, 4, 4, 4))
    with pytest.raises(ValueError, match="whole number"):
        vae.decode(torch.zeros(5, 4, 4, 4), num_frames=2)
    with pytest.raises(ValueError, match="chunk must be"):
        vae.decode(torch.zeros(2, 4, 4, 4), chunk=0)


@pytest.fixture(scope="module")
def diffusers_pair():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 64), down_block_types=["DownEncoderBlock2D"] * 2, layers_per_block=2, latent_channels=4)
    randomize(ref).eval()
    sd = vae_state_dict_from_any(ref.state_dict())
    mine = VAE(config_from_state_dict(sd)).eval()
    mine.load_state_dict(sd, strict=True)
    return ref, mine


def test_encode_matches_diffusers_posterior_mode(diffusers_pair):
    ref, mine = diffusers_pair
    assert mine.config.quant_conv  # diffusers keeps quant_conv; it must be applied, not dropped
    pixels = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(pixels).latent_dist.mode()
    got = mine.encode(pixels)
    assert got.shape == (2, 4, 16, 24)
    assert (got - expected).abs().max() <= 1e-4


def test_decode_matches_diffusers_with_num_frames(diffusers_pair):
    ref, mine = diffusers_pair
    z = torch.randn(2 * 3, 4, 6, 5, generator=torch.Generator().manual_seed(2))  # 2 videos x 3 frames
    with torch.no_grad():
        expected = ref.decode(z, num_frames=3).sample
    got = mine.decode(z, num_frames=3, chunk=3)
    assert got.shape == (6, 3, 12, 10)
    assert (got - expected).abs().max() <= 1e-4
    # per-video chunks: decoding both videos separately gives the same frames
    assert torch.allclose(mine.decode(z[:3], chunk=None), got[:3], atol=1e-5)


def test_chunked_decode_sees_only_its_chunk():
    vae = randomize(VAE(TINY), seed=3).eval()
    z = torch.randn(6, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    whole = vae.decode(z, chunk=None)
    assert torch.equal(vae.decode(z, chunk=6), whole)
    assert torch.equal(vae.decode(z, chunk=None, output_device="cpu"), whole)
    assert torch.allclose(vae.decode(z, chunk=14), whole)  # a chunk larger than the clip covers it all
    split = vae.decode(z, chunk=3)
    # each chunk equals decoding that chunk alone: the temporal convs never look across the border
    assert torch.allclose(split[:3], vae.decode(z[:3], chunk=None), atol=1e-6)
    assert torch.allclose(split[3:], vae.decode(z[3:], chunk=None), atol=1e-6)
    # ...and so differs from the whole-clip decode, most at the frames next to the border
    diff = (split - whole).abs().flatten(1).amax(1)
    assert diff[2] > 1e-3 and diff[3] > 1e-3
    assert diff[2] > diff[0] and diff[3] > diff[5]


def test_decoder_never_runs_more_than_a_chunk_of_frames():
    vae = VAE(TINY).eval()
    seen = []
    vae.decoder.register_forward_hook(lambda module, args, out: seen.append(out.shape[0]))
    vae.decode(torch.zeros(2 * 5, 4, 2, 2), num_frames=5, chunk=2)
    assert seen == [2, 2, 1, 2, 2, 1]  # per video: 2+2+1, never across the video boundary


def test_plain_2d_decoder_chunks_are_independent_frames():
    cfg = VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, temporal=False, post_quant_conv=True)
    vae = randomize(VAE(cfg), seed=5).eval()
    z = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(vae.decode(z, chunk=1), vae.decode(z, chunk=None), atol=1e-5)


def test_prefixed_and_bare_layouts_convert_to_the_same_dict():
    vae = VAE(TINY)
    bare = vae.state_dict()
    for sd in (bare, {CHECKPOINT_PREFIX + k: v for k, v in bare.items()}, {"vae." + k: v for k, v in bare.items()}):
        out = vae_state_dict_from_any(sd)
        assert out.keys() == bare.keys()
        assert all(out[k] is bare[k] for k in bare)


def test_from_state_dict_loads_any_layout_and_lists_bad_keys():
    source = randomize(VAE(TINY), seed=7)
    sd = {CHECKPOINT_PREFIX + k: v.half() for k, v in source.state_dict().items()}
    vae = VAE.from_state_dict(sd, dtype=torch.float32)
    assert vae.config == TINY and vae.dtype == torch.float32
    z = torch.randn(2, 4, 4, 4)
    assert torch.allclose(vae.decode(z), source.float().decode(z), atol=2e-2)
    broken = dict(sd)
    del broken[CHECKPOINT_PREFIX + "decoder.mid.block_1.mix_factor"]
    broken[CHECKPOINT_PREFIX + "decoder.extra.weight"] = torch.zeros(1)
    broken[CHECKPOINT_PREFIX + "decoder.norm_out.bias"] = torch.zeros(7)
    with pytest.raises(ValueError) as err:
        VAE.from_state_dict(broken)
    message = str(err.value)
    assert "missing (1): decoder.mid.block_1.mix_factor" in message
    assert "unexpected (1): decoder.extra.weight" in message
    assert "decoder.norm_out.bias [7] (expected [32])" in message


def test_full_size_diffusers_layout_converts_to_the_checkpoint_keys(svd_keys):
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        ref = diffusers.AutoencoderKLTemporalDecoder(  # the published SVD vae/config.json
            block_out_channels=(128, 256, 512, 512), down_block_types=["DownEncoderBlock2D"] * 4,
            layers_per_block=2, latent_channels=4)
    sd = vae_state_dict_from_any(ref.state_dict())
    expected = svd_keys(CHECKPOINT_PREFIX)
    expected["quant_conv.weight"], expected["quant_conv.bias"] = [8, 8, 1, 1], [8]
    assert {k: list(v.shape) for k, v in sd.items()} == expected
    assert config_from_state_dict(sd) == VAEConfig(quant_conv=True)


def test_plain_decoder_matches_diffusers_autoencoder_kl():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, latent_channels=4)
    randomize(ref, seed=8).eval()
    mine = VAE.from_state_dict(ref.state_dict())
    assert not mine.config.temporal and mine.config.quant_conv and mine.config.post_quant_conv
    g = torch.Generator().manual_seed(9)
    pixels, z = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1, torch.randn(3, 4, 4, 4, generator=g)
    with torch.no_grad():
        expected_mean, expected_pixels = ref.encode(pixels).latent_dist.mode(), ref.decode(z).sample
    assert (mine.encode(pixels) - expected_mean).abs().max() <= 1e-4
    assert (mine.decode(z, chunk=2) - expected_pixels).abs().max() <= 1e-4


def test_runs_in_16_bit_weights_and_takes_fp32_inputs():
    vae = randomize(VAE(TINY), seed=10).eval()
    half = VAE(TINY).eval()
    half.load_state_dict(vae.state_dict())
    half.half()
    z, pixels = torch.randn(3, 4, 4, 4), torch.rand(1, 3, 16, 16) * 2 - 1
    out = half.decode(z)  # fp32 latent in, cast to the weights' dtype inside
    assert out.dtype == torch.float16
    assert (out.float() - vae.decode(z)).abs().max() < 2e-2
    assert (half.encode(pixels).float() - vae.encode(pixels)).abs().max() < 2e-2
