"""`vidgraph demo`: the whole image-to-video path on a tiny random-weight SVD, with no downloads.

It writes a small checkpoint in the real SVD single-file layout into models/checkpoints, puts the
bundled demo image into the input folder, and runs the bundled `tiny_svd_demo.json` workflow (the
SVD image-to-video graph, smaller and shorter, so it takes seconds on a CPU; the editor offers it
too). The frames are noise-like — the weights are
random — but every stage a real checkpoint goes through runs: loading, CLIP vision, the VAE, the
spatio-temporal UNet under the EDM sampler, the temporal decoder, WEBP and MP4 writing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from vidgraph import data_path
from vidgraph.engine.executor import Executor
from vidgraph.engine.folders import Folders
from vidgraph.runtime import build_folders, build_registry

from .svd.tiny import write_tiny_checkpoint

CHECKPOINT = "vidgraph_tiny_svd.safetensors"
IMAGE = "vidgraph_demo.png"
WORKFLOW = "tiny_svd_demo.json"  # svd_img2vid.json on the tiny checkpoint, smaller and shorter


def bundled(name: str) -> Path:
    return data_path("workflows") / name


def demo_prompt(width: int, height: int, frames: int, steps: int, seed: int) -> dict:
    prompt = json.loads(bundled(WORKFLOW).read_text())
    prompt["3"]["inputs"].update(width=width, height=height, video_frames=frames)
    prompt["5"]["inputs"].update(steps=steps, seed=seed)
    return prompt


def prepare(folders: Folders) -> None:
    folders.ensure_dirs()
    checkpoint = folders.models_dir / "checkpoints" / CHECKPOINT
    if not checkpoint.exists():
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_checkpoint(checkpoint)
    image = folders.input_dir / IMAGE
    if not image.exists():
        shutil.copyfile(bundled(IMAGE), image)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-dir", default=".", help="folder holding models/, input/, output/ (default: .)")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=42)


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="vidgraph demo", description=__doc__.splitlines()[0])
        add_arguments(parser)
        args = parser.parse_args(args)
    folders = build_folders(base_dir=args.base_dir)
    prepare(folders)
    registry = build_registry(folders)
    executor = Executor(registry, folders, settings={"device": "cpu", "previews": False})

    def show(event: str, data: dict) -> None:
        if event == "executing" and data.get("node"):
            node = data["node"]
            print(f"  running {node} {prompt[node]['class_type']}", flush=True)

    prompt = demo_prompt(args.width, args.height, args.frames, args.steps, args.seed)
    print(f"vidgraph demo: {args.frames} frames at {args.width}x{args.height} on a tiny random-weight SVD "
          f"(models in {folders.models_dir})", flush=True)
    start = time.perf_counter()
    result = executor.run(prompt, on_event=show)
    if result.status != "success":
        print(json.dumps(result.error, indent=2), file=sys.stderr)
        return 1
    print(f"done in {time.perf_counter() - start:.1f} s:")
    for ui in result.outputs.values():
        for entry in ui.get("images", []) + ui.get("video", []):
            path = folders.directory_for(entry.get("type", "output")) / entry.get("subfolder", "") / entry["filename"]
            print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
