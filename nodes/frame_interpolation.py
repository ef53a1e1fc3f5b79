"""FrameInterpolate: in-between frames from optical flow (OpenCV's Farneback), no learned weights.

SVD makes 6-8 frames a second; this turns them into 12-32 without sampling again. For each pair
of neighbouring frames the dense flow is measured both ways, each in-between time t gets the flow
from it back to both frames (the linear-motion approximation of Super SloMo, arXiv 1712.00080),
both frames are warped there and blended by time, trusting each less where its forward and
backward flows disagree (occlusions). A learned interpolator (RIFE, FILM) does better on large
motion; it needs weights, so it is out of scope here.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .common import NodeInputError
from .frames import FrameSink, as_frame_stream, frames_of

FARNEBACK = dict(pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
MULTIPLIERS = (2, 3, 4)


def optical_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow [H,W,2] (x, y) from grey uint8 frame a to b: a(p) ~ b(p + flow(p))."""
    return cv2.calcOpticalFlowFarneback(a, b, None, **FARNEBACK)


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((frame * 255.0).clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def _sample(image: np.ndarray, flow: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """image read at p + flow(p) (bilinear, edges repeated)."""
    where = grid + flow
    return cv2.remap(image, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _consistency(forward: np.ndarray, backward: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """How far from zero forward(p) + backward(p + forward(p)) is: ~0 where p is seen in both frames."""
    round_trip = forward + _sample(backward, forward, grid)
    return np.sqrt((round_trip ** 2).sum(-1))


def in_betweens(a: np.ndarray, b: np.ndarray, times: list[float]) -> list[np.ndarray]:
    """Frames at each time t in (0, 1) between float32 RGB frames a (t=0) and b (t=1)."""
    h, w = a.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    grey_a, grey_b = _grey(a), _grey(b)
    f01, f10 = optical_flow(grey_a, grey_b), optical_flow(grey_b, grey_a)
    if not (np.abs(f01).max() > 1e-3 or np.abs(f10).max() > 1e-3):  # nothing moves: a cross-fade is exact
        return [a * (1 - t) + b * t for t in times]
    # trust in each frame's pixels: low where its flow does not come back to where it started
    scale = 0.5 + 0.01 * np.sqrt((f01 ** 2).sum(-1) + (_sample(f10, f01, grid) ** 2).sum(-1))
    trust_a = np.exp(-_consistency(f01, f10, grid) / scale)
    trust_b = np.exp(-_consistency(f10, f01, grid) / scale)
    out = []
    for t in times:
        to_a = -(1 - t) * t * f01 + t * t * f10          # from time t back to frame a
        to_b = (1 - t) ** 2 * f01 - t * (1 - t) * f10    # from time t on to frame b
        wa = (1 - t) * _sample(trust_a, to_a, grid) + 1e-6
        wb = t * _sample(trust_b, to_b, grid) + 1e-6
        blended = (wa[..., None] * _sample(a, to_a, grid) + wb[..., None] * _sample(b, to_b, grid))
        out.append(blended / (wa + wb)[..., None])
    return out


def interpolate_frames(images, multiplier: int, node: str, settings=None, temp_dir=None):
    """An IMAGE (tensor or stream) with `multiplier - 1` frames put between each pair: (T-1)*m + 1
    frames, the originals kept exactly. A long clip comes out as a frame file (`frames.FrameSink`)."""
    stream = as_frame_stream(images, node)
    frames, height, width, channels = stream.shape
    times = [k / multiplier for k in range(1, multiplier)]
    total = (frames - 1) * multiplier + 1
    with FrameSink(total, (height, width, channels), settings, temp_dir) as sink:
        previous = None
        for frame in frames_of(stream, node):
            current = frame.numpy().astype(np.float32, copy=False)
            if previous is not None:
                rgb = [in_betweens(previous[..., :3], current[..., :3], times)]
                if channels == 4:  # alpha goes along with a plain cross-fade
                    alpha = [previous[..., 3:] * (1 - t) + current[..., 3:] * t for t in times]
                    rgb = [[np.concatenate([c, a], -1) for c, a in zip(rgb[0], alpha)]]
                for made in rgb[0]:
                    sink.append(torch.from_numpy(np.ascontiguousarray(made, dtype=np.float32)).clamp(0, 1)[None])
            sink.append(frame[None])
            previous = current
        return sink.finish()


class FrameInterpolate:
    DESCRIPTION = ("Raise the frame rate 2x, 3x or 4x with frames made from optical flow (OpenCV, no model): "
                   "(frames - 1) x multiplier + 1 frames, the originals unchanged; fps out = fps x multiplier.")
    CATEGORY = "image/video"
    RETURN_TYPES = ("IMAGE", "FLOAT")
    RETURN_NAMES = ("images", "fps")
    FUNCTION = "interpolate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "images": ("IMAGE", {"stream": True}),
                    "multiplier": ("INT", {"default": 2, "min": 2, "max": 4,
                                           "tooltip": "2: 6 fps -> 12; 4: 6 fps -> 24."})},
                "optional": {
                    "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                                      "tooltip": "The input's frame rate; the fps output is this times the multiplier."})},
                "hidden": {"context": "NODE_CONTEXT"}}

    def interpolate(self, images, multiplier, fps=6.0, context=None):
        node = "FrameInterpolate"
        if multiplier not in MULTIPLIERS:
            raise NodeInputError(node, "multiplier", f"must be one of {MULTIPLIERS}, got {multiplier!r}")
        if not (isinstance(fps, (int, float)) and fps > 0):
            raise NodeInputError(node, "fps", f"must be a positive number, got {fps!r}")
        if as_frame_stream(images, node).shape[-1] not in (3, 4):
            raise NodeInputError(node, "images", "needs RGB or RGBA frames")
        settings = context.settings if context is not None else {}
        temp_dir = context.folders.temp_dir if context is not None else None
        return (interpolate_frames(images, multiplier, node, settings, temp_dir), float(fps) * multiplier)


NODE_CLASS_MAPPINGS = {"FrameInterpolate": FrameInterpolate}
NODE_DISPLAY_NAME_MAPPINGS = {"FrameInterpolate": "Frame Interpolate (optical flow)"}
