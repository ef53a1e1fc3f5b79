"""Region masks for motion control: feathered edges, and the latent-resolution weight maps the
motion brush pins frames with.

A MASK is ComfyUI's [B, H, W] (or [H, W]) float in 0..1 at image resolution. Feathering is a box
filter applied once along each axis: a straight edge becomes an exact linear ramp `feather` pixels
wide, centred on the edge (0.5 on the edge itself). Going down to the latent's resolution averages
each 8x8 cell (area resampling), so a cell half inside the region gets 0.5.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def as_mask_batch(mask) -> torch.Tensor:
    """A MASK as float32 [B, H, W]."""
    mask = torch.as_tensor(mask, dtype=torch.float32)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[-1] < 1 or mask.shape[-2] < 1:
        raise ValueError(f"expected a MASK [frames, height, width], got shape {list(mask.shape)}")
    return mask


def feather(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """The mask [B, H, W] with its edges ramped linearly over `pixels` pixels (0 = unchanged).

    A box filter of width `pixels` along x and then along y, with the border pixels repeated,
    so a region touching the image border does not fade out there."""
    mask = as_mask_batch(mask)
    if pixels <= 0:
        return mask.clone()
    x = mask[:, None]
    for dim in (-1, -2):
        x = _box_filter(x, pixels, dim)
    return x[:, 0].clamp(0.0, 1.0)


def _box_filter(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Mean over a window of `width` samples centred on each sample, along `dim` (replicate border).

    An even width is centred between samples: the window covers width + 1 samples with half
    weight at both ends, so the ramp stays centred on the edge for every width."""
    n = x.shape[dim]
    half = width // 2 + 1
    pad = [0, 0, 0, 0]
    pad[0 if dim == -1 else 2] = pad[1 if dim == -1 else 3] = half
    padded = F.pad(x, pad, mode="replicate")
    # Cumulative sums give every window mean in one pass, whatever the width.
    zero = torch.zeros_like(padded.narrow(dim, 0, 1))
    csum = torch.cat([zero, padded.cumsum(dim)], dim)
    if width % 2:
        r = width // 2
        lo = torch.arange(n) + half - r
        hi = lo + width
        total = csum.index_select(dim, hi) - csum.index_select(dim, lo)
    else:
        r = width // 2
        lo = torch.arange(n) + half - r + 1
        hi = lo + width - 1
        inner = csum.index_select(dim, hi) - csum.index_select(dim, lo)
        ends = padded.index_select(dim, lo - 1) + padded.index_select(dim, hi)
        total = inner + 0.5 * ends
    return total / width


def resample(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A mask [B, H, W] at another size [B, height, width] (a latent's: each cell the mean of its
    pixels), by area resampling when shrinking, bilinear when growing."""
    mask = as_mask_batch(mask)[:, None]
    if mask.shape[-2] >= height and mask.shape[-1] >= width:
        out = F.adaptive_avg_pool2d(mask, (height, width))
    else:
        out = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
    return out[:, 0]


def per_frame(batch: torch.Tensor, frames: int) -> torch.Tensor:
    """A batch [B, ...] (masks, images, latents) as one row per frame [frames, ...]: a single row serves
    every frame, a batch is matched to frames in order (the last row repeated if the batch is short)."""
    if batch.shape[0] == 1:
        return batch.expand(frames, *batch.shape[1:])
    index = torch.arange(frames).clamp(max=batch.shape[0] - 1)
    return batch[index]


SHAPE_KINDS = ("rect", "ellipse", "polygon", "stroke")


def rasterize(shapes, width: int, height: int) -> torch.Tensor:
    """A MASK [1, height, width] from shapes drawn in pixels of that image, painted in order:
    `{"type": "rect" | "ellipse", "x0", "y0", "x1", "y1"}`, `{"type": "polygon", "points": [[x, y], ...]}`,
    `{"type": "stroke", "points": [[x, y], ...], "radius": r}` (a brush line); `"erase": true` clears instead."""
    from PIL import Image, ImageDraw

    if not isinstance(shapes, list):
        raise ValueError('shapes must be a list of {"type": ..., ...}')
    image = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(image)
    for n, shape in enumerate(shapes):
        what = f"shape {n}"
        if not isinstance(shape, dict) or shape.get("type") not in SHAPE_KINDS:
            raise ValueError(f"{what}: type must be one of {', '.join(SHAPE_KINDS)}")
        fill = 0 if shape.get("erase") else 255
        kind = shape["type"]
        try:
            if kind in ("rect", "ellipse"):
                x0, x1 = sorted((float(shape["x0"]), float(shape["x1"])))
                y0, y1 = sorted((float(shape["y0"]), float(shape["y1"])))
                # PIL includes the far edge; pixel centres inside [x0, x1) x [y0, y1) are painted
                box = (x0, y0, x1 - 1, y1 - 1)
                (draw.rectangle if kind == "rect" else draw.ellipse)(box, fill=fill)
            else:
                points = [(float(x), float(y)) for x, y in shape["points"]]
                if kind == "polygon" and len(points) >= 3:
                    draw.polygon(points, fill=fill)
                elif kind == "stroke" and points:
                    r = float(shape.get("radius", 8))
                    if len(points) > 1:
                        draw.line(points, fill=fill, width=max(1, round(2 * r)))
                    for x, y in points:  # round caps and joints
                        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
                else:
                    raise ValueError("needs points (3 for a polygon)")
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{what} ({kind}): {error}") from None
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None].clone()
