"""Shared fixtures for the SVD model tests: the shared reference layouts and random weights."""
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


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
        path = SHARED / relative
        if not path.exists():
            pytest.skip(f"{path} not available")
        return path
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
