"""Where the tiny SVD trained on moving-shapes clips (`tools/train_tiny_svd.py`) lives: package data
under `nodes/svd/weights/` (the training script's default output; `pyproject.toml` ships that folder).

One file in the original single-file SVD layout: ImageOnlyCheckpointLoader loads it like any SVD
checkpoint (UNet with temporal layers, VAE with temporal decoder and a 4x latent, CLIP vision tower),
for 48x48 clips of 8 frames (`moving_shapes.SceneConfig()`). It is the demo's model and what
`bench/motion.py` measures motion control and long clips with; its figures are in the README
("Training the tiny SVD and measuring motion").
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

CHECKPOINT_NAME = "vidgraph_tiny_svd_shapes.safetensors"
FRAME_SIZE = 48
FRAMES = 8


def trained_checkpoint_path() -> Path:
    """The shipped file (inside the installed package, or the checkout for an editable install)."""
    return Path(str(resources.files("vidgraph.nodes.svd").joinpath("weights", CHECKPOINT_NAME)))


def training_record(path: Path | None = None) -> dict:
    """What the training script stored in the file's metadata (seed, command, timings, PSNR)."""
    from safetensors import safe_open

    with safe_open(str(path or trained_checkpoint_path()), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("vidgraph_training", "{}"))
