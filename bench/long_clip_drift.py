"""Long clips that hold together (issue 13, section 5): drift, seams and objects over chained segments.

    .venv/bin/python bench/long_clip_drift.py --checkpoint models/checkpoints/trained.safetensors --seeds 20
    .venv/bin/python bench/long_clip_drift.py --seeds 2 --segments 3     # a quick look (tiny random weights)

For each seed, from the same start image, three clips are made in-process through the real nodes:
- naive: last-frame chaining (SVDLongClip with overlap 1, no colour matching, no re-anchoring: what
  ComfyUI's chained workflow does), `--segments` segments;
- corrected: SVDLongClip's defaults (overlap 4 pinned and cross-faded, Lab colour matching to the
  first segment, CLIP embedding half-way back to the start image), the same number of segments;
- windows: one KSampler pass through ContextWindowsManual (standard_static, pyramid) over 4x the
  segment length.
Printed per clip kind, over the seeds (median and spread): colour drift of the background (CIE76
mean dE in Lab of the last segment against the first, background = pixels below 0.45 HSV saturation,
all pixels when there are none), the seam ratio (largest mean Farneback flow magnitude between two
frames near a seam, over the median within segments), objects of the first frame still in the last
one (saturated connected components, matched by hue), and seconds per output frame. Then the
targets: drift <= 1/3 of naive, seam ratio <= 1.5, objects kept >= 90%. Nothing is asserted.
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
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MIN_SATURATION = 0.45


# -- metrics on uint8 frames [T,H,W,3] ------------------------------------------------------------------

def lab(frames: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(f.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB) for f in frames])


def background(frames: np.ndarray) -> np.ndarray:
    saturation = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV)[..., 1] for f in frames]) / 255.0
    mask = saturation < MIN_SATURATION
    return mask if mask.any() else np.ones_like(mask)


def background_drift(frames: np.ndarray, segment: int) -> float:
    """dE (CIE76) between the mean background Lab colour of the last and the first segment."""
    first, last = frames[:segment], frames[-segment:]
    means = [lab(part)[background(part)].mean(0) for part in (first, last)]
    return float(np.sqrt(((means[0] - means[1]) ** 2).sum()))


def flow_magnitudes(frames: np.ndarray) -> np.ndarray:
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.array([np.sqrt((cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0) ** 2).sum(-1)).mean()
                     for a, b in zip(grey, grey[1:])])


def seam_ratio(frames: np.ndarray, seams: list[int], reach: int) -> float:
    """Largest flow magnitude of the frame pairs within `reach` of a seam, over the median elsewhere."""
    magnitudes = flow_magnitudes(frames)
    near = {i for s in seams for i in range(max(0, s - reach), min(len(magnitudes), s + reach))}
    inside = [m for i, m in enumerate(magnitudes) if i not in near]
    if not near or not inside:
        return float("nan")
    return float(max(magnitudes[i] for i in near) / max(statistics.median(inside), 1e-6))


def objects(frame: np.ndarray, min_area: int) -> list[float]:
    """Hues (degrees) of the saturated connected regions of at least `min_area` pixels."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV_FULL)
    mask = ((hsv[..., 1] >= MIN_SATURATION * 255) & (hsv[..., 2] >= 90)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    hue = hsv[..., 0].astype(np.float32) * 360 / 256
    return [float(np.median(hue[labels == i])) for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_area]


def objects_kept(frames: np.ndarray) -> float:
    min_area = max(8, frames.shape[1] * frames.shape[2] // 400)
    first, last = objects(frames[0], min_area), objects(frames[-1], min_area)
    if not first:
        return float("nan")
    kept = sum(any(abs((h - g + 180) % 360 - 180) <= 22 for g in last) for h in first)
    return kept / len(first)


# -- clips ----------------------------------------------------------------------------------------------

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

    def long_clip(self, image, seed: int, segments: int, overlap: int, color_match: float, reanchor: float):
        from vidgraph.engine.nodecall import materialized
        from vidgraph.nodes.extension import SVDLongClip
        frames = self.video_frames + (segments - 1) * (self.video_frames - overlap)
        images, fps = SVDLongClip().generate(
            image, frames / 6, self.context, model=self.model, clip_vision=self.clip_vision, vae=self.vae,
            video_frames=self.video_frames, overlap_frames=overlap, motion_bucket_id=127, fps=6,
            augmentation_level=0.0, seed=seed, steps=self.steps, cfg=2.5, sampler_name="euler",
            scheduler="karras", color_match=color_match, reanchor=reanchor, loop=False)
        seams = [self.video_frames + j * (self.video_frames - overlap) - overlap for j in range(segments - 1)]
        return materialized(images), seams

    def windowed_clip(self, image, seed: int, length: int):
        from vidgraph.engine.nodecall import materialized
        from vidgraph.nodes.conditioning import SVD_img2vid_Conditioning
        from vidgraph.nodes.ksampler import KSampler
        from vidgraph.nodes.latents import VAEDecode
        from vidgraph.nodes.long_video import ContextWindowsManual
        width, height = self.size
        positive, negative, latent = SVD_img2vid_Conditioning().encode(
            self.clip_vision, image, self.vae, width, height, length, 127, 6, 0.0, self.context)
        overlap = max(1, self.video_frames // 4)
        (model,) = ContextWindowsManual().apply(self.model, self.video_frames, overlap, "standard_static", 1,
                                                False, "pyramid", 0)
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
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the tiny random checkpoint")
    parser.add_argument("--image", type=Path, default=REPO / "workflows" / "vidgraph_demo.png")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--video-frames", type=int, default=14)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", default="256x144")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint is None:
        from vidgraph.nodes.svd.tiny import write_tiny_checkpoint
        args.checkpoint = Path.home() / ".cache" / "vidgraph-bench" / "svd_tiny.safetensors"
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if not args.checkpoint.exists():
            write_tiny_checkpoint(args.checkpoint)
    width, height = (int(v) for v in args.size.split("x"))
    picture = Image.open(args.image).convert("RGB").resize((width, height), Image.LANCZOS)
    image = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)[None]
    runner = Runner(args.checkpoint, (width, height), args.video_frames, args.steps)
    kinds = {
        "naive": lambda seed: runner.long_clip(image, seed, args.segments, 1, 0.0, 0.0),
        "corrected": lambda seed: runner.long_clip(image, seed, args.segments, 4, 1.0, 0.5),
        "windows": lambda seed: runner.windowed_clip(image, seed, 4 * args.video_frames),
    }
    rows = {kind: [] for kind in kinds}
    for seed in range(args.seeds):
        for kind, make in kinds.items():
            start = time.perf_counter()
            images, seams = make(1000 + seed)
            seconds = time.perf_counter() - start
            frames = to_uint8(images)
            rows[kind].append({"drift": background_drift(frames, args.video_frames),
                               "seam": seam_ratio(frames, seams, reach=2), "kept": objects_kept(frames),
                               "s_per_frame": seconds / len(frames)})
        print(f"seed {seed}: " + "  ".join(f"{k} drift {rows[k][-1]['drift']:.2f} seam {rows[k][-1]['seam']:.2f}"
                                            for k in kinds), flush=True)
    print(f"\n{args.checkpoint.name}, {args.seeds} seeds, {args.segments} segments of {args.video_frames} "
          f"frames at {width}x{height}, {args.steps} steps")
    for kind in kinds:
        print(f"{kind:10s} drift dE {summary([r['drift'] for r in rows[kind]])}")
        print(f"{'':10s} seam ratio {summary([r['seam'] for r in rows[kind]])}")
        print(f"{'':10s} objects kept {summary([r['kept'] for r in rows[kind]])}")
        print(f"{'':10s} s/frame {summary([r['s_per_frame'] for r in rows[kind]])}")
    naive = statistics.median([r["drift"] for r in rows["naive"]])
    for kind in ("corrected", "windows"):
        drift = statistics.median([r["drift"] for r in rows[kind]])
        print(f"{kind}: drift / naive = {drift / max(naive, 1e-9):.3f} (target <= 0.333)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
