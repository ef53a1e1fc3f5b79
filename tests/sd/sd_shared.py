"""Shared material for the SD tests: the reference layouts and ComfyUI outputs, found as
bench/reference.py says (VIDGRAPH_SHARED, or a `shared` folder beside the checkout); tests that need
them skip, saying why, without them."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "vidgraph_bench_reference", Path(__file__).resolve().parents[2] / "bench" / "reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def shared_path(relative: str) -> Path:
    path, reason = reference.shared_path(relative)
    if path is None:
        pytest.skip(reason)
    return path


def read_layout(relative: str) -> dict:
    """key -> shape from a `key<TAB>[shape]` layout file."""
    layout = {}
    for line in shared_path(relative).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")
            layout[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return layout


def model_folders(base) -> "Folders":
    """Folders under `base` with empty checkpoints/ and loras/ model folders."""
    from vidgraph.engine.folders import Folders
    folders = Folders(base_dir=base)
    folders.ensure_dirs()
    for folder in ("checkpoints", "loras"):
        (folders.models_dir / folder).mkdir(parents=True, exist_ok=True)
    return folders
