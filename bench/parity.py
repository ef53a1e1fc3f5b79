"""Run ComfyUI's two public SVD parity cases through vidgraph and compare, as the parity README says.

    .venv/bin/python bench/parity.py [--shared DIR] [--work ~/.cache/vidgraph-parity]

DIR is the reference material's folder (default: $VIDGRAPH_SHARED, else a `shared/` folder beside
the checkout or a folder above it; see bench/reference.py).

It regenerates the 1.9 GB random-weight checkpoint with shared/tools/make_svd_test_checkpoint.py
(once; checked against the published sha256), runs each case's `workflow_api.json` unchanged with
`vidgraph run`, and prints the latent's max abs difference (target <= 1e-3) and each frame's max
8-bit level difference (target <= 2) against ComfyUI's own outputs. Exit status 0 when both cases
are within tolerance.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by file path (the parity test)
from reference import shared_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = "svd_public_small_fp16.safetensors"
CHECKPOINT_SHA256 = "3bfef629fa93193c24a78b2ae5c61f3047fba6e29c8c4729dce8f47ed77b3acd"
LATENT_TOLERANCE = 1e-3
LEVEL_TOLERANCE = 2


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_checkpoint(shared: Path, models: Path) -> Path:
    target = models / "checkpoints" / CHECKPOINT
    stamp = target.with_suffix(".sha256")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == CHECKPOINT_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"writing the parity checkpoint to {target} (about 20 s) ...", flush=True)
    subprocess.run([sys.executable, str(shared / "tools" / "make_svd_test_checkpoint.py"),
                    "--layout", str(shared / "tools" / "svd_layout_small.txt"),
                    "--out", str(target), "--seed", "7"], check=True, stdout=subprocess.DEVNULL)
    digest = sha256_of(target)
    if digest != CHECKPOINT_SHA256:
        raise SystemExit(f"checkpoint sha256 {digest} != {CHECKPOINT_SHA256}: not a valid reference")
    stamp.write_text(digest)
    return target


def compare(ref_dir: Path, out_dir: Path) -> tuple[float, list[int]]:
    a = load_file(str(ref_dir / "latent_00001_.latent"))["latent_tensor"]
    latents = sorted(glob.glob(str(out_dir / "**" / "*.latent"), recursive=True))
    b = load_file(latents[0])["latent_tensor"]
    latent_diff = float(np.abs(a.astype(np.float64) - b).max())
    levels = []
    refs = sorted(ref_dir.glob("frame_*.png"))
    outs = sorted(p for p in glob.glob(str(out_dir / "**" / "frame_*.png"), recursive=True))
    for ra, rb in zip(refs, outs):
        x = np.asarray(Image.open(ra).convert("RGB"), dtype=np.int16)
        y = np.asarray(Image.open(rb).convert("RGB"), dtype=np.int16)
        levels.append(int(np.abs(x - y).max()))
    if len(outs) != len(refs):
        levels.append(255)
    return latent_diff, levels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=shared_dir(),
                        help="the reference material's folder (default: $VIDGRAPH_SHARED or a shared/ beside the checkout)")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "vidgraph-parity")
    args = parser.parse_args(argv)
    if args.shared is None:
        parser.error("the reference material is not available: pass --shared DIR or set VIDGRAPH_SHARED")
    parity = args.shared / "reference" / "parity"
    models = args.work / "models"
    ensure_checkpoint(args.shared, models)
    vidgraph = shutil.which("vidgraph") or str(Path(sys.executable).parent / "vidgraph")
    ok = True
    print(f"{'case':48} {'latent max|d|':>14} {'frame levels':>14} {'seconds':>8}")
    for case in sorted(p for p in parity.iterdir() if p.is_dir()):
        inputs, outputs = args.work / case.name / "input", args.work / case.name / "output"
        shutil.rmtree(outputs, ignore_errors=True)
        inputs.mkdir(parents=True, exist_ok=True)
        shutil.copy(case / "svd_input_64x64.png", inputs / "svd_input_64x64.png")
        start = time.perf_counter()
        run = subprocess.run([vidgraph, "run", str(case / "workflow_api.json"), "--json", "--cpu",
                              "--models-dir", str(models), "--input-dir", str(inputs),
                              "--output-dir", str(outputs)], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            print(f"{case.name}: vidgraph run failed ({run.returncode})\n{run.stdout}\n{run.stderr}")
            ok = False
            continue
        latent_diff, levels = compare(case, outputs)
        good = latent_diff <= LATENT_TOLERANCE and max(levels) <= LEVEL_TOLERANCE
        ok &= good
        print(f"{case.name:48} {latent_diff:14.3e} {json.dumps(levels):>14} {seconds:8.1f}"
              f"  {'OK' if good else 'OUT OF TOLERANCE'}")
    print(f"tolerance: latent <= {LATENT_TOLERANCE}, frames <= {LEVEL_TOLERANCE} levels")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
