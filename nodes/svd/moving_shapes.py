"""Procedural video clips of moving shapes, with their ground truth: the training data of the tiny
trained SVD and the reference the motion bench measures generated clips against.

A clip is a smooth background (a two-colour gradient with a faint low-frequency texture) and 1-3
shapes (disc, square, triangle) of distinct saturated colours, each moving with its own constant
velocity; a fifth of the clips add a camera pan or zoom over the whole frame. Every shape stays
inside the frame and apart from the others for the whole clip (no shape ever touches or hides
another), so "the objects of the first frame are still there, in their colours" is the truth the
model should learn, and a colour always names one object.

SVD's micro-conditioning keeps its meaning:
- `motion_bucket_id` (1..255) is the mean object speed in frame widths per second
  (`speed_for_bucket`, linear, `MAX_SPEED` at 255);
- `fps` is the clip's frame rate: the per-frame displacement is speed / fps, so at a fixed bucket a
  higher fps moves less per frame, as in real footage.
The camera moves at a speed of the same scale, so the bucket measures all the motion in the clip.

Everything is numpy and deterministic per seed (`numpy.random.default_rng(seed)`).
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

MAX_SPEED = 0.4          # frame widths per second at motion_bucket_id 255
MAX_BUCKET = 255
FPS_RANGE = (5, 8)       # frame rates drawn for training clips
SHAPES = ("disc", "square", "triangle")
SHAPE_EXTENT = 1.2     # the farthest point of any shape from its centre, in radii (square corner, triangle tip)
SHAPE_GAP = 4.0        # pixels kept between shapes in every frame: one latent cell of the 4x VAE
# Six hues 60 degrees apart, fully saturated: a tracker tells them apart by hue alone, and the
# backgrounds (saturation <= 0.25) never pass for one.
PALETTE = {name: hue for name, hue in (("red", 0), ("yellow", 60), ("green", 120), ("cyan", 180),
                                        ("blue", 240), ("magenta", 300))}
BACKGROUND_MAX_SATURATION = 0.25


def colour_rgb(name: str) -> tuple[float, float, float]:
    """The palette colour `name` as RGB in 0..1."""
    return colorsys.hsv_to_rgb(PALETTE[name] / 360.0, 0.9, 0.95)


def speed_for_bucket(motion_bucket_id: float) -> float:
    """Mean object speed, in frame widths per second, that `motion_bucket_id` stands for."""
    return MAX_SPEED * float(motion_bucket_id) / MAX_BUCKET


def bucket_for_speed(speed: float) -> int:
    """The motion_bucket_id (1..255) of a mean speed in frame widths per second."""
    return int(min(MAX_BUCKET, max(1, round(speed / MAX_SPEED * MAX_BUCKET))))


@dataclass(frozen=True)
class SceneConfig:
    width: int = 48       # the tiny trained SVD's size
    height: int = 48
    frames: int = 8
    min_objects: int = 1
    max_objects: int = 3
    radius: tuple[float, float] = (0.08, 0.12)   # shape size, in frame widths
    camera_probability: float = 0.2
    texture: float = 0.06                        # amplitude of the background texture (0..1 levels)


@dataclass
class ObjectTrack:
    shape: str
    colour: str                  # a PALETTE name
    radius: float                # pixels, in the first frame (zoom scales it per frame, see `radii`)
    centres: np.ndarray          # [T, 2] screen positions (x, y) in pixels, frame by frame
    radii: np.ndarray            # [T] screen radius in pixels
    velocity: tuple[float, float]  # world velocity, pixels per frame (before the camera)


@dataclass
class CameraMotion:
    pan: np.ndarray = field(default_factory=lambda: np.zeros((1, 2)))   # [T, 2] world offset, pixels
    zoom: np.ndarray = field(default_factory=lambda: np.ones(1))        # [T] magnification about the centre

    @property
    def moves(self) -> bool:
        return bool(np.abs(self.pan).max() > 1e-6 or np.abs(self.zoom - 1).max() > 1e-6)


@dataclass
class Clip:
    frames: np.ndarray           # [T, H, W, 3] uint8
    fps: int
    motion_bucket_id: int
    objects: list[ObjectTrack]
    camera: CameraMotion
    seed: int

    @property
    def first_frame(self) -> np.ndarray:
        return self.frames[0]


# ----------------------------------------------------------------------------- drawing

def _shape_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels) from the shape's edge; negative inside."""
    if shape == "disc":
        return np.hypot(dx, dy) - r
    if shape == "square":
        s = r * 0.85  # same area as the disc, roughly
        qx, qy = np.abs(dx) - s, np.abs(dy) - s
        outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
        return outside + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":  # equilateral, pointing up, circumradius 1.2 r
        k = math.sqrt(3.0)
        s = 1.2 * r * k / 2  # half the side
        px, py = np.abs(dx) - s, -dy + s / k
        flip = px + k * py > 0
        px, py = np.where(flip, (px - k * py) / 2, px), np.where(flip, (-k * px - py) / 2, py)
        px = px - np.clip(px, -2 * s, 0)
        return -np.hypot(px, py) * np.sign(py)
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def _background(rng: np.random.Generator, texture: float):
    """A function (x, y world pixels, size) -> [H, W, 3] in 0..1: gradient + faint sinusoids."""
    hues = rng.uniform(0, 1, 2)
    cols = np.array([colorsys.hsv_to_rgb(h, rng.uniform(0.05, BACKGROUND_MAX_SATURATION), rng.uniform(0.25, 0.75))
                     for h in hues])
    angle = rng.uniform(0, 2 * math.pi)
    waves = [(rng.uniform(0.04, 0.15), rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)) for _ in range(3)]
    strength = texture * rng.uniform(0.3, 1.0)

    def draw(x, y, size):
        t = ((x - size / 2) * math.cos(angle) + (y - size / 2) * math.sin(angle)) / size + 0.5
        t = np.clip(t, 0, 1)[..., None]
        img = cols[0] * (1 - t) + cols[1] * t
        tex = sum(np.sin(f * (x * math.cos(a) + y * math.sin(a)) + p) for f, a, p in waves) / len(waves)
        return np.clip(img + strength * tex[..., None], 0, 1)

    return draw


# ----------------------------------------------------------------------------- sampling

def _camera(rng, cfg: SceneConfig, step: float) -> CameraMotion:
    """step: the clip's per-frame displacement scale in pixels."""
    t = np.arange(cfg.frames, dtype=np.float64)
    if rng.uniform() >= cfg.camera_probability:
        return CameraMotion(np.zeros((cfg.frames, 2)), np.ones(cfg.frames))
    if rng.uniform() < 0.6:  # pan
        angle = rng.uniform(0, 2 * math.pi)
        speed = step * rng.uniform(0.5, 1.0)
        pan = np.stack([t * speed * math.cos(angle), t * speed * math.sin(angle)], axis=1)
        return CameraMotion(pan, np.ones(cfg.frames))
    # zoom: the frame's width changes by about as many pixels per frame as an object moves
    rate = rng.choice([-1.0, 1.0]) * step * rng.uniform(0.5, 1.0) / cfg.width
    return CameraMotion(np.zeros((cfg.frames, 2)), (1.0 + rate) ** t)


def _closest_approach(offset: np.ndarray, relative_velocity: np.ndarray, frames: int) -> float:
    """The least distance between two shapes over frames 0..frames-1, from their start offset and
    relative velocity (world pixels; the camera moves both alike, and zoom only scales the gap)."""
    t = np.arange(frames, dtype=np.float64)[:, None]
    return float(np.hypot(*(offset[None] + relative_velocity[None] * t).T).min())


def _place(rng, cfg, radius, velocity, camera, others) -> np.ndarray | None:
    """A world start position keeping the whole track inside the frame and clear of every other
    shape's track (`others`: (start, radius, velocity) in world pixels) in every frame, or None."""
    t = np.arange(cfg.frames, dtype=np.float64)
    centre = np.array([cfg.width / 2, cfg.height / 2])
    limits = []
    for axis, size in ((0, cfg.width), (1, cfg.height)):
        # screen(t) = c + zoom(t) * (p0 + v t - pan(t) - c) must stay within [r zoom + 1, size - r zoom - 1]
        z = camera.zoom
        margin = radius * z * 1.25 + 1
        lo = (margin - centre[axis]) / z + centre[axis] - velocity[axis] * t + camera.pan[:, axis]
        hi = (size - margin - centre[axis]) / z + centre[axis] - velocity[axis] * t + camera.pan[:, axis]
        limits.append((lo.max(), hi.min()))
    if any(lo > hi for lo, hi in limits):
        return None
    for _ in range(30):
        p0 = np.array([rng.uniform(*limits[0]), rng.uniform(*limits[1])])
        if all(_closest_approach(p0 - q, np.subtract(velocity, w), cfg.frames) > (radius + r) * SHAPE_EXTENT + SHAPE_GAP
               for q, r, w in others):
            return p0
    return None


def make_clip(seed: int, config: SceneConfig = SceneConfig(), motion_bucket_id: int | None = None,
              fps: int | None = None, camera: bool | None = None, objects: int | None = None) -> Clip:
    """One clip and its ground truth. Unset knobs are drawn from the seed: bucket 1..255, fps in
    FPS_RANGE, 1..3 objects, a camera move with `config.camera_probability`."""
    cfg = config
    rng = np.random.default_rng(seed)
    bucket = int(rng.integers(1, MAX_BUCKET + 1)) if motion_bucket_id is None else int(motion_bucket_id)
    frame_rate = int(rng.integers(FPS_RANGE[0], FPS_RANGE[1] + 1)) if fps is None else int(fps)
    count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1)) if objects is None else int(objects)
    step = speed_for_bucket(bucket) / frame_rate * cfg.width   # mean pixels per frame
    cam_rng = np.random.default_rng([seed, 1])
    if camera is None:
        cam = _camera(cam_rng, cfg, step)
    else:
        cam = _camera(cam_rng, SceneConfig(**{**cfg.__dict__, "camera_probability": float(camera)}), step)
    background = _background(rng, cfg.texture)
    colours = rng.permutation(list(PALETTE))[:count]
    placed, tracks = [], []
    for colour in colours:
        for attempt in range(60):
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            radius = rng.uniform(*cfg.radius) * cfg.width
            angle = rng.uniform(0, 2 * math.pi)
            speed = step * rng.uniform(0.8, 1.2) * (0.97 ** attempt)  # shrink only if nothing fits
            velocity = (speed * math.cos(angle), speed * math.sin(angle))
            p0 = _place(rng, cfg, radius, velocity, cam, placed)
            if p0 is not None:
                break
        else:
            continue  # no room for another shape: fewer objects
        placed.append((p0, radius, velocity))
        t = np.arange(cfg.frames, dtype=np.float64)[:, None]
        world = p0[None] + np.array(velocity)[None] * t
        centre = np.array([cfg.width / 2, cfg.height / 2])
        screen = centre + cam.zoom[:, None] * (world - cam.pan - centre)
        tracks.append(ObjectTrack(shape, str(colour), float(radius), screen, radius * cam.zoom, velocity))
    frames = render(cfg, background, tracks, cam)
    return Clip(frames, frame_rate, bucket, tracks, cam, seed)


def render(cfg: SceneConfig, background, tracks: list[ObjectTrack], camera: CameraMotion) -> np.ndarray:
    ys, xs = np.mgrid[0:cfg.height, 0:cfg.width].astype(np.float64) + 0.5
    centre = np.array([cfg.width / 2, cfg.height / 2])
    out = np.empty((cfg.frames, cfg.height, cfg.width, 3), dtype=np.uint8)
    for f in range(cfg.frames):
        z = camera.zoom[f]
        wx = (xs - centre[0]) / z + centre[0] + camera.pan[f, 0]
        wy = (ys - centre[1]) / z + centre[1] + camera.pan[f, 1]
        img = background(wx, wy, cfg.width)
        for track in tracks:
            alpha = _coverage(track, f, xs, ys)[..., None]
            img = img * (1 - alpha) + np.array(colour_rgb(track.colour)) * alpha
        out[f] = np.round(img * 255).astype(np.uint8)
    return out


def _coverage(track: ObjectTrack, f: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    cx, cy = track.centres[f]
    d = _shape_distance(track.shape, xs - cx, ys - cy, track.radii[f])
    return np.clip(0.5 - d, 0, 1)  # one-pixel antialiased edge


def object_coverage(clip: Clip) -> np.ndarray:
    """How much of each pixel the clip's shapes cover, frame by frame: float32 [T, H, W] in 0..1 (the
    alpha they were drawn with)."""
    t, h, w = clip.frames.shape[:3]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    out = np.zeros((t, h, w), np.float32)
    for f in range(t):
        for track in clip.objects:
            np.maximum(out[f], _coverage(track, f, xs, ys), out=out[f])
    return out


def make_batch(seeds, config: SceneConfig = SceneConfig(), **knobs) -> list[Clip]:
    return [make_clip(int(s), config, **knobs) for s in seeds]
