"""The motion yardstick's metrics: what a clip's frames show about motion, measured with OpenCV.

Each function takes uint8 frames [T,H,W,3] (or one frame): object tracks by colour (HSV mask +
connected components), whether an object is still there with its colour and size, centroid
displacement, path and direction, ObjMC against a requested path (mean Euclidean distance per
frame, as SG-I2V / DragAnything report it), mean change inside / outside a mask, Farneback flow
(global direction, magnitude, divergence of an affine fit), warp error, colour drift (CIE76 dE in
Lab), flicker, and the statistics the benches print (Spearman, circular spread, spread).
`bench/motion.py` runs clips and reports them; `motion_control.py` and `long_clip_drift.py` use
them too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from vidgraph.nodes.svd.moving_shapes import PALETTE, Clip

HUE_TOLERANCE = 22.0     # degrees either side of a palette hue (the palette is 60 degrees apart)
MIN_SATURATION = 0.45    # the backgrounds stay at or below 0.25
MIN_VALUE = 0.35


@dataclass
class Track:
    colour: str
    centres: np.ndarray   # [T, 2] (x, y) pixels; NaN where the colour is not found
    areas: np.ndarray     # [T] pixels; 0 where not found

    @property
    def found(self) -> np.ndarray:
        return self.areas > 0


def colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    """uint8 mask of the pixels of palette colour `colour` in an RGB uint8 frame."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV_FULL)  # hue 0..255 over the full circle
    hue = hsv[..., 0].astype(np.float32) * (360.0 / 256.0)
    distance = np.abs((hue - PALETTE[colour] + 180.0) % 360.0 - 180.0)
    ok = (distance <= HUE_TOLERANCE) & (hsv[..., 1] >= MIN_SATURATION * 255) & (hsv[..., 2] >= MIN_VALUE * 255)
    return ok.astype(np.uint8)


def find_object(frame: np.ndarray, colour: str, min_area: int):
    """(centroid (x, y), area) of the largest connected region of `colour`, or None. Coordinates are
    continuous (pixel i spans [i, i+1)), as the generator's tracks are."""
    count, _, stats, centroids = cv2.connectedComponentsWithStats(colour_mask(frame, colour), connectivity=8)
    if count <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = int(stats[best, cv2.CC_STAT_AREA])
    return (centroids[best] + 0.5, area) if area >= min_area else None


def default_min_area(frames: np.ndarray) -> int:
    return max(4, int(frames.shape[1] * frames.shape[2] * 0.002))


def track_objects(frames: np.ndarray, colours=None, min_area: int | None = None) -> dict[str, Track]:
    """A track per palette colour present in the first frame (or per colour in `colours`)."""
    min_area = min_area or default_min_area(frames)
    if colours is None:
        colours = [c for c in PALETTE if find_object(frames[0], c, min_area) is not None]
    tracks = {}
    for colour in colours:
        centres = np.full((len(frames), 2), np.nan)
        areas = np.zeros(len(frames))
        for t, frame in enumerate(frames):
            hit = find_object(frame, colour, min_area)
            if hit is not None:
                centres[t], areas[t] = hit
        tracks[colour] = Track(colour, centres, areas)
    return tracks


def object_kept(track: Track, area_ratio=(0.4, 2.5)) -> bool:
    """Still there in the last frame, in its colour, at a size not far from the first frame's."""
    if not (track.found[0] and track.found[-1]):
        return False
    return area_ratio[0] <= track.areas[-1] / track.areas[0] <= area_ratio[1]


def displacement(track: Track) -> float:
    """Distance (pixels) from the first to the last frame's centroid; NaN if lost at either end."""
    return float(np.hypot(*(track.centres[-1] - track.centres[0])))


def path_length(track: Track) -> float:
    steps = np.hypot(*np.diff(track.centres, axis=0).T)
    return float(np.nansum(steps))


def direction(track: Track) -> float:
    """Direction of the net motion in degrees (0 = right, 90 = down, image coordinates)."""
    dx, dy = track.centres[-1] - track.centres[0]
    return float(math.degrees(math.atan2(dy, dx)))


def objmc(track: Track, requested: np.ndarray) -> float:
    """ObjMC: mean Euclidean distance (pixels) between the tracked and the requested centre per frame
    (frames where the object is lost count at the frame diagonal: losing it is the worst miss)."""
    diagonal = None
    errors = np.hypot(*(track.centres - requested).T)
    if np.isnan(errors).any():
        diagonal = float(np.hypot(*np.nanmax(np.abs(requested), axis=0)) or 1.0)
    return float(np.mean(np.where(np.isnan(errors), diagonal or 0.0, errors)))


def change_inside_outside(frames: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean absolute change from the first frame (0..255 levels) inside and outside `mask` [H,W] bool."""
    diff = np.abs(frames[1:].astype(np.float32) - frames[:1].astype(np.float32)).mean(axis=-1)
    inside = float(diff[:, mask].mean()) if mask.any() else float("nan")
    outside = float(diff[:, ~mask].mean()) if (~mask).any() else float("nan")
    return inside, outside


def object_mask(clip: Clip, grow: float = 1.3) -> np.ndarray:
    """Where the clip's objects may go: discs around their first-frame centres, of `grow` x their
    radius plus the distance they travel in the ground truth (in any direction, since the plain
    model picks its own). Outside it, only the background is expected."""
    ys, xs = np.mgrid[0:clip.frames.shape[1], 0:clip.frames.shape[2]] + 0.5
    mask = np.zeros(clip.frames.shape[1:3], bool)
    for obj in clip.objects:
        x, y = obj.centres[0]
        reach = np.hypot(*(obj.centres[-1] - obj.centres[0]))
        mask |= np.hypot(xs - x, ys - y) <= obj.radii.max() * grow + reach
    return mask


def flows(frames: np.ndarray) -> list[np.ndarray]:
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 5, 7, 1.5, 0) for a, b in zip(grey, grey[1:])]


def affine_divergence(flow: np.ndarray, frame: np.ndarray) -> float:
    """du/dx + dv/dy of the affine flow field fitted to `flow` by least squares, each pixel weighted by
    the image gradient of `frame` (flow is only measured where there is structure: on the smooth
    backgrounds of these scenes a plain mean of the field's derivatives is mostly noise)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    weight = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)).ravel()
    ys, xs = np.mgrid[0:grey.shape[0], 0:grey.shape[1]].astype(np.float64)
    design = np.stack([np.ones(weight.size), xs.ravel() - xs.mean(), ys.ravel() - ys.mean()], axis=1) * weight[:, None]
    du = np.linalg.lstsq(design, flow[..., 0].ravel() * weight, rcond=None)[0]
    dv = np.linalg.lstsq(design, flow[..., 1].ravel() * weight, rcond=None)[0]
    return float(du[1] + dv[2])


def global_flow(frames: np.ndarray) -> dict:
    """Mean Farneback flow over the clip: direction (degrees), magnitude (pixels/frame), and divergence
    (of the affine fit, per frame: > 0 zooming in, < 0 zooming out)."""
    fields = flows(frames)
    mean = np.mean([f.reshape(-1, 2).mean(axis=0) for f in fields], axis=0)
    divergence = np.mean([affine_divergence(f, a) for f, a in zip(fields, frames)])
    magnitude = np.mean([np.hypot(f[..., 0], f[..., 1]).mean() for f in fields])
    return {"direction_deg": float(math.degrees(math.atan2(mean[1], mean[0]))), "mean_vector_px": float(np.hypot(*mean)),
            "magnitude_px": float(magnitude), "divergence": float(divergence)}


def warp_error(frames: np.ndarray) -> float:
    """Mean absolute difference (levels) between each frame and the next warped back onto it by flow."""
    h, w = frames.shape[1:3]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)
    errors = []
    for f, (a, b) in zip(flows(frames), zip(frames, frames[1:])):
        warped = cv2.remap(b, grid + f, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        errors.append(np.abs(warped.astype(np.float32) - a.astype(np.float32)).mean())
    return float(np.mean(errors))


def lab(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(f.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab) for f in frames])


def colour_drift(frames: np.ndarray, segment: int) -> list[float]:
    """dE (CIE76) between the mean Lab colour of the first `segment` frames and of each later segment."""
    means = [lab(frames[i:i + segment]).reshape(-1, 3).mean(axis=0) for i in range(0, len(frames), segment)]
    return [float(np.linalg.norm(m - means[0])) for m in means[1:]]


def flicker(frames: np.ndarray) -> float:
    """Mean |L_t - (L_t-1 + L_t+1) / 2| of the frame-mean Lab lightness: brightness pumping, not motion."""
    lightness = lab(frames)[..., 0].reshape(len(frames), -1).mean(axis=1)
    if len(lightness) < 3:
        return 0.0
    return float(np.abs(lightness[1:-1] - (lightness[:-2] + lightness[2:]) / 2).mean())


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            tie = v == value
            r[tie] = r[tie].mean()
        return r
    if np.isnan(np.asarray(x, float)).any() or np.isnan(np.asarray(y, float)).any():
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")  # no ordering to correlate (e.g. no object tracked at any bucket)
    return float(np.corrcoef(rx, ry)[0, 1])


def circular_spread(degrees) -> dict:
    """Mean resultant length R (1: one direction, 0: all directions equally) and circular std."""
    a = np.radians(np.asarray(degrees, float))
    a = a[~np.isnan(a)]
    if len(a) == 0:
        return {"R": float("nan"), "circular_std_deg": float("nan"), "n": 0}
    r = float(np.hypot(np.cos(a).mean(), np.sin(a).mean()))
    return {"R": r, "circular_std_deg": float(math.degrees(math.sqrt(-2 * math.log(max(r, 1e-12))))), "n": len(a)}


def angle_error(a: float, b: float) -> float:
    return float(abs((a - b + 180.0) % 360.0 - 180.0))


def spread(values) -> dict:
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], float)
    if len(v) == 0:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "p10": float("nan"),
                "p90": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)),
            "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90)), "n": int(len(v))}
