"""Shared material for the SD tests: the reference layouts and ComfyUI outputs in ../shared
(VIDGRAPH_SHARED overrides where that folder is; tests that need it skip, saying why, without it)."""
import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("VIDGRAPH_SHARED") or Path(__file__).resolve().parents[2].parent / "shared")


def shared_path(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"{path} not available (set VIDGRAPH_SHARED to the shared folder)")
    return path


def read_layout(relative: str) -> dict:
    """key -> shape from a `key<TAB>[shape]` layout file."""
    layout = {}
    for line in shared_path(relative).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return layout
