"""Trajectories drawn over frames: the planned motion on the start image, or the plan over a result.

Frame k shows each track's path up to frame k and its box at frame k (colours by track), so a
result played with the overlay shows at a glance whether objects kept to their paths.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

COLOURS = ((255, 64, 64), (64, 200, 255), (255, 210, 0), (120, 255, 120), (230, 120, 255), (255, 150, 60))


def draw_tracks(frames: torch.Tensor, tracks, count: int | None = None, line: int = 2) -> torch.Tensor:
    """IMAGE [T or 1, H, W, C] -> IMAGE [N, H, W, 3] with the tracks drawn, N = count or T."""
    n = count or frames.shape[0]
    height, width = frames.shape[1:3]
    out = []
    for k in range(n):
        source = frames[min(k, frames.shape[0] - 1), ..., :3].clamp(0, 1)
        image = Image.fromarray((source * 255).round().to(torch.uint8).numpy())
        draw = ImageDraw.Draw(image)
        for index, track in enumerate(tracks):
            colour = COLOURS[index % len(COLOURS)]
            centres = [(x * width, y * height) for x, y in track.centres(n)]
            if k > 0:
                draw.line(centres[:k + 1], fill=colour, width=line)
            x0, y0, x1, y1 = track.boxes(n)[k]
            draw.rectangle((x0 * width, y0 * height, x1 * width - 1, y1 * height - 1), outline=colour, width=line)
            cx, cy = centres[k]
            draw.ellipse((cx - 2 * line, cy - 2 * line, cx + 2 * line, cy + 2 * line), fill=colour)
        out.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0))
    return torch.stack(out)
