"""Long clips: peak memory and time per frame against clip length (issue 13, section 3).

    .venv/bin/python bench/long_clips.py                      # 50 and 1,000 frames at 256x144
    .venv/bin/python bench/long_clips.py --frames 50,200,1000 --checkpoint models/checkpoints/x.safetensors

Each clip runs `vidgraph run` on one workflow in a fresh process, so its peak RSS (ru_maxrss,
imports and model included) belongs to that clip alone: the SVD conditioning makes the clip's
latent, the sampler denoises it in context windows when `--steps` > 0 (ContextWindowsManual,
16 frames with 4 of overlap), VAEDecode decodes it, and the frames are written to an MP4
(CreateVideo -> SaveVideo) and an animated WEBP. Printed per clip: peak RSS, seconds, seconds
per output frame, and the ratio of each clip's peak RSS to the shortest clip's (target: <= 1.10
for 1,000 frames against 50). Without --checkpoint a tiny random-weight checkpoint is written
under ~/.cache/vidgraph-bench. Nothing is asserted; on a shared machine compare ratios.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "vidgraph-bench"


def workflow(frames: int, width: int, height: int, steps: int, ckpt: str, context_length: int) -> dict:
    prompt = {
        "1": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
        "3": {"class_type": "SVD_img2vid_Conditioning", "inputs": {
            "clip_vision": ["1", 1], "init_image": ["2", 0], "vae": ["1", 2], "width": width, "height": height,
            "video_frames": frames, "motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 2], "vae": ["1", 2]}},
        "7": {"class_type": "SaveAnimatedWEBP", "inputs": {
            "images": ["6", 0], "filename_prefix": "long/clip", "fps": 6.0, "lossless": False,
            "quality": 80, "method": "fastest"}},
        "8": {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 6.0}},
        "9": {"class_type": "SaveVideo", "inputs": {"video": ["8", 0], "filename_prefix": "long/clip",
                                                   "format": "auto", "codec": "auto"}},
    }
    if steps:
        prompt["4"] = {"class_type": "ContextWindowsManual", "inputs": {
            "model": ["1", 0], "context_length": context_length, "context_overlap": 4,
            "context_schedule": "standard_static", "context_stride": 1, "closed_loop": False,
            "fuse_method": "pyramid", "dim": 0}}
        prompt["5"] = {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["3", 2],
            "seed": 1, "steps": steps, "cfg": 2.5, "sampler_name": "euler", "scheduler": "karras",
            "denoise": 1.0}}
        prompt["6"]["inputs"]["samples"] = ["5", 0]
    return prompt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="50,1000", help="comma-separated clip lengths")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--steps", type=int, default=4, help="sampler steps; 0 = decode and save only")
    parser.add_argument("--context-length", type=int, default=16)
    parser.add_argument("--checkpoint", default=None, help="an SVD checkpoint (default: the tiny random one)")
    args = parser.parse_args(argv)

    if args.checkpoint is None:
        CACHE.mkdir(parents=True, exist_ok=True)
        args.checkpoint = str(CACHE / "svd_tiny.safetensors")
        if not Path(args.checkpoint).exists():
            from vidgraph.nodes.svd.tiny import write_tiny_checkpoint
            write_tiny_checkpoint(Path(args.checkpoint))
    lengths = [int(n) for n in args.frames.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidgraph-long-") as tmp:
        root = Path(tmp)
        for folder in ("models/checkpoints", "input", "output", "temp"):
            (root / folder).mkdir(parents=True)
        shutil.copyfile(args.checkpoint, root / "models" / "checkpoints" / Path(args.checkpoint).name)
        shutil.copyfile(REPO / "workflows" / "vidgraph_demo.png", root / "input" / "start.png")
        for frames in lengths:
            rows.append(measure(root, frames, args))
            row = rows[-1]
            print(f"{frames:6d} frames: {row['status']:8s} peak RSS {row['peak_mb']:8.1f} MB  "
                  f"{row['seconds']:7.1f} s  {row['seconds'] / frames * 1000:7.1f} ms/frame", flush=True)
            if row["status"] != "success":
                print("   ", json.dumps(row["error"])[:1500])
    base = rows[0]
    print(f"\npeak RSS against {base['frames']} frames (target for 1,000 vs 50: <= 1.10):")
    for row in rows[1:]:
        print(f"  {row['frames']:6d} / {base['frames']}: {row['peak_mb'] / base['peak_mb']:.3f}x")
    return 0


def measure(root: Path, frames: int, args) -> dict:
    """One clip in a fresh `vidgraph run` process; its own peak RSS from wait4."""
    prompt = workflow(frames, args.width, args.height, args.steps, Path(args.checkpoint).name, args.context_length)
    path = root / f"clip_{frames}.json"
    path.write_text(json.dumps(prompt))
    command = [str(REPO / ".venv" / "bin" / "vidgraph"), "run", str(path), "--json", "--no-progress", "--cpu",
               "--models-dir", str(root / "models"), "--input-dir", str(root / "input"),
               "--output-dir", str(root / "output"), "--temp-dir", str(root / "temp")]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        # one torch thread: an oversubscribed pool is several times slower on a busy machine
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        _, _, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"status": "crashed", "error": "no JSON line"}
    return {"frames": frames, "status": result.get("status"), "error": result.get("error"),
            "peak_mb": usage.ru_maxrss / 1024, "seconds": seconds}


if __name__ == "__main__":
    sys.exit(main())
