"""Helpers for the SVD node pack tests (imported by name: test folders share no conftest)."""
from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import numpy as np
from PIL import Image

from vidgraph import data_path
from vidgraph.engine.context import NodeContext
from vidgraph.engine.executor import Executor

CHECKPOINT = "svd_tiny.safetensors"
DEMO_IMAGE = "vidgraph_demo.png"
WORKFLOWS = data_path("workflows")
SIZE, FRAMES, STEPS, FPS = 64, 3, 2, 6


def bundled_api(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text())


def small_prompt(width: int = SIZE, height: int = SIZE, frames: int = FRAMES, steps: int = STEPS,
                 seed: int = 1, save_frames: bool = True) -> dict:
    """The bundled SVD workflow, shrunk to test size, plus a SaveImage of every decoded frame."""
    prompt = bundled_api("svd_img2vid.json")
    prompt["1"]["inputs"]["ckpt_name"] = CHECKPOINT
    prompt["3"]["inputs"].update(width=width, height=height, video_frames=frames, fps=FPS)
    prompt["5"]["inputs"].update(steps=steps, seed=seed)
    prompt["7"]["inputs"]["fps"] = float(FPS)
    prompt["8"]["inputs"]["fps"] = float(FPS)
    if save_frames:
        prompt["10"] = {"class_type": "SaveImage", "_meta": {"title": "Save frames"},
                        "inputs": {"images": ["6", 0], "filename_prefix": "frames/svd"}}
    return prompt


class SvdEnv(types.SimpleNamespace):
    """One tmp folder tree with the tiny checkpoint and the demo image, plus helpers."""

    def executor(self, **settings) -> Executor:
        return Executor(self.registry, self.folders, settings={"device": "cpu", "previews": False, **settings})

    def context(self, class_type: str = "Test", **settings) -> NodeContext:
        return NodeContext("prompt-1", "1", class_type, self.folders, self.resources,
                           {"device": "cpu", "previews": False, **settings})

    def output_path(self, entry: dict) -> Path:
        return self.folders.directory_for(entry.get("type", "output")) / entry.get("subfolder", "") / entry["filename"]

    def output_files(self, result, node_id: str) -> list[Path]:
        return [self.output_path(entry) for entry in result.outputs[node_id]["images"]]

    def frames(self, result, node_id: str = "10") -> np.ndarray:
        """The PNG frames a SaveImage node wrote, as uint8 [T,H,W,3]."""
        return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in self.output_files(result, node_id)])

    def put_checkpoint(self, name: str, data: bytes | None = None) -> Path:
        target = self.folders.models_dir / "checkpoints" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)  # may be a hard link to the session's checkpoint: never write through
        if data is None:
            shutil.copyfile(self.tiny_checkpoint, target)
        else:
            target.write_bytes(data)
        return target

    def load_models(self):
        """MODEL, CLIP_VISION, VAE from the real loader node (cached in this env's resources)."""
        from vidgraph.nodes.loaders import ImageOnlyCheckpointLoader
        return ImageOnlyCheckpointLoader().load_checkpoint(CHECKPOINT, self.context("ImageOnlyCheckpointLoader"))
