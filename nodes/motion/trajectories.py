"""Trajectories: boxes on the first frame and where they go, one position per frame.

A `Track` keeps its box and path in normalised image coordinates (0..1 across the width and
height, y downwards), so the same drawing works at any resolution. Inputs accepted:

- the tracks JSON the editor writes: `[{"box": [x0, y0, x1, y1], "path": [[x, y], ...]}, ...]`
  in pixels of an image `width` x `height` (the path gives the box centre per point);
- ComfyUI-KJNodes' SplineEditor `coord_str`: a list of `{"x", "y"}` points, or a list of such lists
  (one per spline), in pixels of its canvas (mask_width x mask_height). It prints Python's repr
  (single quotes), which is read as well.

A path with another number of points than the clip has frames is resampled by point index
(linear interpolation), which keeps the timing the user drew.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Track:
    box: tuple[float, float, float, float]        # x0, y0, x1, y1 on the first frame, normalised
    path: tuple[tuple[float, float], ...]          # box centre per path point, normalised

    def centres(self, frames: int) -> list[tuple[float, float]]:
        """The box centre at each of `frames` frames (the path resampled by point index)."""
        return resample(self.path, frames)

    def boxes(self, frames: int) -> list[tuple[float, float, float, float]]:
        """The box at each frame: the first frame's box moved with the path (size kept)."""
        x0, y0, x1, y1 = self.box
        start = self.path[0]
        return [(x0 + cx - start[0], y0 + cy - start[1], x1 + cx - start[0], y1 + cy - start[1])
                for cx, cy in self.centres(frames)]


def resample(points, frames: int) -> list[tuple[float, float]]:
    """`frames` points linearly interpolated along `points` by index (first and last kept)."""
    points = [tuple(map(float, p)) for p in points]
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if len(points) == 1 or frames == 1:
        return [points[0]] * frames
    out = []
    for i in range(frames):
        t = i * (len(points) - 1) / (frames - 1)
        k = min(int(math.floor(t)), len(points) - 2)
        f = t - k
        (ax, ay), (bx, by) = points[k], points[k + 1]
        out.append((ax + (bx - ax) * f, ay + (by - ay) * f))
    return out


def parse_json_text(text: str, what: str):
    """JSON, or the Python literal ComfyUI-KJNodes prints (single quotes); ValueError naming `what`."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        raise ValueError(f"{what} is neither JSON nor a list literal ({error})") from None


def _point(p, what: str) -> tuple[float, float]:
    if isinstance(p, dict) and "x" in p and "y" in p:
        x, y = p["x"], p["y"]
    elif isinstance(p, (list, tuple)) and len(p) == 2:
        x, y = p
    else:
        raise ValueError(f"{what}: a point must be {{\"x\": .., \"y\": ..}} or [x, y], got {p!r}")
    try:
        x, y = float(x), float(y)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: point coordinates must be numbers, got {p!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"{what}: point coordinates must be finite, got {p!r}")
    return x, y


def spline_paths(coordinates, width: float, height: float) -> list[list[tuple[float, float]]]:
    """KJNodes SplineEditor coordinates (text or parsed) -> normalised paths, one per spline."""
    data = parse_json_text(coordinates, "coordinates") if isinstance(coordinates, str) else coordinates
    if not isinstance(data, list) or not data:
        raise ValueError("coordinates must be a non-empty list of {\"x\", \"y\"} points (or a list of such lists)")
    splines = data if all(isinstance(s, list) and s and not _is_number_pair(s) for s in data) else [data]
    paths = []
    for n, spline in enumerate(splines):
        what = f"coordinates, spline {n}"
        paths.append([(x / width, y / height) for x, y in (_point(p, what) for p in spline)])
    return paths


def _is_number_pair(value) -> bool:
    return len(value) == 2 and all(isinstance(v, (int, float)) for v in value)


def tracks_from_spline(coordinates, canvas_width: int, canvas_height: int,
                       box_width: int, box_height: int) -> list[Track]:
    """One track per spline: a box_width x box_height box (canvas pixels) centred on its first point."""
    if canvas_width <= 0 or canvas_height <= 0:
        raise ValueError("the canvas size must be positive")
    bw, bh = box_width / canvas_width, box_height / canvas_height
    tracks = []
    for path in spline_paths(coordinates, canvas_width, canvas_height):
        cx, cy = path[0]
        tracks.append(Track((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), tuple(path)))
    return tracks


def tracks_from_json(text, width: int, height: int) -> list[Track]:
    """The editor's tracks JSON (pixels of a width x height image) -> tracks."""
    data = parse_json_text(text, "tracks") if isinstance(text, str) else text
    if not isinstance(data, list):
        raise ValueError("tracks must be a list of {\"box\": [x0, y0, x1, y1], \"path\": [[x, y], ...]}")
    tracks = []
    for n, item in enumerate(data):
        what = f"track {n}"
        if not isinstance(item, dict) or "box" not in item:
            raise ValueError(f"{what}: expected {{\"box\": [x0, y0, x1, y1], \"path\": [[x, y], ...]}}")
        box = item["box"]
        if not (isinstance(box, (list, tuple)) and len(box) == 4):
            raise ValueError(f"{what}: box must be [x0, y0, x1, y1]")
        (x0, y0), (x1, y1) = _point(box[:2], what), _point(box[2:], what)
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            raise ValueError(f"{what}: the box has no area")
        path = item.get("path") or [[(x0 + x1) / 2, (y0 + y1) / 2]]
        if not isinstance(path, list):
            raise ValueError(f"{what}: path must be a list of points")
        points = [_point(p, what) for p in path]
        tracks.append(Track((x0 / width, y0 / height, x1 / width, y1 / height),
                            tuple((x / width, y / height) for x, y in points)))
    return tracks


def check_tracks(tracks) -> list[Track]:
    """Tracks whose first box overlaps the image (else SG-I2V has nothing to follow)."""
    if not isinstance(tracks, (list, tuple)) or not all(isinstance(t, Track) for t in tracks):
        raise ValueError("expected TRAJECTORIES (from SplineToTrajectories or TrajectoriesFromJSON)")
    for n, track in enumerate(tracks):
        x0, y0, x1, y1 = track.box
        if x1 <= 0 or y1 <= 0 or x0 >= 1 or y0 >= 1:
            raise ValueError(f"track {n}: its box on the first frame lies outside the image")
    return list(tracks)


def cell_boxes(track: Track, frames: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """The track's box per frame in cells of a height x width grid: (y0, x0, y1, x1), half-open,
    at least one cell, possibly reaching outside the grid (callers clip)."""
    def cell(v, n):  # floor, but a coordinate that is a whole cell up to rounding stays that cell
        return math.floor(v * n + 1e-6)

    out = []
    for x0, y0, x1, y1 in track.boxes(frames):
        cy0, cx0 = cell(y0, height), cell(x0, width)
        out.append((cy0, cx0, max(cy0 + 1, cell(y1, height)), max(cx0 + 1, cell(x1, width))))
    return out


def gaussian_heatmap(height: int, width: int, sigma: float) -> torch.Tensor:
    """A [height, width] Gaussian centred on the box, standard deviation sigma * half the side,
    peak 1 (SG-I2V's per-pixel loss weight)."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5 - height / 2) / max(sigma * height / 2, 1e-6)
    xs = (torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / max(sigma * width / 2, 1e-6)
    heat = torch.exp(-0.5 * (ys[:, None] ** 2 + xs[None, :] ** 2))
    return heat / heat.max()
