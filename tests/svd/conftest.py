"""Fixtures for the SVD model tests: the reference key layouts (outside the repository: skipped with
the reason when absent, see bench/reference.py) and random weights."""
import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "vidgraph_bench_reference", Path(__file__).resolve().parents[2] / "bench" / "reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def read_layout(path: Path) -> dict:
    """key -> shape from a `key<TAB>[shape]` listing (svd_keys.txt, svd_layout_*.txt)."""
    layout = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        layout[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    return layout


@pytest.fixture
def shared_file():
    def get(relative: str) -> Path:
        path, reason = reference.shared_path(relative)
        if path is None:
            pytest.skip(reason)
        return path
    return get


@pytest.fixture
def svd_keys(shared_file):
    """prefix -> {key without prefix: shape list} of the real SVD-XT file (reference/svd_keys.txt)."""
    def get(prefix: str) -> dict:
        keys = read_layout(shared_file("reference/svd_keys.txt"))
        return {k[len(prefix):]: list(shape) for k, shape in keys.items() if k.startswith(prefix)}
    return get


@pytest.fixture
def layout():
    return read_layout


@pytest.fixture
def randomized():
    return randomize


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (norms and mix factors too) so a misplaced weight cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 1.0 if name.endswith("mix_factor") else (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.1)
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if p.ndim == 1 and "norm" in name and name.endswith("weight") else 0.0))
    return module
