"""Long clips by extension: continue a clip from its last frames, with drift correction.

Chaining SVD segments by their last frame (ComfyUI's way) drifts: colours wander segment by
segment, the seam jumps, and the picture loses the original image. `SVDExtendClip` continues a
clip from its last `overlap` frames instead:
- the new segment starts from the first of those frames (SVD's start image) and its first
  `overlap` frames are pinned to the clip's (their predicted clean latent replaced over the
  high-noise part of the schedule, PIN_UNTIL, so the layout and motion carry over the seam; the
  last steps are left to the model, which then joins the pinned frames to its own without the jump
  that pinning to the end leaves), then cross-faded into the clip across the overlap;
- its colours are matched to a reference (the clip's first segment): per-channel mean and spread
  in CIE Lab, one transform for the whole segment, so nothing flickers inside it;
- its start image (the latent SVD concatenates to every frame, and the CLIP embedding) is the
  original image (`condition_on` "anchor image", the default), as context windows condition every
  window on it: the pinned overlap carries the clip's state across the seam, while the picture
  the model reads stays the clean original, so nothing a segment lost or smeared is passed on.
  On the tiny trained SVD, 10 segments: objects kept 0.98 against 0.67 started from the clip's own
  frame, background drift 0.56 dE against 2.49 (bench/long_clip_drift.py). The price: the objects
  move about the image's layout rather than travel away from it. With "clip frame" each segment
  starts from the clip's frame (ComfyUI's chaining) and its CLIP embedding can be pulled back towards
  the original image's (`reanchor`);
- `loop` also pins its last frames to the clip's first ones and drops them: the clip loops seamlessly.
`SVDLongClip` builds the whole chain for "a clip of N seconds": a first segment from the image,
then as many extensions as the length needs. Frames stream (frames.FrameSink), so a long clip's
memory is that of one segment.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from .common import CONTEXT, NodeInputError, SEED_MAX, check_model, require_model
from .frames import FrameSink, as_frame_stream
from .image_conditioning import encode_clip_vision, svd_image_conditioning
from .sampling import SAMPLER_NAMES
from .sampling_run import sample
from .schedules import SCHEDULER_NAMES, ksampler_sigmas
from .svd.vae import SCALE_FACTOR
from .vae_coding import decode_latent, encode_pixels


# The fraction of the schedule over which the overlap frames are pinned. Pinned to the end, the tiny
# trained SVD's seams jumped 2.7x the flow inside segments (8 seeds x 6 segments); released after 40%,
# 1.65x, with the same colour drift (bench/long_clip_drift.py's figures, README).
PIN_UNTIL = 0.4

# What each segment starts from (the image SVD conditions on): the original, or the clip's own frame.
CONDITION_ON = ["anchor image", "clip frame"]


# -- colour ---------------------------------------------------------------------------------------------

def lab(frames: torch.Tensor) -> np.ndarray:
    """RGB frames [T,H,W,3] in 0..1 as CIE Lab (L 0..100), float32."""
    rgb = frames[..., :3].detach().to("cpu", torch.float32).clamp(0, 1).numpy()
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2LAB) for f in rgb])


def colour_stats(frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each Lab channel over every pixel of every frame."""
    values = lab(frames).reshape(-1, 3)
    return values.mean(0), values.std(0)


def match_colours(frames: torch.Tensor, reference: tuple[np.ndarray, np.ndarray], strength: float = 1.0,
                  own: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """Frames whose Lab mean and spread are moved `strength` of the way to `reference`'s (Reinhard's
    colour transfer), by one transform for all of them (`own`: the stats to transform from)."""
    if strength <= 0:
        return frames
    mean, std = own if own is not None else colour_stats(frames)
    ref_mean, ref_std = reference
    gain = np.where(std > 1e-3, ref_std / np.maximum(std, 1e-3), 1.0)
    gain = 1 + strength * (gain - 1)
    target_mean = mean + strength * (ref_mean - mean)
    out = []
    for image in lab(frames):
        moved = ((image - mean) * gain + target_mean).astype(np.float32)
        out.append(cv2.cvtColor(moved, cv2.COLOR_LAB2RGB))
    rgb = torch.from_numpy(np.stack(out)).clamp(0, 1)
    return torch.cat([rgb, frames[..., 3:]], -1) if frames.shape[-1] == 4 else rgb


# -- one segment ----------------------------------------------------------------------------------------

class SegmentSettings:
    """What every segment of a clip shares: how it is sampled, and how it joins the clip."""

    def __init__(self, model, clip_vision, vae, video_frames, motion_bucket_id, fps, augmentation_level,
                 steps, cfg, sampler_name, scheduler, node, color_match=1.0, reanchor=0.5,
                 condition_on=CONDITION_ON[0]):
        self.model, self.clip_vision, self.vae = model, clip_vision, vae
        self.video_frames, self.motion_bucket_id, self.fps = video_frames, motion_bucket_id, fps
        self.augmentation_level, self.steps, self.cfg = augmentation_level, steps, cfg
        self.sampler_name, self.scheduler, self.node = sampler_name, scheduler, node
        self.color_match, self.reanchor, self.condition_on = color_match, reanchor, condition_on

    def check(self):
        node = self.node
        if check_model(node, self.model).network.family != "svd":
            raise NodeInputError(node, "model", f"expected an SVD MODEL, got a {self.model.network.family} one")
        require_model(self.clip_vision, "encode_image", "CLIP_VISION", node, "clip_vision")
        require_model(self.vae, "encode", "VAE", node, "vae")
        if self.sampler_name not in SAMPLER_NAMES:
            raise NodeInputError(node, "sampler_name", f"unknown sampler {self.sampler_name!r}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise NodeInputError(node, "scheduler", f"unknown scheduler {self.scheduler!r}")
        if self.condition_on not in CONDITION_ON:
            raise NodeInputError(node, "condition_on", f"expected one of {CONDITION_ON}, got {self.condition_on!r}")

    def generate(self, start: torch.Tensor, seed: int, context, embedding=None, pins=(), size=None) -> torch.Tensor:
        """One segment [video_frames,H,W,3] from a start frame [1,H,W,3] (resized to `size` (H, W) when
        given), its CLIP embedding replaced by `embedding` when given; `pins` = ((frame indices, raw
        latent rows), ...) held in place."""
        height, width = size or start.shape[1:3]
        micro = {"motion_bucket_id": self.motion_bucket_id, "fps": self.fps, "augmentation_level": self.augmentation_level}
        positive, negative, latent = svd_image_conditioning(self.clip_vision, start, self.vae, width, height,
                                                            self.video_frames, micro, context, self.node)
        if embedding is not None:
            positive = [[embedding, positive[0][1]]]
        sigmas = ksampler_sigmas(self.scheduler, self.steps, 1.0, self.sampler_name, table=self.model.sampling)
        pinned = [(list(index), rows.to(torch.float32) * SCALE_FACTOR) for index, rows in pins]

        def pin(args):  # a post-CFG patch (MODEL contract): x0 of the known frames replaced
            denoised = args["denoised"].clone()
            for index, rows in pinned:
                denoised[index] = rows.to(denoised.device)
            return denoised

        model = self.model
        if pinned:
            model = model.clone()
            model.add_post_cfg(pin, sigma_range=model.percent_range(0.0, PIN_UNTIL))
        out = sample(context, model, seed, self.cfg, self.sampler_name, sigmas, positive, negative, latent,
                     node=self.node)
        return decode_latent(self.vae, out["samples"], context, stream=False)


def _tail(stream, count: int) -> torch.Tensor:
    """The last `count` frames of a tensor or FrameStream, reading the stream once."""
    kept = []
    for chunk in stream.chunks():
        kept.append(chunk)
        while sum(len(c) for c in kept) - len(kept[0]) >= count:
            kept.pop(0)
    return torch.cat(kept)[-count:]


def _head(stream, count: int) -> torch.Tensor:
    got = []
    for chunk in stream.chunks():
        got.append(chunk)
        if sum(len(c) for c in got) >= count:
            break
    return torch.cat(got)[:count]


def next_segment(settings: SegmentSettings, tail: torch.Tensor, head: torch.Tensor, context, seed: int,
                 loop: bool, anchor: torch.Tensor, reference):
    """What follows a clip ending in `tail` (its last `overlap` frames; `head`: its first frames):
    (the cross-faded seam that replaces the tail, the new frames after it). The segment starts from
    `anchor`, or from the tail's first frame with its embedding pulled `reanchor` of the way back to
    the anchor's (settings.condition_on)."""
    overlap = len(tail)
    embedding = None
    color_match, reanchor = settings.color_match, settings.reanchor
    on_anchor = settings.condition_on == "anchor image"
    start = anchor[:1, ..., :3] if on_anchor else tail[:1, ..., :3]
    if reanchor > 0 and not on_anchor:
        own = encode_clip_vision(settings.clip_vision, tail[:1, ..., :3], context).image_embeds.unsqueeze(0)
        original = encode_clip_vision(settings.clip_vision, anchor[:1, ..., :3], context).image_embeds.unsqueeze(0)
        embedding = own + reanchor * (original - own)
    pins = [(range(overlap), encode_pixels(settings.vae, tail[..., :3], context))]
    if loop:
        n = settings.video_frames
        pins.append((range(n - overlap, n), encode_pixels(settings.vae, head[:overlap, ..., :3], context)))
    new = settings.generate(start, seed, context, embedding, pins, size=tuple(tail.shape[1:3]))
    if color_match > 0:
        new = match_colours(new, reference, color_match, colour_stats(new[overlap:]))
    if tail.shape[-1] == 4:
        new = torch.cat([new, torch.ones_like(new[..., :1])], -1)
    weights = torch.arange(1, overlap + 1, dtype=torch.float32).reshape(-1, 1, 1, 1) / (overlap + 1)
    seam = tail * (1 - weights) + new[:overlap] * weights
    return seam, (new[overlap:len(new) - overlap] if loop else new[overlap:])


def _check_size(node: str, input_name: str, height: int, width: int):
    if height % 8 or width % 8:
        raise NodeInputError(node, input_name, f"width and height must be multiples of 8 (crop or scale "
                                               f"it first), got {width}x{height}")


def _check_overlap(node: str, overlap: int, video_frames: int, frames: int):
    if overlap >= video_frames:
        raise NodeInputError(node, "overlap_frames", f"must be smaller than video_frames ({video_frames}), got {overlap}")
    if overlap > frames:
        raise NodeInputError(node, "overlap_frames", f"the clip has only {frames} frames, asked for {overlap}")


def extend_clip(settings: SegmentSettings, clip, context, seed: int, overlap: int, loop: bool,
                anchor: torch.Tensor | None = None):
    """The clip with one more segment (see the module docstring). Returns an IMAGE (tensor or frame file)."""
    stream = as_frame_stream(clip, settings.node, "images")
    total, height, width, channels = stream.shape
    _check_size(settings.node, "images", height, width)
    _check_overlap(settings.node, overlap, settings.video_frames, total)
    tail = _tail(stream, overlap)
    head = _head(stream, max(overlap, settings.video_frames))
    seam, rest = next_segment(settings, tail, head, context, seed, loop, anchor if anchor is not None else head,
                              colour_stats(head[:settings.video_frames]))
    with FrameSink(total + len(rest), (height, width, channels), context.settings, context.folders.temp_dir) as sink:
        written = 0
        for chunk in stream.chunks():
            keep = chunk[:max(0, total - overlap - written)]
            if len(keep):
                sink.append(keep)
            written += len(chunk)
        sink.append(seam)
        sink.append(rest)
        return sink.finish()


def segments_for(frames: int, video_frames: int, overlap: int) -> int:
    """How many segments make at least `frames` frames: the first gives video_frames, each next
    video_frames - overlap more."""
    if frames <= video_frames:
        return 1
    return 1 + math.ceil((frames - video_frames) / (video_frames - overlap))


# -- nodes ----------------------------------------------------------------------------------------------

SEGMENT_INPUTS = {
    "model": ("MODEL",), "clip_vision": ("CLIP_VISION",), "vae": ("VAE",),
    "video_frames": ("INT", {"default": 14, "min": 2, "max": 4096, "tooltip": "Frames per segment."}),
    "overlap_frames": ("INT", {"default": 4, "min": 1, "max": 64,
                               "tooltip": "Frames of the clip the next segment continues from (pinned, then cross-faded)."}),
    "motion_bucket_id": ("INT", {"default": 127, "min": 1, "max": 1023}),
    "fps": ("INT", {"default": 6, "min": 1, "max": 1024}),
    "augmentation_level": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01}),
    "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX}),
    "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
    "cfg": ("FLOAT", {"default": 2.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
    "sampler_name": (SAMPLER_NAMES,),
    "scheduler": (SCHEDULER_NAMES, {"default": "karras"}),
    "color_match": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                              "tooltip": "How far each segment's colours move to the first segment's (Lab mean and spread)."}),
    "reanchor": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                           "tooltip": "With condition_on 'clip frame': 0, the clip frame's CLIP embedding; "
                                      "1, the original image's."}),
    "loop": ("BOOLEAN", {"default": False, "tooltip": "End on the clip's first frames, so it loops seamlessly."}),
    "condition_on": (CONDITION_ON, {"default": CONDITION_ON[0], "tooltip": (
        "The start image of every segment: the original image (its objects and colours are not lost "
        "segment by segment; they stay about its layout), or the clip's frame (ComfyUI's chaining; "
        "motion can travel on, errors carry over).")}),
}


def _segment_settings(node, kwargs) -> SegmentSettings:
    settings = SegmentSettings(kwargs["model"], kwargs["clip_vision"], kwargs["vae"], kwargs["video_frames"],
                               kwargs["motion_bucket_id"], kwargs["fps"], kwargs["augmentation_level"],
                               kwargs["steps"], kwargs["cfg"], kwargs["sampler_name"], kwargs["scheduler"], node,
                               kwargs["color_match"], kwargs["reanchor"], kwargs["condition_on"])
    settings.check()
    return settings


class SVDExtendClip:
    DESCRIPTION = ("Continue a clip with one more SVD segment from its last frames: overlap pinned and cross-faded, "
                   "colours matched to the first segment, conditioned on the original image (or the clip's frame).")
    CATEGORY = "video_models/long"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "extend"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {"stream": True}), **SEGMENT_INPUTS},
                "optional": {"anchor_image": ("IMAGE", {"tooltip": "The original image (default: the clip's first frame)."})},
                "hidden": CONTEXT}

    def extend(self, images, context, anchor_image=None, **kwargs):
        settings = _segment_settings("SVDExtendClip", kwargs)
        return (extend_clip(settings, images, context, kwargs["seed"], kwargs["overlap_frames"], kwargs["loop"],
                            anchor_image),)


class SVDLongClip:
    DESCRIPTION = ("A clip of any length from one image: a first SVD segment, then as many extensions "
                   "(SVDExtendClip) as `seconds` x `fps` frames need.")
    CATEGORY = "video_models/long"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"init_image": ("IMAGE",),
                             "seconds": ("FLOAT", {"default": 10.0, "min": 0.1, "max": 3600.0, "step": 0.1}),
                             **SEGMENT_INPUTS},
                "hidden": CONTEXT}

    def generate(self, init_image, seconds, context, **kwargs):
        node = "SVDLongClip"
        settings = _segment_settings(node, kwargs)
        overlap, seed, loop = kwargs["overlap_frames"], kwargs["seed"], kwargs["loop"]
        if not (isinstance(init_image, torch.Tensor) and init_image.ndim == 4 and init_image.shape[0] >= 1):
            raise NodeInputError(node, "init_image", "expected an IMAGE [1, H, W, 3]")
        _check_overlap(node, overlap, settings.video_frames, settings.video_frames)
        image = init_image[:1, ..., :3]
        _check_size(node, "init_image", image.shape[1], image.shape[2])
        frames = max(1, round(seconds * kwargs["fps"]))
        count = max(segments_for(frames, settings.video_frames, overlap), 2 if loop else 1)  # a loop closes on a segment
        made = settings.video_frames + (count - 1) * (settings.video_frames - overlap) - (overlap if loop else 0)
        keep = made if loop else min(frames, made)  # a loop keeps its every frame: its end joins its start
        first = settings.generate(image, seed, context)
        reference = colour_stats(first)
        # One sink for the whole clip; only the latest segment is held, so memory is one segment's.
        with FrameSink(keep, tuple(first.shape[1:]), context.settings, context.folders.temp_dir) as sink:
            written, pending = 0, first
            for number in range(1, count):
                context.check_interrupt()
                seam, rest = next_segment(settings, pending[-overlap:], first, context, seed + number,
                                          loop and number == count - 1, image, reference)
                written += _append_upto(sink, pending[:-overlap], keep - written)
                pending = torch.cat([seam, rest])
            _append_upto(sink, pending, keep - written)
            return (sink.finish(), float(kwargs["fps"]))


def _append_upto(sink: FrameSink, frames: torch.Tensor, room: int) -> int:
    part = frames[:max(0, room)]
    if len(part):
        sink.append(part)
    return len(part)


NODE_CLASS_MAPPINGS = {"SVDExtendClip": SVDExtendClip, "SVDLongClip": SVDLongClip}
NODE_DISPLAY_NAME_MAPPINGS = {"SVDExtendClip": "SVD Extend Clip", "SVDLongClip": "SVD Long Clip (N seconds)"}
