"""The motion yardstick: what an image-to-video run does with motion, measured on its frames with OpenCV.

    .venv/bin/python bench/motion.py                    # the tiny trained model: every figure (~15 min on 2 busy cores)
    .venv/bin/python bench/motion.py --seeds 20 --bucket-seeds 4     # a quicker look
    .venv/bin/python bench/motion.py --json figures.json

Every run goes through the real node graph (ImageOnlyCheckpointLoader -> LoadImage ->
SVD_img2vid_Conditioning -> VideoLinearCFGGuidance -> KSampler -> VAEDecode -> SaveImage) on the
first frame of a procedurally generated clip (`vidgraph.nodes.svd.moving_shapes`), whose ground truth
(object colours, tracks, camera) is known. Seeds are a fixed set outside the training clips.

Metrics (bench/motion_metrics.py, each on uint8 frames [T,H,W,3]): object tracks by colour (HSV mask +
connected components), whether the first frame's objects are still there with their colours in the
last frame, centroid displacement and speed, ObjMC against a requested path (mean Euclidean distance
per frame, as SG-I2V / DragAnything report it), mean change inside / outside a mask, global
Farneback flow direction, magnitude and divergence, colour drift (CIE76 dE in Lab between the first
and each later segment), flicker (frame-mean lightness against its neighbours) and flow warp error.
Each figure is printed over the seed set with its spread, and every controlled variant as a ratio
against the plain run.

Controlled runs (issue 12: regions, trajectories, camera; issue 13: long clips) register a `Variant`
in `VARIANTS`: a function that edits the baseline API prompt for a case (adds its nodes), and, for a
trajectory control, the path it requests per object colour (then ObjMC is printed for it and for the
baseline, which requested nothing).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from motion_metrics import (angle_error, change_inside_outside, circular_spread, colour_drift, direction,
                            displacement, flicker, global_flow, object_kept, object_mask, objmc, spearman,
                            spread, track_objects, warp_error)
from vidgraph.nodes.svd.moving_shapes import Clip, SceneConfig, make_clip, speed_for_bucket

EVAL_SEED_BASE = 900_000          # far from the training clips (seed * 1_000_003 + i, i < pool size)
BUCKETS = (16, 48, 80, 112, 144, 176, 208, 240)
TARGETS = {"objects_kept": 0.90, "objects_move": 0.80, "move_fraction": 0.15, "spearman": 0.8, "vae_psnr_db": 28.0}

# ------------------------------------------------------------------------------------- runs

@dataclass
class Case:
    """One generation: the first frame of `clip` conditions it; the knobs are SVD's own."""
    seed: int
    clip: Clip
    motion_bucket_id: int = 127
    fps: int = 6
    augmentation_level: float = 0.0


@dataclass
class Variant:
    """A way to run a case. `edit(prompt, case, image_name)` returns the API prompt to run (the baseline's
    edited: control nodes added); `requested(case)` gives {colour: [T,2] path} for ObjMC."""
    name: str
    edit: Callable[[dict, Case], dict] | None = None
    requested: Callable[[Case], dict[str, np.ndarray]] | None = None


BASELINE = Variant("plain")
# Controlled runs go here (issue 12 / 13): Variant("trajectory", edit=..., requested=...).
VARIANTS: list[Variant] = []


@dataclass
class Sampling:
    steps: int = 12
    cfg: float = 2.5
    min_cfg: float = 1.0
    sampler: str = "euler"
    scheduler: str = "karras"


def default_checkpoint() -> Path:
    from vidgraph.nodes.svd.trained import trained_checkpoint_path

    return trained_checkpoint_path()


class MotionRunner:
    """Runs cases through the node graph in a private folder tree; the loaded model stays cached."""

    def __init__(self, checkpoint: Path | None = None, sampling: Sampling = Sampling(), workdir: Path | None = None,
                 scene: SceneConfig = SceneConfig()):
        from vidgraph.engine.executor import Executor
        from vidgraph.engine.folders import Folders
        from vidgraph.engine.registry import NodeRegistry

        self.checkpoint = Path(checkpoint or default_checkpoint())
        if not self.checkpoint.is_file():
            raise SystemExit(f"no checkpoint at {self.checkpoint}: train one (tools/train_tiny_svd.py) or pass --checkpoint")
        self.sampling, self.scene = sampling, scene
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="vidgraph-motion-")
        self.folders = Folders(base_dir=workdir or self._tmp.name)
        self.folders.ensure_dirs()
        target = self.folders.models_dir / "checkpoints" / self.checkpoint.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():  # a copy: the folders refuse links that lead outside them
            shutil.copyfile(self.checkpoint, target)
        registry = NodeRegistry(self.folders)
        registry.load_module_pack("vidgraph.nodes")
        self.executor = Executor(registry, self.folders, settings={"device": "cpu", "previews": False})

    def case(self, seed: int, motion_bucket_id: int = 127, fps: int = 6, **knobs) -> Case:
        return Case(seed, make_clip(seed, self.scene, motion_bucket_id=motion_bucket_id, fps=fps, **knobs),
                    motion_bucket_id, fps)

    def baseline_prompt(self, case: Case, image_name: str) -> dict:
        s, h, w = self.sampling, self.scene.height, self.scene.width
        return {
            "1": {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": self.checkpoint.name}},
            "2": {"class_type": "LoadImage", "inputs": {"image": image_name}},
            "3": {"class_type": "SVD_img2vid_Conditioning", "inputs": {
                "clip_vision": ["1", 1], "init_image": ["2", 0], "vae": ["1", 2], "width": w, "height": h,
                "video_frames": self.scene.frames, "motion_bucket_id": case.motion_bucket_id, "fps": case.fps,
                "augmentation_level": case.augmentation_level}},
            "4": {"class_type": "VideoLinearCFGGuidance", "inputs": {"model": ["1", 0], "min_cfg": s.min_cfg}},
            "5": {"class_type": "KSampler", "inputs": {
                "model": ["4", 0], "seed": case.seed, "steps": s.steps, "cfg": s.cfg, "sampler_name": s.sampler,
                "scheduler": s.scheduler, "positive": ["3", 0], "negative": ["3", 1], "latent_image": ["3", 2],
                "denoise": 1.0}},
            "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        }

    def run(self, case: Case, variant: Variant = BASELINE) -> np.ndarray:
        """The generated frames, uint8 [T,H,W,3]. The decoded frames are saved as PNG (lossless) by
        a SaveImage node on the VAEDecode output and read back."""
        image_name = f"motion_case_{case.seed}.png"
        image_path = self.folders.input_dir / image_name
        if not image_path.exists():
            Image.fromarray(case.clip.first_frame).save(image_path)
        prompt = self.baseline_prompt(case, image_name)
        if variant.edit is not None:
            prompt = variant.edit(prompt, case)
        prefix = f"motion/{variant.name}_{case.seed}_{case.motion_bucket_id}"
        prompt["99"] = {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}}
        result = self.executor.run(prompt)
        if result.status != "success":
            raise RuntimeError(f"{variant.name} run for seed {case.seed} failed: {json.dumps(result.error)[:2000]}")
        paths = [self.folders.directory_for(e.get("type", "output")) / e.get("subfolder", "") / e["filename"]
                 for e in result.outputs["99"]["images"]]
        frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
        for p in paths:
            p.unlink()
        return frames


def measure(frames: np.ndarray, case: Case, variant: Variant) -> dict:
    """Every per-run figure for one generated clip."""
    width = frames.shape[2]
    truth = {o.colour: o for o in case.clip.objects}
    tracks = track_objects(frames, colours=list(truth))
    first_found = [c for c, t in tracks.items() if t.found[0]]
    kept = [object_kept(tracks[c]) for c in first_found]
    moves = [displacement(tracks[c]) / width for c in first_found if object_kept(tracks[c])]
    speeds = [m / (len(frames) - 1) for m in moves]
    directions = [direction(tracks[c]) for c in first_found if object_kept(tracks[c])]
    truth_dirs = [math.degrees(math.atan2(truth[c].velocity[1], truth[c].velocity[0])) for c in first_found
                  if object_kept(tracks[c])]
    inside, outside = change_inside_outside(frames, object_mask(case.clip))
    flow = global_flow(frames)
    out = {
        "seed": case.seed, "bucket": case.motion_bucket_id, "objects": len(truth), "found_first": len(first_found),
        "all_kept": bool(first_found) and all(kept) and len(first_found) == len(truth),
        "kept_share": float(np.mean(kept)) if kept else 0.0,
        "median_move": float(np.median(moves)) if moves else 0.0,
        "mean_speed": float(np.mean(speeds)) if speeds else float("nan"),
        "directions": directions,
        "direction_error_vs_truth": [angle_error(a, b) for a, b in zip(directions, truth_dirs)],
        "change_inside": inside, "change_outside": outside,
        "flow_direction_deg": flow["direction_deg"], "flow_magnitude_px": flow["magnitude_px"],
        "flow_divergence": flow["divergence"], "warp_error": warp_error(frames),
        "colour_drift": colour_drift(frames, max(1, len(frames) // 2))[-1] if len(frames) > 1 else 0.0,
        "flicker": flicker(frames),
    }
    if variant.requested is not None:
        requested = variant.requested(case)
        out["objmc"] = float(np.mean([objmc(tracks[c], p) for c, p in requested.items() if c in tracks]))
    return out


# ------------------------------------------------------------------------------------- the bench

def vae_psnr(checkpoint: Path, clips: int = 24, scene: SceneConfig = SceneConfig()) -> float:
    """Mean PSNR (dB) of encode -> decode on held-out generated clips, through the loaded VAE."""
    import torch

    from vidgraph.nodes.svd.checkpoint import load_checkpoint

    vae = load_checkpoint(checkpoint).vae
    values = []
    for i in range(clips):
        frames = make_clip(EVAL_SEED_BASE + 50_000 + i, scene).frames
        x = torch.from_numpy(frames).movedim(-1, 1).float() / 127.5 - 1
        out = vae.decode(vae.encode(x), num_frames=len(frames), chunk=None)
        rec = ((out.float().clamp(-1, 1) + 1) * 127.5).round().movedim(1, -1).numpy()
        mse = float(np.mean((rec - frames.astype(np.float32)) ** 2))
        values.append(10 * math.log10(255 ** 2 / max(mse, 1e-10)))
    return float(np.mean(values))


def run_seeds(runner: MotionRunner, variant: Variant, seeds, bucket: int, fps: int, progress: bool = True) -> list[dict]:
    rows = []
    for i, seed in enumerate(seeds):
        case = runner.case(seed, motion_bucket_id=bucket, fps=fps)
        rows.append(measure(runner.run(case, variant), case, variant))
        if progress and (i + 1) % 10 == 0:
            print(f"  {variant.name}: {i + 1}/{len(seeds)} runs (bucket {bucket})", file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict]) -> dict:
    directions = [d for r in rows for d in r["directions"]]
    summary = {
        "runs": len(rows),
        "objects_kept": float(np.mean([r["all_kept"] for r in rows])),
        # where runs lose objects: the share of single objects kept, and runs keeping all by shape count
        "objects_kept_per_object": float(sum(r["kept_share"] * r["found_first"] for r in rows)
                                         / max(1, sum(r["objects"] for r in rows))),
        "objects_kept_by_count": {n: float(np.mean([r["all_kept"] for r in rows if r["objects"] == n]))
                                  for n in sorted({r["objects"] for r in rows})},
        "objects_move": float(np.mean([r["median_move"] >= TARGETS["move_fraction"] for r in rows])),
        "median_move": spread([r["median_move"] for r in rows]),
        "mean_speed": spread([r["mean_speed"] for r in rows]),
        "direction_spread": circular_spread(directions),
        "direction_error_vs_truth_deg": spread([e for r in rows for e in r["direction_error_vs_truth"]]),
    }
    for key in ("change_inside", "change_outside", "flow_magnitude_px", "flow_divergence", "warp_error",
                "colour_drift", "flicker", "objmc"):
        if any(key in r for r in rows):
            summary[key] = spread([r.get(key) for r in rows])
    return summary


def bucket_sweep(runner: MotionRunner, variant: Variant, seeds, fps: int) -> dict:
    speeds, flow = {}, {}
    for bucket in BUCKETS:
        rows = run_seeds(runner, variant, seeds, bucket, fps, progress=False)
        speeds[bucket] = spread([r["mean_speed"] for r in rows])
        flow[bucket] = spread([r["flow_magnitude_px"] for r in rows])
        print(f"  bucket {bucket}: mean speed {speeds[bucket]['mean']:.4f} widths/frame "
              f"(truth {speed_for_bucket(bucket) / fps:.4f}), flow {flow[bucket]['mean']:.3f} px/frame",
              file=sys.stderr, flush=True)
    means = [speeds[b]["mean"] for b in BUCKETS]
    return {"buckets": list(BUCKETS), "mean_speed": [speeds[b] for b in BUCKETS],
            "truth_speed": [speed_for_bucket(b) / fps for b in BUCKETS],
            "spearman": spearman(BUCKETS, np.nan_to_num(means, nan=0.0)),
            # motion measured without the colour tracker: still meaningful when objects are not found
            "flow_magnitude_px": [flow[b] for b in BUCKETS],
            "spearman_flow": spearman(BUCKETS, [flow[b]["mean"] for b in BUCKETS])}


def fmt(stat: dict, digits: int = 3) -> str:
    return (f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f} (median {stat['median']:.{digits}f}, "
            f"p10-p90 {stat['p10']:.{digits}f}-{stat['p90']:.{digits}f}, n {stat['n']})")


def report(figures: dict) -> None:
    print(f"checkpoint: {figures['checkpoint']}   sampling: {figures['sampling']}")
    if "vae_psnr_db" in figures:
        print(f"VAE held-out PSNR: {figures['vae_psnr_db']:.2f} dB (target >= {TARGETS['vae_psnr_db']})")
    for name, summary in figures["variants"].items():
        print(f"\n[{name}] {summary['runs']} seeds at motion_bucket_id {figures['bucket']}, fps {figures['fps']}")
        print(f"  objects of frame 1 kept in the last frame: {summary['objects_kept']:.0%} (target >= {TARGETS['objects_kept']:.0%})")
        by_count = ", ".join(f"{n} shape{'s' if int(n) > 1 else ''} {k:.0%}" for n, k in summary["objects_kept_by_count"].items())
        print(f"    runs keeping all by shape count: {by_count}; single objects kept: {summary['objects_kept_per_object']:.0%}")
        print(f"  objects move (median displacement >= {TARGETS['move_fraction']:.0%} width): "
              f"{summary['objects_move']:.0%} (target >= {TARGETS['objects_move']:.0%})")
        print(f"  median displacement (widths): {fmt(summary['median_move'])}")
        print(f"  mean speed (widths/frame):    {fmt(summary['mean_speed'], 4)}")
        d = summary["direction_spread"]
        print(f"  direction of motion: R {d['R']:.2f}, circular std {d['circular_std_deg']:.0f} deg over {d['n']} objects; "
              f"error vs the generator's own direction {fmt(summary['direction_error_vs_truth_deg'], 0)} deg")
        for key, label in (("change_inside", "change inside the objects' first-frame area (levels)"),
                           ("change_outside", "change outside it (levels)"),
                           ("flow_magnitude_px", "Farneback flow magnitude (px/frame)"),
                           ("flow_divergence", "flow divergence"), ("warp_error", "flow warp error (levels)"),
                           ("colour_drift", "colour drift, 2nd half vs 1st (dE)"), ("flicker", "flicker (L)"),
                           ("objmc", "ObjMC (px)")):
            if key in summary:
                line = f"  {label}: {fmt(summary[key])}"
                base = figures["variants"].get(BASELINE.name, {}).get(key)
                if name != BASELINE.name and base and base["mean"]:
                    line += f"   ratio vs plain {summary[key]['mean'] / base['mean']:.2f}x"
                print(line)
    if "bucket_sweep" in figures:
        sweep = figures["bucket_sweep"]
        print(f"\nmean speed by motion_bucket_id ({sweep['seeds']} seeds each, fps {figures['fps']}):")
        for b, s, truth, f in zip(sweep["buckets"], sweep["mean_speed"], sweep["truth_speed"], sweep["flow_magnitude_px"]):
            print(f"  {b:4d}: {s['mean']:.4f} ± {s['std']:.4f} widths/frame (training data: {truth:.4f}); "
                  f"Farneback flow {f['mean']:.3f} ± {f['std']:.3f} px/frame")
        print(f"  Spearman {sweep['spearman']:.3f} on tracked speed (target >= {TARGETS['spearman']}), "
              f"{sweep['spearman_flow']:.3f} on flow magnitude")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="default: the tiny trained SVD (nodes/svd/weights/)")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--seed-base", type=int, default=EVAL_SEED_BASE,
                        help="the first seed (another set, e.g. 930000, checks a choice made on the default set)")
    parser.add_argument("--bucket-seeds", type=int, default=8, help="seeds per motion bucket in the sweep")
    parser.add_argument("--bucket", type=int, default=127)
    parser.add_argument("--fps", type=int, default=6)
    parser.add_argument("--steps", type=int, default=Sampling.steps)
    parser.add_argument("--cfg", type=float, default=Sampling.cfg)
    parser.add_argument("--min-cfg", type=float, default=Sampling.min_cfg, help="VideoLinearCFGGuidance's cfg at frame 1")
    parser.add_argument("--sampler", default=Sampling.sampler)
    parser.add_argument("--scheduler", default=Sampling.scheduler)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    runner = MotionRunner(args.checkpoint, Sampling(steps=args.steps, cfg=args.cfg, min_cfg=args.min_cfg,
                                                    sampler=args.sampler, scheduler=args.scheduler))
    seeds = [args.seed_base + i for i in range(args.seeds)]
    figures = {"checkpoint": str(runner.checkpoint), "sampling": vars(runner.sampling), "bucket": args.bucket,
               "fps": args.fps, "variants": {}}
    figures["vae_psnr_db"] = vae_psnr(runner.checkpoint)
    for variant in [BASELINE, *VARIANTS] if seeds else []:
        figures["variants"][variant.name] = summarise(run_seeds(runner, variant, seeds, args.bucket, args.fps))
    if args.bucket_seeds:
        sweep_seeds = [args.seed_base + i for i in range(args.bucket_seeds)]
        figures["bucket_sweep"] = bucket_sweep(runner, BASELINE, sweep_seeds, args.fps)
        figures["bucket_sweep"]["seeds"] = args.bucket_seeds
    figures["seconds"] = time.perf_counter() - started
    report(figures)
    print(f"\n{figures['seconds']:.0f} s, load average {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
