"""Fixtures for the SVD node pack tests: a tiny random SVD checkpoint, real folders, the real registry.

Everything runs the real node classes through the real executor on a ~5 MB checkpoint in the
real single-file layout, at 64x64 with a few frames and two steps, so a run takes well under a
second on one CPU core.
"""
from __future__ import annotations

import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svd_nodes_support import CHECKPOINT, DEMO_IMAGE, FPS, FRAMES, SIZE, WORKFLOWS, SvdEnv
from vidgraph.engine.folders import Folders
from vidgraph.runtime import build_registry
from vidgraph.engine.resources import ResourceCache
from vidgraph.nodes.svd.tiny import write_tiny_checkpoint


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """The CPU is shared with other jobs: one torch thread is several times faster here than an
    oversubscribed pool, and makes float reductions run in one fixed order. Per module, so other
    test folders in the same session get their thread count back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-svd") / CHECKPOINT
    write_tiny_checkpoint(path)
    return path


@pytest.fixture
def svd_env(tmp_path, tiny_checkpoint) -> SvdEnv:
    folders = Folders(base_dir=tmp_path)
    folders.ensure_dirs()
    checkpoints = folders.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    try:  # a hard link: no 5 MB copy per test
        os.link(tiny_checkpoint, checkpoints / CHECKPOINT)
    except OSError:
        shutil.copyfile(tiny_checkpoint, checkpoints / CHECKPOINT)
    for image in (DEMO_IMAGE, "vidgraph_shapes.png"):  # the SVD workflows' image, the tiny demo's
        shutil.copyfile(WORKFLOWS / image, folders.input_dir / image)
    registry = build_registry(folders)
    return SvdEnv(folders=folders, registry=registry, resources=ResourceCache(),
                  tiny_checkpoint=tiny_checkpoint)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_checkpoint):
    """The loaded tiny MODEL / CLIP_VISION / VAE, shared by a module's direct node calls."""
    folders = Folders(base_dir=tmp_path_factory.mktemp("svd-models"))
    folders.ensure_dirs()
    (folders.models_dir / "checkpoints").mkdir(parents=True)
    shutil.copyfile(tiny_checkpoint, folders.models_dir / "checkpoints" / CHECKPOINT)
    env = SvdEnv(folders=folders, registry=None, resources=ResourceCache(), tiny_checkpoint=tiny_checkpoint)
    model, clip_vision, vae = env.load_models()
    return types.SimpleNamespace(env=env, model=model, clip_vision=clip_vision, vae=vae)


@pytest.fixture
def demo_image() -> torch.Tensor:
    """The bundled demo PNG as an IMAGE [1,H,W,3] resized to 64x64."""
    picture = Image.open(WORKFLOWS / DEMO_IMAGE).convert("RGB").resize((SIZE, SIZE))
    return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)[None]


@pytest.fixture
def svd_conditioning(tiny_models, demo_image):
    """(positive, negative, latent) from the real SVD_img2vid_Conditioning node at 64x64, 3 frames."""
    from vidgraph.nodes.conditioning import SVD_img2vid_Conditioning
    return SVD_img2vid_Conditioning().encode(
        tiny_models.clip_vision, demo_image, tiny_models.vae, SIZE, SIZE, FRAMES, 127, FPS, 0.0,
        context=tiny_models.env.context("SVD_img2vid_Conditioning"))
