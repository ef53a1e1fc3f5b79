"""A planned video for trajectories: the start image with each box moved along its path.

What CameraWarpImage is to a camera path, this is to boxes and paths: frame t shows the start image
with every track's box content translated to its place at frame t, over a background where the
boxes were first filled in (OpenCV's Telea inpainting). VAE-encoded, it is a layout for LayoutGuide,
with `valid` = where the plan says something (the boxes where they go and where they left), so the
high-noise steps put each object on its path and take it away from where it started, while the rest
of the frame stays the model's. With TrajectoryGuidance (SG-I2V) the two work together: the layout
places the object early, the feature loss keeps it itself along the way.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .trajectories import Track


def box_mask(box: tuple[float, float, float, float], height: int, width: int, feather: int) -> torch.Tensor:
    """[height, width] float mask of a normalised box: 1 on the pixels whose centres it holds, ramped to 0
    over `feather` pixels outside its edge."""
    x0, y0, x1, y1 = box
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5

    def inside(distance):  # distance of a pixel centre inside an edge, in pixels
        return (distance / feather + 1).clamp(0, 1) if feather > 0 else (distance > 0).float()
    inside_y = torch.minimum(inside(ys - y0 * height), inside(y1 * height - ys))
    inside_x = torch.minimum(inside(xs - x0 * width), inside(x1 * width - xs))
    return inside_y[:, None] * inside_x[None, :]


def translate(image: torch.Tensor, dx: float, dy: float, padding: str) -> torch.Tensor:
    """[C, H, W] moved by (dx, dy) pixels (bilinear, so sub-pixel paths move smoothly)."""
    _, h, w = image.shape
    theta = torch.tensor([[1.0, 0.0, -2.0 * dx / w], [0.0, 1.0, -2.0 * dy / h]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
    return F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode=padding, align_corners=False)[0]


def without_boxes(image: np.ndarray, hole: np.ndarray, radius: int = 3) -> np.ndarray:
    """float RGB [H, W, 3] in 0..1 with the `hole` pixels filled from around them (Telea inpainting)."""
    if not hole.any():
        return image
    as_bytes = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    filled = cv2.inpaint(np.ascontiguousarray(as_bytes), hole.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    return np.where(hole[..., None], filled.astype(np.float32) / 255.0, image)


def plan_frames(image: torch.Tensor, tracks: list[Track], frames: int, feather: int = 2
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [1, H, W, C] -> (frames [T, H, W, C], valid MASK [T, H, W]): the boxes moved along their
    paths over the inpainted background; valid = the boxes' places at frame t and where they started."""
    if image.ndim != 4:
        raise ValueError(f"expected an IMAGE [frames, height, width, channels], got {list(image.shape)}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    h, w = image.shape[1:3]
    start = image[0].float()
    if not tracks:
        return start[None].repeat(frames, 1, 1, 1), torch.zeros(frames, h, w)
    origins = [box_mask(t.box, h, w, feather) for t in tracks]
    left = torch.stack(origins).amax(0)
    # Only the pixels the boxes hold are filled in: their feathered rims blend the start image with
    # itself, so a box that stays put gives back the start image.
    hole = (torch.stack([box_mask(t.box, h, w, 0) for t in tracks]).amax(0) > 0).numpy()
    rgb = start[..., :3].numpy()
    background = torch.from_numpy(without_boxes(rgb, hole)).float()
    if start.shape[-1] > 3:
        background = torch.cat([background, start[..., 3:]], -1)
    source = start.permute(2, 0, 1)
    out = background.permute(2, 0, 1)[None].repeat(frames, 1, 1, 1)
    valid = left[None].repeat(frames, 1, 1)
    for track, origin in zip(tracks, origins):
        (sx, sy) = track.path[0]
        for t, (cx, cy) in enumerate(track.centres(frames)):
            dx, dy = (cx - sx) * w, (cy - sy) * h
            moved = translate(source, dx, dy, "border")
            weight = translate(origin[None], dx, dy, "zeros")
            out[t] = out[t] * (1 - weight) + moved * weight
            valid[t] = torch.maximum(valid[t], weight[0])
    return out.permute(0, 2, 3, 1).contiguous(), valid.clamp(0, 1)
