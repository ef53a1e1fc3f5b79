"""Camera paths as 2-D warps of the first frame: pan, tilt, zoom and roll, per frame.

A camera pose is (pan_x, pan_y, zoom, roll): the view window's centre moved by pan_x of the
width and pan_y of the height (+x right, +y down: "pan right" is +pan_x, "tilt up" is -pan_y), the
window shrunk by `zoom` (2 = push in to half the field of view), and rolled by `roll` degrees
clockwise (the content then turns counter-clockwise on screen). Frame t shows the source pixel

    s = c + pan * (W, H) + R(roll) (u - c) / zoom

for each output pixel centre u (c the image centre, R a clockwise rotation in y-down coordinates).
Bilinear sampling reproduces any affine image exactly, and whole-pixel pans move pixels exactly,
which is what the tests check. Pixels whose source lies outside the image get the border colour,
and the returned mask marks them 0 (the layout guide leaves them to the model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .trajectories import parse_json_text

EASINGS = ("linear", "ease_in_out", "ease_in", "ease_out")
POSE_KEYS = ("pan_x", "pan_y", "zoom", "roll")

# Presets: the pose reached on the last frame at intensity 1.
PRESETS = {
    "static": {},
    "pan left": {"pan_x": -0.25}, "pan right": {"pan_x": 0.25},
    "tilt up": {"pan_y": -0.25}, "tilt down": {"pan_y": 0.25},
    "zoom in": {"zoom": 1.5}, "zoom out": {"zoom": 1 / 1.5},
    "roll clockwise": {"roll": 20.0}, "roll counterclockwise": {"roll": -20.0},
    "push in and pan right": {"zoom": 1.3, "pan_x": 0.15},
    "pull out and pan left": {"zoom": 1 / 1.3, "pan_x": -0.15},
    "crane up": {"pan_y": -0.2, "zoom": 1.15},
}
PRESET_NAMES = ("custom",) + tuple(PRESETS)


@dataclass(frozen=True)
class Pose:
    pan_x: float = 0.0
    pan_y: float = 0.0
    zoom: float = 1.0
    roll: float = 0.0


IDENTITY = Pose()


def ease(t: float, easing: str) -> float:
    if easing == "linear":
        return t
    if easing == "ease_in":
        return t * t
    if easing == "ease_out":
        return 1 - (1 - t) * (1 - t)
    if easing == "ease_in_out":
        return t * t * (3 - 2 * t)
    raise ValueError(f"unknown easing {easing!r}; expected one of {', '.join(EASINGS)}")


def interpolate(a: Pose, b: Pose, t: float) -> Pose:
    """Pan and roll linearly, zoom geometrically (a steady push-in looks steady)."""
    return Pose(a.pan_x + (b.pan_x - a.pan_x) * t, a.pan_y + (b.pan_y - a.pan_y) * t,
                math.exp(math.log(a.zoom) + (math.log(b.zoom) - math.log(a.zoom)) * t),
                a.roll + (b.roll - a.roll) * t)


def pose_from(values: dict, base: Pose, what: str) -> Pose:
    fields = {}
    for key in POSE_KEYS:
        value = values.get(key, getattr(base, key))
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{what}: {key} must be finite")
        fields[key] = value
    if fields["zoom"] <= 0:
        raise ValueError(f"{what}: zoom must be positive, got {fields['zoom']}")
    return Pose(**fields)


def path_to(end: Pose, frames: int, easing: str = "linear") -> list[Pose]:
    """From the identity on frame 0 to `end` on the last frame."""
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if frames == 1:
        return [IDENTITY]
    return [interpolate(IDENTITY, end, ease(i / (frames - 1), easing)) for i in range(frames)]


def preset_path(preset: str, intensity: float, frames: int, easing: str = "linear") -> list[Pose]:
    """A preset scaled by intensity (pans and roll times it, zoom to the power of it)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown camera preset {preset!r}; expected one of {', '.join(PRESET_NAMES)}")
    values = PRESETS[preset]
    end = Pose(values.get("pan_x", 0.0) * intensity, values.get("pan_y", 0.0) * intensity,
               values.get("zoom", 1.0) ** intensity, values.get("roll", 0.0) * intensity)
    return path_to(end, frames, easing)


def keyframed_path(keyframes, frames: int, easing: str = "linear") -> list[Pose]:
    """Keyframes JSON `[{"frame": 0, "pan_x": .., "pan_y": .., "zoom": .., "roll": ..}, ...]`: poses
    interpolated between keyframes (with `easing` inside each segment), held before the first and
    after the last. A value a keyframe leaves out carries over from the keyframe before it."""
    data = parse_json_text(keyframes, "keyframes") if isinstance(keyframes, str) else keyframes
    if not isinstance(data, list) or not data:
        raise ValueError("keyframes must be a non-empty list of {\"frame\", \"pan_x\", \"pan_y\", \"zoom\", \"roll\"}")
    keys, pose = [], IDENTITY
    for n, item in enumerate(data):
        what = f"keyframe {n}"
        if not isinstance(item, dict) or "frame" not in item:
            raise ValueError(f"{what}: expected an object with a \"frame\" index")
        unknown = set(item) - {"frame", *POSE_KEYS}
        if unknown:
            raise ValueError(f"{what}: unknown keys {sorted(unknown)}; expected frame, {', '.join(POSE_KEYS)}")
        frame = item["frame"]
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            raise ValueError(f"{what}: frame must be a whole number >= 0, got {frame!r}")
        pose = pose_from(item, pose, what)
        keys.append((frame, pose))
    keys.sort(key=lambda k: k[0])
    if len({f for f, _ in keys}) != len(keys):
        raise ValueError("keyframes: two keyframes on the same frame")
    out = []
    for i in range(frames):
        if i <= keys[0][0]:
            out.append(keys[0][1])
            continue
        if i >= keys[-1][0]:
            out.append(keys[-1][1])
            continue
        for (fa, a), (fb, b) in zip(keys, keys[1:]):
            if fa <= i <= fb:
                out.append(interpolate(a, b, ease((i - fa) / (fb - fa), easing)))
                break
    return out


def source_grid(pose: Pose, height: int, width: int, nearness: torch.Tensor | None = None) -> torch.Tensor:
    """Where each output pixel samples the source: [height, width, 2] pixel coordinates (x, y),
    pixel centres at k + 0.5.

    `nearness` [height, width] (inverse depth, mean 1) gives parallax: a pixel q times nearer than
    average pans q times as far and zooms by zoom ** q (a 2.5-D camera move; q is read at the
    output pixel, which is exact for a flat region and a close approximation at depth edges)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                          torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    cx, cy = width / 2, height / 2
    theta = math.radians(pose.roll)
    cos, sin = math.cos(theta), math.sin(theta)
    q = 1.0 if nearness is None else nearness.to(torch.float64)
    zoom = pose.zoom if nearness is None else torch.exp(math.log(pose.zoom) * q)
    dx, dy = (u - cx) / zoom, (v - cy) / zoom
    # Clockwise by theta on screen (y down) is the usual rotation matrix applied to (x, y).
    sx = cx + pose.pan_x * width * q + cos * dx - sin * dy
    sy = cy + pose.pan_y * height * q + sin * dx + cos * dy
    return torch.stack([sx, sy], dim=-1)


def nearness_from_depth(depth: torch.Tensor, height: int, width: int, parallax: float) -> torch.Tensor:
    """A depth image (IMAGE [1, H, W, C] or MASK [1, H, W], brighter = nearer, as depth estimators
    write it) as nearness [height, width] with mean 1: 1 + parallax * (d - mean d), at least 0.05."""
    d = depth.float()
    if d.ndim == 4:
        d = d[..., :3].mean(-1)
    d = F.interpolate(d[:1, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
    return (1.0 + parallax * (d - d.mean())).clamp(min=0.05)


def warp_image(image: torch.Tensor, poses: list[Pose], nearness: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [1 or T, H, W, C] -> (frames [T, H, W, C], valid MASK [T, H, W]) for T = len(poses):
    frame t is image[0] (or image[t] when a batch of T is given) seen through pose t (with parallax
    when `nearness` [H, W] is given)."""
    if image.ndim != 4:
        raise ValueError(f"expected an IMAGE [frames, height, width, channels], got {list(image.shape)}")
    frames, (h, w) = len(poses), image.shape[1:3]
    grids, valid = [], []
    for pose in poses:
        s = source_grid(pose, h, w, nearness)
        inside = (s[..., 0] >= 0) & (s[..., 0] <= w) & (s[..., 1] >= 0) & (s[..., 1] <= h)
        valid.append(inside)
        grids.append(torch.stack([s[..., 0] / w * 2 - 1, s[..., 1] / h * 2 - 1], dim=-1))
    grid = torch.stack(grids).to(torch.float32)
    source = image.movedim(-1, 1).float()
    if source.shape[0] != frames:
        source = source[:1].expand(frames, -1, -1, -1)
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.movedim(1, -1).contiguous(), torch.stack(valid).to(torch.float32)


def describe(poses: list[Pose]) -> str:
    last = poses[-1]
    return f"{len(poses)} frames, last pose pan ({last.pan_x:+.3f}, {last.pan_y:+.3f}), zoom {last.zoom:.3f}, roll {last.roll:+.1f}"
