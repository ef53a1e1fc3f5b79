"""Containment-checked path joining, shared by nodes and server.

Every file name that comes from a workflow or a request is split by `check_part`: the tricks from
CVE-2026-56673 (`..`, backslashes, encoded dots, absolute parts) are refused outright instead of
being normalised into something that happens to look safe. Then one of two rules applies:
- `safe_join` (input, output, temp, user data, `/view`): the result is checked by *real* path, so
  a symlink inside a root cannot lead out of it (ComfyUI #12285). Uploads and outputs land there.
- `join_below` (model folders): the name stays below the root as written, and links inside the
  root are followed wherever they lead. Only the machine's owner puts files (and links) there, and
  sharing one models folder between tools through symlinks is the usual set-up.
"""
from __future__ import annotations

import os
import re
from pathlib import Path


class UnsafePathError(ValueError):
    """A path part would escape its root, or is malformed in a way we refuse to interpret."""


_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)
_ENCODED_SLASH = re.compile(r"%2f|%5c", re.IGNORECASE)


def check_part(part: str) -> list[str]:
    """Split one user-supplied part on "/" and refuse anything that could climb or mislead."""
    if not isinstance(part, str):
        raise UnsafePathError(f"path part must be a string, got {type(part).__name__}")
    if "\x00" in part:
        raise UnsafePathError(f"NUL byte in path part {part!r}")
    if "\\" in part:
        raise UnsafePathError(f"backslash in path part {part!r}")
    if _ENCODED_DOT.search(part) or _ENCODED_SLASH.search(part):
        raise UnsafePathError(f"percent-encoded dot or slash in path part {part!r}")
    if part.startswith("/") or re.match(r"^[A-Za-z]:", part):
        raise UnsafePathError(f"absolute path part {part!r}")
    pieces = [p for p in part.split("/") if p not in ("", ".")]
    if any(p == ".." for p in pieces):
        raise UnsafePathError(f"'..' in path part {part!r}")
    return pieces


def is_within(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when `path` resolves (following symlinks) to `root` or somewhere below it."""
    real_root = os.path.realpath(root)
    real_path = os.path.realpath(path)
    return os.path.commonpath([real_root, real_path]) == real_root


def join_below(root: str | os.PathLike, *parts: str) -> Path:
    """Join `parts` under `root` by name: they cannot climb (see check_part), while symlinks already
    inside `root` are followed. For folders only the owner writes to (model folders)."""
    pieces: list[str] = []
    for part in parts:
        pieces.extend(check_part(part))
    return Path(root, *pieces)


def safe_join(root: str | os.PathLike, *parts: str) -> Path:
    """Join `parts` under `root`; raise UnsafePathError unless the real result stays inside root."""
    pieces: list[str] = []
    for part in parts:
        pieces.extend(check_part(part))
    candidate = Path(root, *pieces)
    if not is_within(root, candidate):
        raise UnsafePathError(f"path {'/'.join(pieces)!r} leads outside {os.fspath(root)!r}")
    return candidate
