"""Where the reference material lives: ComfyUI's parity cases, the real SVD key layout, the parity
checkpoint's generator. It is not part of the repository. The environment variable VIDGRAPH_SHARED
names its folder; without it, a folder named `shared` beside the checkout, or beside one of the
folders above it, is used when there is one. Tests that need it skip, saying so, when it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "VIDGRAPH_SHARED"
REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    for folder in REPO.parents:
        if (folder / "shared" / "reference").is_dir():
            return folder / "shared"
    return None


def shared_path(relative: str) -> tuple[Path | None, str]:
    """(the path of `relative` inside the reference folder, or None with the reason it is not there)."""
    root = shared_dir()
    if root is None:
        return None, f"the reference material is not available (set {ENV} to its folder)"
    path = root / relative
    if not path.exists():
        return None, f"{path} not available (set {ENV} to the reference material's folder)"
    return path, ""
