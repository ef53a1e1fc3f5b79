"""tools/tiny_vae_init.py: the tiny SVD's autoencoder starts as a pooled-colour codec built from its own
layers, which a random start on two CPU cores takes far longer than the whole VAE stage to reach."""
import importlib.util
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from vidgraph.nodes.svd.moving_shapes import SceneConfig, make_clip
from vidgraph.nodes.svd.vae import VAE, VAEConfig

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_init():
    spec = importlib.util.spec_from_file_location("tiny_vae_init", TOOLS / "tiny_vae_init.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["tiny_vae_init"] = module
    spec.loader.exec_module(module)
    return module


def frames(seed=3):
    clip = make_clip(seed, SceneConfig())
    return torch.from_numpy(clip.frames).movedim(-1, 1).float() / 127.5 - 1


def psnr(a, b):
    a, b = (((t.clamp(-1, 1) + 1) * 127.5).round() for t in (a, b))
    return 10 * math.log10(255 ** 2 / (a - b).square().mean().item())


def test_the_latent_starts_as_the_4x4_pooled_colours():
    init = load_init()
    vae = VAE(VAEConfig(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1))
    init.init_pooled_colour_codec(vae)
    x = frames()
    z = vae.encode(x)
    assert torch.allclose(z[:, :3], F.avg_pool2d(x, 4), atol=1e-2)
    assert z[:, 3].abs().max() == 0
    # and the decoder gives back a smooth upscale of it: close to the frames, colours in place
    out = vae.decode(z, num_frames=x.shape[0], chunk=None)
    assert psnr(out, x) > 24
    assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), atol=0.02)


def test_a_decoder_with_one_channel_a_group_cannot_start_there():
    """The reason for the tiny SVD's 64-channel width: SD's 32 GroupNorm groups over 32 channels
    normalise each colour channel image by image, and the colours are gone."""
    init = load_init()
    vae = VAE(VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1))
    init.init_pooled_colour_codec(vae)
    x = frames()
    out = vae.decode(vae.encode(x), num_frames=x.shape[0], chunk=None)
    assert psnr(out, x) < 22


def test_the_small_stream_parameters_are_the_decoders_last_stage_writers():
    init = load_init()
    vae = VAE(VAEConfig(ch=64, ch_mult=(1, 2, 2), num_res_blocks=1))
    params = {id(p) for p in init.small_stream_parameters(vae)}
    last_stage = {id(p) for p in vae.decoder.up[0].parameters()}
    assert params and params <= last_stage
    assert id(vae.decoder.up[0].block[0].nin_shortcut.weight) in params
    assert id(vae.decoder.norm_out.weight) not in params
