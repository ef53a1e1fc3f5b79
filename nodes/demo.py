"""`vidgraph demo`: the whole image-to-video path on the tiny trained SVD that ships with vidgraph.

It copies that checkpoint (`nodes/svd/weights/`, trained here on clips of moving shapes by
`tools/train_tiny_svd.py`, in the real SVD single-file layout) into models/checkpoints, puts the
bundled first frame (three shapes on a soft background) into the input folder, and runs the bundled
`tiny_svd_demo.json` workflow: SVD's image-to-video graph at the model's 48x48, 8 frames, enlarged 4x
for watching (the editor offers the same workflow). The shapes glide in straight lines, each its own
way, faster at a higher motion_bucket_id; which way is up to the seed. Every stage a real checkpoint
goes through runs: loading, CLIP vision, the VAE, the spatio-temporal UNet under the EDM sampler, the
temporal decoder, WEBP and MP4 writing.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
import time
from pathlib import Path

from vidgraph import data_path
from vidgraph.engine.executor import Executor
from vidgraph.engine.folders import Folders
from vidgraph.runtime import build_folders, build_registry

from .svd.trained import CHECKPOINT_NAME as CHECKPOINT
from .svd.trained import trained_checkpoint_path

IMAGE = "vidgraph_shapes.png"
WORKFLOW = "tiny_svd_demo.json"  # svd_img2vid.json on the tiny trained checkpoint, at its size


def bundled(name: str) -> Path:
    return data_path("workflows") / name


def demo_prompt(width=None, height=None, frames=None, steps=None, seed=None) -> dict:
    """The bundled workflow with the values given (None: the workflow's own, so the demo and the
    workflow the editor opens agree)."""
    def given(**values):
        return {name: value for name, value in values.items() if value is not None}

    prompt = json.loads(bundled(WORKFLOW).read_text())
    size = prompt["3"]["inputs"]
    size.update(given(width=width, height=height, video_frames=frames))
    prompt["5"]["inputs"].update(given(steps=steps, seed=seed))
    prompt["10"]["inputs"].update(width=4 * size["width"], height=4 * size["height"])
    return prompt


def prepare(folders: Folders) -> None:
    folders.ensure_dirs()
    checkpoint = folders.models_dir / "checkpoints" / CHECKPOINT
    shipped = trained_checkpoint_path()
    # a copy, not a link (the folders refuse links leading outside them); renewed when vidgraph ships new weights
    if not checkpoint.exists() or not filecmp.cmp(checkpoint, shipped, shallow=False):
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped, checkpoint)
    image = folders.input_dir / IMAGE
    if not image.exists():
        shutil.copyfile(bundled(IMAGE), image)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-dir", default=".", help="folder holding models/, input/, output/ (default: .)")
    # one source for the defaults: the workflow (its width and height are the model's training size)
    for name in ("width", "height", "frames", "steps", "seed"):
        parser.add_argument(f"--{name}", type=int, help=f"default: {WORKFLOW}'s")


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
    size = prompt["3"]["inputs"]
    print(f"vidgraph demo: {size['video_frames']} frames at {size['width']}x{size['height']} on the tiny trained SVD "
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
