"""A starting point for training the tiny SVD's autoencoder: the network begins as a pooled-colour codec.

Trained from random weights on two CPU cores, the SD/SVD autoencoder learns slowly: after 300 steps it
reconstructs held-out frames at 20 dB, while simply averaging 4x4 blocks and scaling back up gives
27-28 dB on the same frames. So the training starts from that codec, built from the architecture's
own layers, and spends its steps on what pooling misses (edges, the fourth latent channel):

- every residual branch starts at zero (each ResnetBlock, temporal block and attention the identity);
- each downsampling conv averages 2x2 blocks, each upsampling conv (after nearest 2x) smooths, and the
  1x1 shortcuts that widen the channels pass the first channels through;
- the GroupNorm before each output conv would normalise every image's colour away (it removes each
  group's mean and scale, image by image). The encoder's groups of four carry (+v, -v, +C, -C): zero
  mean, and a spread that the constant C fixes, so v passes undistorted. The decoder's last stage has
  two channels a group, too few for that: there each colour runs as a (+v, -v) pair scaled down by
  `SMALL`, where the group's variance stays far below the norm's eps and GroupNorm is linear
  (x / sqrt(eps)). The parameters that write into that small stream get a learning rate scaled by
  `SMALL` too (`small_stream_parameters`): Adam moves every weight by about its learning rate, and a
  full-size step would swamp a stream of that scale at once;
- the encoder's output conv reads the three colours into latent channels 0-2 (the fourth starts at
  zero, log-variances at -8); the decoder's output conv reads them back out, and its temporal frame
  mix starts as the identity.

At this start the latent is the 4x4-pooled image (in [-1, 1]) and the decoder returns a smoothed
upscale of it. Everything here is an initialisation: all weights train afterwards.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SMALL = 1e-4           # the decoder's last stage: variance <= 1e-8, far below GroupNorm's eps (1e-6)
REFERENCE = 10.0       # the encoder's constant channels: the group's spread moves < 0.5% with the colours
SILU_OFFSET = 20.0     # bias before the SiLUs on the short path: SiLU(x) == x to 1e-8 there


def zero_residual_branches(vae: nn.Module) -> None:
    for name, module in vae.named_modules():
        if name.endswith(("conv2", "out_layers.3", "attn_1.proj_out")):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)


def _identity_conv(conv: nn.Conv2d, taps: torch.Tensor) -> None:
    """conv maps channel c to channel c with the 2-D kernel `taps` (k x k), nothing across channels."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    n = min(conv.in_channels, conv.out_channels)
    conv.weight[torch.arange(n), torch.arange(n)] = taps


def _pass_through(conv: nn.Conv2d) -> None:
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    n = min(conv.in_channels, conv.out_channels)
    conv.weight[torch.arange(n), torch.arange(n), conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = 1.0


def _read_colours(conv: nn.Conv2d, sources: list[int]) -> None:
    """Output channel k = input channel sources[k] (centre tap), minus the SiLU offset."""
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    centre = conv.kernel_size[0] // 2
    for k, source in enumerate(sources):
        conv.weight[k, source, centre, centre] = 1.0
        conv.bias[k] = -SILU_OFFSET


def _init_encoder(enc: nn.Module, colours: int, z: int) -> None:
    """conv_in writes group k (channels 4k..4k+3) as (+v_k, -v_k, +C, -C); norm_out restores v_k."""
    nn.init.zeros_(enc.conv_in.weight)
    nn.init.zeros_(enc.conv_in.bias)
    for k in range(colours):
        enc.conv_in.weight[4 * k, k, 1, 1] = 1.0
        enc.conv_in.weight[4 * k + 1, k, 1, 1] = -1.0
        enc.conv_in.bias[4 * k + 2] = REFERENCE
        enc.conv_in.bias[4 * k + 3] = -REFERENCE
    norm = enc.norm_out
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    used = torch.arange(4 * colours)
    norm.weight[used] = REFERENCE / math.sqrt(2)      # the group's spread, near enough, is C / sqrt(2)
    norm.bias[used] = SILU_OFFSET
    _read_colours(enc.conv_out, [4 * k for k in range(colours)])
    enc.conv_out.bias[z:] = -8.0        # near-deterministic posterior: unit noise would drown the young latent


def _init_decoder(dec: nn.Module, colours: int, temporal: bool) -> None:
    """conv_in writes colour k to channel k; the last stage's widening shortcut turns it into the small
    pair (2k, 2k+1); norm_out and conv_out read the pairs back."""
    _pass_through(dec.conv_in)
    shortcut = dec.up[0].block[0].nin_shortcut
    nn.init.zeros_(shortcut.weight)
    nn.init.zeros_(shortcut.bias)
    for k in range(colours):
        shortcut.weight[2 * k, k, 0, 0] = SMALL
        shortcut.weight[2 * k + 1, k, 0, 0] = -SMALL
    norm = dec.norm_out
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    used = torch.arange(2 * colours)
    norm.weight[used] = math.sqrt(norm.eps) / SMALL
    norm.bias[used] = SILU_OFFSET
    _read_colours(dec.conv_out, [2 * k for k in range(colours)])
    if temporal:                        # the output's (k,1,1) frame mix: the identity, not a blend of three
        mix = dec.conv_out.time_mix_conv
        nn.init.zeros_(mix.weight)
        nn.init.zeros_(mix.bias)
        mix.weight[:, :, mix.kernel_size[0] // 2, 0, 0] = torch.eye(mix.out_channels)


def small_stream_parameters(vae: nn.Module) -> list[nn.Parameter]:
    """The parameters that write into the decoder's small last-stage stream (train them at lr x SMALL)."""
    stage = vae.decoder.up[0]
    params = list(stage.block[0].nin_shortcut.parameters())
    for name, module in stage.named_modules():
        if name.endswith(("conv2", "out_layers.3")):
            params += list(module.parameters())
    return params


@torch.no_grad()
def init_pooled_colour_codec(vae: nn.Module, colours: int = 3) -> None:
    """Set `vae` (vidgraph's SVD VAE, a config whose widest group holds 4 channels and whose decoder
    widens in its last stage) to the pooled-colour codec described above."""
    zero_residual_branches(vae)
    average = torch.zeros(3, 3)
    average[:2, :2] = 0.25            # Downsample pads right/bottom and strides 2: taps (0..1, 0..1) = 2x2 mean
    smooth = torch.tensor([0.25, 0.5, 0.25])
    smooth = smooth[:, None] * smooth[None, :]
    for name, module in vae.named_modules():
        if name.endswith("downsample.conv"):
            _identity_conv(module, average)
        elif name.endswith("upsample.conv"):
            _identity_conv(module, smooth)
        elif name.endswith("nin_shortcut"):
            _pass_through(module)
    _init_encoder(vae.encoder, colours, vae.config.z_channels)
    _init_decoder(vae.decoder, colours, vae.config.temporal)
