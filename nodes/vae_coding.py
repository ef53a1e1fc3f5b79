"""Pixels through a VAE and back, for every node that encodes or decodes: as many frames at once as fit in
memory, halved and retried on an out-of-memory error; a long clip's decode streams to a frame file."""
from __future__ import annotations

import torch

from .frames import FrameSink
from .model_management import items_that_fit, resident, with_shrinking_chunks


def encode_pixels(vae, pixels: torch.Tensor, context) -> torch.Tensor:
    """IMAGE [B,H,W,C] in 0..1 → raw latent [B,4,H/8,W/8] on the CPU (callers check both inputs).

    As many images at once as fit in memory (the encoder sees each image alone, so this changes
    no value); an out-of-memory error halves that and retries."""
    with resident(vae, context.settings, context.resources) as device:
        x = pixels[..., :3].movedim(-1, 1) * 2.0 - 1.0
        chunk = frames_that_fit(vae, x.shape[0], x.shape[-2], x.shape[-1], device)
        return with_shrinking_chunks(lambda c: vae.encode(x, chunk=c, callback=context.progress),
                                     chunk).float().cpu()


# Working memory of the temporal decoder per output pixel and frame, per base channel and byte of
# dtype (measured: ~3,400 bytes per pixel in fp32 with 128 base channels; this rounds it up). The
# encoder, with fewer full-resolution blocks and no temporal layers, needs less: the same bound holds.
DECODE_BYTES_PER_PIXEL_CHANNEL_BYTE = 7


def frames_that_fit(vae, frames: int, height: int, width: int, device: torch.device) -> int:
    """How many frames of height x width pixels the VAE can take at once in the free memory."""
    dtype_bytes = torch.empty(0, dtype=getattr(vae, "dtype", torch.float32)).element_size()
    channels = getattr(getattr(vae, "config", None), "ch", 128)  # other VAE classes: assume SD's width
    per_frame = height * width * channels * dtype_bytes * DECODE_BYTES_PER_PIXEL_CHANNEL_BYTE
    return items_that_fit(per_frame, frames, device)


def decode_chunk(vae, samples: torch.Tensor, device: torch.device) -> int:
    """Frames to decode at once: the whole clip when it fits in memory (what ComfyUI does, so the
    temporal layers see every frame and the frames match ComfyUI's), else as many as fit."""
    frames, _, h, w = samples.shape
    scale = getattr(vae, "downscale", 8)
    return frames_that_fit(vae, frames, h * scale, w * scale, device)


def decode_latent(vae, samples: torch.Tensor, context, chunk: int | None = None, stream: bool = True):
    """Raw latent [T,4,h,w] → IMAGE [T,H,W,3] in 0..1 (decode nodes check it first).

    chunk None picks the largest number of frames that fits in memory (ARCHITECTURE.md, "Chunk
    choice"); an out-of-memory error halves it and retries instead of failing the prompt.
    A clip whose frames pass the streaming threshold (`frames.stream_threshold`) is decoded
    STREAM_DECODE_FRAMES at a time (or `chunk`) into a FrameFile, so memory does not grow with
    its length; `stream=False` always returns a tensor."""
    frames, _, h, w = samples.shape
    scale = getattr(vae, "downscale", 8)
    settings = context.settings if stream else {**context.settings, "stream_frames_over_mb": float("inf")}
    with resident(vae, context.settings, context.resources) as device, \
            FrameSink(frames, (h * scale, w * scale, 3), settings, context.folders.temp_dir) as sink:
        if not sink.streaming:
            return _to_image(with_shrinking_chunks(
                lambda c: vae.decode(samples, chunk=c, output_device="cpu", callback=context.progress),
                chunk or decode_chunk(vae, samples, device)))
        chunk = chunk or min(decode_chunk(vae, samples, device), STREAM_DECODE_FRAMES)
        for start in range(0, frames, chunk):
            part = samples[start:start + chunk]
            pixels = with_shrinking_chunks(lambda c: vae.decode(part, chunk=c, output_device="cpu"), chunk)
            sink.append(_to_image(pixels))
            context.progress(start + len(part), frames)
        return sink.finish()


# Frames the temporal decoder sees at once when a clip streams to a file: one SVD-XT segment, so
# its working memory is that of decoding a single generated clip, however long the whole is.
STREAM_DECODE_FRAMES = 25


def _to_image(pixels: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():  # in place: a long clip's frames are the largest tensor of a run
        return pixels.float().add_(1.0).div_(2.0).clamp_(0.0, 1.0).movedim(1, -1)
