"""Long clips that hold together (issue 13, section 5): drift, seams and objects over chained segments.

    .venv/bin/python bench/long_clip_drift.py                          # the trained model, 20 seeds, 10 segments
    .venv/bin/python bench/long_clip_drift.py --seeds 2 --segments 3   # a quick look

For each seed, from the first frame of a yardstick scene (nodes/svd/moving_shapes.py: its objects
are known), these clips are made in-process through the real nodes:
- naive: last-frame chaining (SVDLongClip with overlap 1, each segment started from the clip's last
  frame, no colour matching, no re-anchoring: what ComfyUI's chained workflow does), `--segments`
  segments;
- corrected: SVDLongClip as its defaults make it (`--overlap` frames pinned and cross-faded, every
  segment started from the original image, Lab colour matching to the first segment), the same number
  of segments;
- from-frame: the same, but each segment started from the clip's own frame (condition_on "clip
  frame"), its CLIP embedding half-way back to the original image's;
- windows: one KSampler pass through ContextWindowsManual (standard_static, pyramid, windows of the
  segment length overlapping by `--window-overlap`) over 4x the segment length, as ComfyUI 0.3.64
  windows (no causal_window_fix);
- windows+fix: the same with causal_window_fix (the newest ComfyUI's default: each window after the
  first gets the frame before it in front, its output dropped);
- windows+freenoise (only with --only): windows+fix with FreeNoise's noise rescheduling.
Printed per clip kind, over the seeds (median and spread): colour drift of the background (CIE76
mean dE in Lab of the last segment against the first, background = pixels below the yardstick's
object saturation), the seam ratio (per seam, the largest mean Farneback flow magnitude between two
frames near it, over the median within segments; the clip's median seam, and its worst), the share
of the first frame's objects still in the last frame (bench/motion_metrics.py's tracks; per clip, and
of all the seeds' objects together), how far the objects get from where they started (per object the
largest distance of its centroid from the first frame's, in frame widths; the clip's median), and
seconds per output frame. Then the targets: drift <= 1/3 of naive, seam ratio <= 1.5, objects kept >= 90%. Nothing is asserted.
On random weights the frames are noise and the figures mean nothing; use the trained model.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import motion  # noqa: E402  bench/motion.py: the yardstick's seeds
import motion_metrics as metrics  # noqa: E402

from vidgraph.nodes.svd.moving_shapes import SceneConfig, make_clip  # noqa: E402


# -- metrics on uint8 frames [T,H,W,3] (the yardstick's own, bench/motion_metrics.py, where it has them)

def background(frames: np.ndarray) -> np.ndarray:
    """Pixels below the yardstick's object saturation (its shapes are saturated, backgrounds are not)."""
    saturation = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV)[..., 1] for f in frames]) / 255.0
    mask = saturation < metrics.MIN_SATURATION
    return mask if mask.any() else np.ones_like(mask)


def background_drift(frames: np.ndarray, segment: int) -> float:
    """dE (CIE76) between the mean background Lab colour of the last and the first segment."""
    first, last = frames[:segment], frames[-segment:]
    means = [metrics.lab(part)[background(part)].mean(0) for part in (first, last)]
    return float(np.linalg.norm(means[0] - means[1]))


def seam_ratios(frames: np.ndarray, seams: list[int], reach: int) -> list[float]:
    """Per seam: the largest mean flow magnitude of the frame pairs within `reach` of it, over the
    median of the pairs away from every seam (the motion inside segments)."""
    magnitudes = [float(np.hypot(f[..., 0], f[..., 1]).mean()) for f in metrics.flows(frames)]
    around = [range(max(0, s - reach), min(len(magnitudes), s + reach)) for s in seams]
    near = {i for pairs in around for i in pairs}
    inside = [m for i, m in enumerate(magnitudes) if i not in near]
    if not near or not inside:
        return []
    typical = max(statistics.median(inside), 1e-6)
    return [max(magnitudes[i] for i in pairs) / typical for pairs in around if len(pairs)]


def objects_kept(frames: np.ndarray) -> tuple[int, int]:
    """(how many of the first frame's objects are still there, in their colour and size, in the last
    frame; how many there were)."""
    tracks = metrics.track_objects(frames)
    return sum(metrics.object_kept(track) for track in tracks.values()), len(tracks)


def reach(frames: np.ndarray) -> float:
    """The median over the first frame's objects of the farthest their centroid gets from where it
    started (frame widths): whether a long clip's objects travel or stay about the start's layout."""
    farthest = [np.nanmax(np.hypot(*(track.centres - track.centres[0]).T)) / frames.shape[2]
                for track in metrics.track_objects(frames).values() if track.found.sum() > 1]
    return float(np.median(farthest)) if farthest else float("nan")


# -- clips ----------------------------------------------------------------------------------------------

def yardstick_start(seed: int, scene: SceneConfig) -> torch.Tensor:
    """The first frame [1,H,W,3] of yardstick scene `seed` (bench/motion.py's seeds): its objects are known."""
    first = make_clip(motion.EVAL_SEED_BASE + seed, scene, motion_bucket_id=127, fps=6).first_frame
    return torch.from_numpy(first.astype(np.float32) / 255.0)[None]


class Runner:
    def __init__(self, checkpoint: Path, size: tuple[int, int], video_frames: int, steps: int):
        from vidgraph.engine.context import NodeContext
        from vidgraph.engine.folders import Folders
        from vidgraph.engine.resources import ResourceCache
        from vidgraph.nodes.loaders import ImageOnlyCheckpointLoader
        self.root = Path(tempfile.mkdtemp(prefix="vidgraph-drift-"))
        folders = Folders(base_dir=self.root)
        folders.ensure_dirs()
        (folders.models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (folders.models_dir / "checkpoints" / checkpoint.name).write_bytes(checkpoint.read_bytes())
        self.context = NodeContext("bench", "1", "bench", folders, ResourceCache(), {"device": "cpu", "previews": False})
        self.model, self.clip_vision, self.vae = ImageOnlyCheckpointLoader().load_checkpoint(checkpoint.name, self.context)
        self.size, self.video_frames, self.steps = size, video_frames, steps

    def long_clip(self, image, seed: int, segments: int, overlap: int, color_match: float, reanchor: float,
                  condition_on: str):
        from vidgraph.engine.nodecall import materialized
        from vidgraph.nodes.extension import SVDLongClip
        frames = self.video_frames + (segments - 1) * (self.video_frames - overlap)
        images, fps = SVDLongClip().generate(
            image, frames / 6, self.context, model=self.model, clip_vision=self.clip_vision, vae=self.vae,
            video_frames=self.video_frames, overlap_frames=overlap, motion_bucket_id=127, fps=6,
            augmentation_level=0.0, seed=seed, steps=self.steps, cfg=2.5, sampler_name="euler",
            scheduler="karras", color_match=color_match, reanchor=reanchor, loop=False, condition_on=condition_on)
        seams = [self.video_frames + j * (self.video_frames - overlap) - overlap for j in range(segments - 1)]
        return materialized(images), seams

    def windowed_clip(self, image, seed: int, length: int, overlap: int, causal_window_fix: bool,
                      freenoise: bool = False):
        from vidgraph.engine.nodecall import materialized
        from vidgraph.nodes.conditioning import SVD_img2vid_Conditioning
        from vidgraph.nodes.ksampler import KSampler
        from vidgraph.nodes.latents import VAEDecode
        from vidgraph.nodes.long_video import ContextWindowsManual
        width, height = self.size
        positive, negative, latent = SVD_img2vid_Conditioning().encode(
            self.clip_vision, image, self.vae, width, height, length, 127, 6, 0.0, self.context)
        (model,) = ContextWindowsManual().apply(self.model, self.video_frames, overlap, "standard_static", 1,
                                                False, "pyramid", 0, freenoise=freenoise,
                                                causal_window_fix=causal_window_fix)
        (out,) = KSampler().sample(model, seed, self.steps, 2.5, "euler", "karras", positive, negative, latent,
                                   1.0, self.context)
        (images,) = VAEDecode().decode(out, self.vae, self.context)
        step = self.video_frames - overlap
        seams = list(range(step, length - overlap, step))
        return materialized(images), seams


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images[..., :3].clamp(0, 1) * 255).to(torch.uint8).numpy()


def summary(values) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    return f"{statistics.median(values):8.3f} (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="default: the shipped trained model, else a tiny random-weight one")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--video-frames", type=int, default=8, help="frames per segment (the trained model's 8)")
    parser.add_argument("--overlap", type=int, default=3, help="overlap frames of the corrected chain (2 of 8: the seam jumps)")
    parser.add_argument("--window-overlap", type=int, default=3,
                        help="overlap frames of the context windows (3 of 8; with 2 the windows' seams jump)")
    parser.add_argument("--only", nargs="+", default=None, metavar="KIND",
                        help="clip kinds to run (naive, corrected, from-frame, windows, windows+fix, windows+freenoise; "
                             "default: all but windows+freenoise)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", default="48x48", help="the trained model's 48x48")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint is None:
        from vidgraph.nodes.svd.trained import trained_checkpoint_path
        args.checkpoint = trained_checkpoint_path()
        if not args.checkpoint.exists():
            from vidgraph.nodes.svd.tiny import write_tiny_checkpoint
            args.checkpoint = Path.home() / ".cache" / "vidgraph-bench" / "svd_tiny.safetensors"
            args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            if not args.checkpoint.exists():
                write_tiny_checkpoint(args.checkpoint)
    width, height = (int(v) for v in args.size.split("x"))
    runner = Runner(args.checkpoint, (width, height), args.video_frames, args.steps)
    scene = SceneConfig(width=width, height=height)

    def windows(seed, fix, freenoise=False):
        return runner.windowed_clip(yardstick_start(seed, scene), seed, 4 * args.video_frames, args.window_overlap,
                                    fix, freenoise)

    def chain(seed, overlap, color_match, reanchor, condition_on):
        return runner.long_clip(yardstick_start(seed, scene), seed, args.segments, overlap, color_match, reanchor,
                                condition_on)
    kinds = {
        "naive": lambda seed: chain(seed, 1, 0.0, 0.0, "clip frame"),
        "corrected": lambda seed: chain(seed, args.overlap, 1.0, 0.5, "anchor image"),
        "from-frame": lambda seed: chain(seed, args.overlap, 1.0, 0.5, "clip frame"),
        "windows": lambda seed: windows(seed, False),
        "windows+fix": lambda seed: windows(seed, True),
        "windows+freenoise": lambda seed: windows(seed, True, freenoise=True),
    }
    unknown = set(args.only or ()) - set(kinds)
    if unknown:
        parser.error(f"--only: unknown kinds {sorted(unknown)}; known: {list(kinds)}")
    kinds = {k: v for k, v in kinds.items() if k in (args.only or set(kinds) - {"windows+freenoise"})}
    rows = {kind: [] for kind in kinds}
    for seed in range(args.seeds):
        for kind, make in kinds.items():
            start = time.perf_counter()
            images, seams = make(1000 + seed)
            seconds = time.perf_counter() - start
            frames = to_uint8(images)
            ratios = seam_ratios(frames, seams, reach=2) or [float("nan")]
            kept, objects = objects_kept(frames)
            rows[kind].append({"drift": background_drift(frames, args.video_frames),
                               "seam": statistics.median(ratios), "worst_seam": max(ratios),
                               "kept": kept / objects if objects else float("nan"), "kept_count": (kept, objects),
                               "reach": reach(frames),
                               "s_per_frame": seconds / len(frames)})
        print(f"seed {seed}: " + "  ".join(f"{k} drift {rows[k][-1]['drift']:.2f} seam {rows[k][-1]['seam']:.2f} "
                                            f"kept {rows[k][-1]['kept']:.2f}" for k in kinds), flush=True)
    print(f"\n{args.checkpoint.name}, {args.seeds} seeds, {args.segments} segments of {args.video_frames} "
          f"frames at {width}x{height}, {args.steps} steps")
    for kind in kinds:
        print(f"{kind:10s} drift dE {summary([r['drift'] for r in rows[kind]])}")
        print(f"{'':10s} seam ratio {summary([r['seam'] for r in rows[kind]])}")
        print(f"{'':10s} worst seam {summary([r['worst_seam'] for r in rows[kind]])}")
        kept, objects = (sum(r["kept_count"][i] for r in rows[kind]) for i in (0, 1))
        print(f"{'':10s} objects kept {summary([r['kept'] for r in rows[kind]])}; "
              f"of all objects {kept}/{objects} = {kept / max(objects, 1):.3f}")
        print(f"{'':10s} reach (widths) {summary([r['reach'] for r in rows[kind]])}")
        print(f"{'':10s} s/frame {summary([r['s_per_frame'] for r in rows[kind]])}")
    if "naive" not in rows:
        return 0
    naive = statistics.median([r["drift"] for r in rows["naive"]])
    for kind in [k for k in rows if k != "naive"]:
        drift = statistics.median([r["drift"] for r in rows[kind]])
        print(f"{kind}: drift / naive = {drift / max(naive, 1e-9):.3f} (target <= 0.333)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
