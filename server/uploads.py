"""Upload checks: the bytes must be the image they claim to be, of a sane size, under a safe name.

Pillow reads only the header to learn the size (a pixel flood is refused before any decoding),
then the first frame is decoded to prove it is an image. Markup at the start or the end of the file
refuses it: a GIF89a header followed by HTML is a valid GIF and a valid page (CVE-2024-10099's cousin).
The name is the client's when it is plainly safe, else one the server makes from the content.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import warnings
from pathlib import Path

from PIL import Image

from .errors import ApiError

MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp"}
KNOWN_EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF", ".webp": "WEBP"}
MARKUP = re.compile(rb"<\s*(script|html|svg|iframe|object|embed|body|head|meta|!doctype|\?xml)\b",
                    re.IGNORECASE)
# Markup is looked for where a browser sniffing the file would find it (WHATWG's sniffing reads at most
# 1445 bytes) and in what trails the image (a polyglot appends its page there). The compressed data in
# between is left alone: over megabytes it holds '<svg' or '<?xml' by chance, which refused real photos.
SNIFF_WINDOW = 1445
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.()+,=-]{0,150}$")
WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def sniff_format(data: bytes) -> str | None:
    for magic, image_format in MAGIC:
        if data.startswith(magic):
            return image_format
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_image(data: bytes, max_pixels: int, max_frames: int) -> tuple[str, tuple[int, int]]:
    """(format, size) of an upload, or ApiError: 400 not an image, 413 too many pixels/frames."""
    claimed = sniff_format(data)
    if claimed is None:
        raise ApiError(400, "invalid_image", "Upload is not a PNG, JPEG, GIF or WEBP image")
    if MARKUP.search(data[:SNIFF_WINDOW]) or MARKUP.search(data[-SNIFF_WINDOW:]):
        raise ApiError(400, "invalid_image", "Upload contains markup (HTML/SVG/XML); refused")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[claimed]) as img:  # header only
                width, height = img.size
                if width * height > max_pixels:
                    raise ApiError(413, "image_too_large",
                                   f"Image is {width}x{height}; the limit is {max_pixels} pixels")
                frames = getattr(img, "n_frames", 1)
                if frames > max_frames or frames * width * height > 4 * max_pixels:
                    raise ApiError(413, "image_too_large",
                                   f"Image has {frames} frames of {width}x{height}; too many")
                img.load()  # decodes the first frame: truncated or corrupt files fail here
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ApiError(413, "image_too_large", str(e)) from None
    except Exception as e:  # Pillow raises many types for malformed files
        raise ApiError(400, "invalid_image", f"Upload is not a valid {claimed} image",
                       f"{type(e).__name__}: {e}") from None
    return claimed, (width, height)


def safe_name(client_name: str | None, image_format: str, data: bytes) -> str:
    """The client's name when it is plainly harmless (extension fixed to the real type)."""
    extension = EXTENSIONS[image_format]
    name = client_name or ""
    stem, ext = os.path.splitext(name)
    if (SAFE_NAME.match(name) and not WINDOWS_RESERVED.match(name)
            and not name.endswith((".", " ")) and stem and ".." not in name):
        if KNOWN_EXTENSIONS.get(ext.lower()) == image_format:
            return name
        return stem + extension
    return f"upload_{hashlib.sha256(data).hexdigest()[:16]}{extension}"


def write_upload(directory: Path, name: str, data: bytes, overwrite: bool) -> str:
    """Write `data` as `name` in `directory`; returns the name used.

    Never overwrites unless asked: a clash with different bytes gets "name (1).ext" and so on,
    claimed with an atomic hard link (O_EXCL semantics, so two racing uploads cannot collide);
    a clash with the same bytes reuses the file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if overwrite:
            os.replace(tmp, directory / name)
            return name
        stem, ext = os.path.splitext(name)
        digest = hashlib.sha256(data).digest()
        for i in range(1000):
            candidate = name if i == 0 else f"{stem} ({i}){ext}"
            target = directory / candidate
            try:
                os.link(tmp, target)
                return candidate
            except FileExistsError:
                if target.is_file() and not target.is_symlink() and _sha256(target) == digest:
                    return candidate
        raise ApiError(409, "name_taken", f"Too many files named like {name!r}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()
