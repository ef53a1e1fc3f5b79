"""Image files <-> IMAGE/MASK tensors, with the size checked before any pixel is decoded.

Pillow's `Image.open` reads only the header; the pixels are decoded on first access. So the
dimensions and frame count are checked between the two, and a few-kilobyte PNG that claims
30,000 x 30,000 pixels is refused without allocating anything (tests/nodes/test_images.py).
"""
from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

# NodeInputError is also importable from here, where ARCHITECTURE.md first documented it.
from .common import NodeInputError

# Formats LoadImage accepts. Leaving out the rest keeps Pillow's rarer decoders (EPS runs
# Ghostscript, for one) away from user files.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO
# Formats whose extra frames are not animation (MPO holds stereo/depth views): first frame only.
SINGLE_FRAME_FORMATS = {"MPO"}


# What Pillow's decoders raise on malformed files, beyond OSError: its plugins parse with struct,
# slicing and arithmetic, so a hostile file can surface as any of these.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError,
                 ZeroDivisionError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class ImageLimits:
    max_side: int = 16384                 # ComfyUI's MAX_RESOLUTION
    max_pixels: int = 8192 * 8192         # one frame; 805 MB as float32 RGB
    max_frames: int = 4096
    max_total_pixels: int = 2 ** 27       # all frames together; 1.6 GB as float32 RGB

    @classmethod
    def from_settings(cls, settings: Mapping | None) -> "ImageLimits":
        settings = settings or {}
        default = cls()
        return cls(**{name: int(settings.get(f"image_{name}", getattr(default, name)))
                      for name in ("max_side", "max_pixels", "max_frames", "max_total_pixels")})


def open_image_checked(path, node: str, input_name: str,
                       limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Open `path` lazily and refuse it from its header if it is empty, huge or not an image."""
    name = getattr(path, "name", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path, formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise NodeInputError(node, input_name, f"image {name!s} is too large to load ({e})") from None
    except UnidentifiedImageError:
        declared = _declared_png_size(path)
        if declared is not None and 0 in declared:
            raise NodeInputError(node, input_name, f"image {name!s} has no pixels "
                                 f"({declared[0]} x {declared[1]})") from None
        raise NodeInputError(node, input_name, f"file {name!s} is not a readable image "
                             f"(supported: {', '.join(IMAGE_FORMATS)})") from None
    except DECODE_ERRORS as e:
        raise NodeInputError(node, input_name, f"file {name!s} is a corrupt image ({e})") from None
    try:
        check_dimensions(image, node, input_name, limits, name)
    except BaseException:
        image.close()
        raise
    return image


def _declared_png_size(path) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR, for the files Pillow refuses to identify."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except (OSError, TypeError):
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def check_dimensions(image: Image.Image, node: str, input_name: str, limits: ImageLimits,
                     name=None) -> None:
    what = f"image {name!s}" if name is not None else "image"
    try:
        frames = getattr(image, "n_frames", 1)  # TIFF and GIF walk their frame headers for this
    except DECODE_ERRORS as e:
        raise NodeInputError(node, input_name, f"{what} is corrupt ({e})") from None
    check_size(*image.size, frames, limits, node, input_name, what)


def check_size(width: int, height: int, frames: int, limits: ImageLimits, node: str,
               input_name: str, what: str) -> None:
    """Refuse an image or video, from its declared size, before anything is decoded."""
    if width <= 0 or height <= 0:
        raise NodeInputError(node, input_name, f"{what} has no pixels ({width} x {height})")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise NodeInputError(
            node, input_name, f"{what} is {width} x {height} pixels; the limit is "
            f"{limits.max_side} per side and {limits.max_pixels:,} pixels")
    if frames > limits.max_frames or frames * width * height > limits.max_total_pixels:
        raise NodeInputError(
            node, input_name, f"{what} has {frames} frames of {width} x {height}; the limit is "
            f"{limits.max_frames} frames and {limits.max_total_pixels:,} pixels in all")


def load_image_tensors(image: Image.Image, node: str, input_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An opened image as ComfyUI's LoadImage gives it: IMAGE [B,H,W,3] and MASK [B,H,W].

    Every frame is turned upright by its EXIF orientation; frames whose size differs from the
    first are skipped. The mask is 1 - alpha, or a 64 x 64 zero mask when there is no alpha.
    """
    images, masks = [], []
    size = None
    try:
        for frame in ImageSequence.Iterator(image):
            # Compared before decoding, so an odd-sized (maybe huge) later frame is never decoded;
            # the orientation is the file's, so comparing before turning upright is the same test.
            if size is None:
                size = frame.size
            elif frame.size != size:
                continue
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":  # 32-bit integer images, scaled as ComfyUI does
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            images.append(torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0))
            masks.append(_mask_of(frame))
            if image.format in SINGLE_FRAME_FORMATS:
                break
    except NodeInputError:
        raise
    except DECODE_ERRORS as e:
        raise NodeInputError(node, input_name, f"image {image.filename or ''} is corrupt or "
                             f"truncated ({e})") from None
    return torch.stack(images), torch.stack(masks)


def _mask_of(frame: Image.Image) -> torch.Tensor:
    if "A" in frame.getbands():
        alpha = frame.getchannel("A")
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = frame.convert("RGBA").getchannel("A")
    else:
        return torch.zeros((64, 64), dtype=torch.float32)
    return 1.0 - torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE floats to 8-bit as ComfyUI saves them: uint8(clip(255 * x, 0, 255)), truncating."""
    array = 255.0 * images.detach().to("cpu", torch.float32).numpy()
    return np.clip(array, 0, 255).astype(np.uint8)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One [H,W,C] IMAGE (C = 1, 3 or 4) as a PIL image."""
    array = to_uint8(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a [1,H,W,3] IMAGE."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def check_image_batch(images, node: str, input_name: str = "images") -> torch.Tensor:
    """An IMAGE input as a [B,H,W,C] float tensor, or a clear error."""
    if not isinstance(images, torch.Tensor):
        raise NodeInputError(node, input_name, f"expected an IMAGE tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise NodeInputError(node, input_name, f"expected an IMAGE [batch, height, width, channels], "
                             f"got shape {list(images.shape)}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise NodeInputError(node, input_name, f"the image batch is empty (shape {list(images.shape)})")
    return images


def check_rgb_batch(images, node: str, input_name: str) -> torch.Tensor:
    """An IMAGE input a model encodes (VAE, CLIP vision): [B,H,W,3 or 4], or a clear error."""
    images = check_image_batch(images, node, input_name)
    if images.shape[-1] < 3:
        raise NodeInputError(node, input_name, f"needs RGB or RGBA images, got {images.shape[-1]} channel(s)")
    return images
