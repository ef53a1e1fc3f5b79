"""Context windows: denoise a clip longer than the model's in overlapping windows, fused every step.

ComfyUI's `ContextWindowsManual` semantics (0.3.64, plus the later `freenoise` option), written
from its documentation and behaviour:
- a schedule turns (frames, step) into lists of frame indices (`window_indices`);
- each window is denoised on its own and its output blended back with per-position weights
  (`fuse_weights`); every frame's result is the weighted mean of the windows that hold it;
- FreeNoise (arXiv 2310.15169) makes each window's new frames start from a shuffle of the noise
  of the frames before them (`freenoise`), so neighbouring windows begin alike.

Pure functions on index lists and tensors: no model, no node. `nodes/context_window_nodes.py`
plugs them into the sampler's model call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

STANDARD_STATIC = "standard_static"
STANDARD_UNIFORM = "standard_uniform"
LOOPED_UNIFORM = "looped_uniform"
BATCHED = "batched"
SCHEDULES = (STANDARD_STATIC, STANDARD_UNIFORM, LOOPED_UNIFORM, BATCHED)  # ComfyUI's order

PYRAMID, RELATIVE, FLAT, OVERLAP_LINEAR = "pyramid", "relative", "flat", "overlap-linear"
FUSE_METHODS = (PYRAMID, RELATIVE, FLAT, OVERLAP_LINEAR)  # ComfyUI's order


@dataclass(frozen=True)
class ContextWindows:
    """ContextWindowsManual's settings."""
    length: int = 16
    overlap: int = 4
    schedule: str = STANDARD_STATIC
    stride: int = 1
    closed_loop: bool = False
    fuse_method: str = PYRAMID
    dim: int = 0
    freenoise: bool = False

    def __post_init__(self):
        if self.length < 1:
            raise ValueError(f"context_length must be at least 1, got {self.length}")
        if self.overlap < 0:
            raise ValueError(f"context_overlap must be at least 0, got {self.overlap}")
        if self.schedule in (STANDARD_STATIC, STANDARD_UNIFORM, LOOPED_UNIFORM) and self.overlap >= self.length:
            raise ValueError(f"context_overlap ({self.overlap}) must be smaller than context_length "
                             f"({self.length}) for the {self.schedule} schedule")
        if self.stride < 1:
            raise ValueError(f"context_stride must be at least 1, got {self.stride}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown context_schedule {self.schedule!r}; one of {', '.join(SCHEDULES)}")
        if self.fuse_method not in FUSE_METHODS:
            raise ValueError(f"unknown fuse_method {self.fuse_method!r}; one of {', '.join(FUSE_METHODS)}")

    def applies_to(self, frames: int) -> bool:
        """Windows are used only for a clip longer than one window (ComfyUI's rule)."""
        return frames > self.length

    def windows(self, frames: int, step: int = 0) -> list[list[int]]:
        return window_indices(self.schedule, frames, self.length, self.overlap, self.stride,
                              self.closed_loop, step)


# -- schedules ----------------------------------------------------------------------------------------

def window_indices(schedule: str, frames: int, length: int, overlap: int, stride: int = 1,
                   closed_loop: bool = False, step: int = 0) -> list[list[int]]:
    """The frame indices of each window for sampler step `step` (only the uniform schedules move)."""
    if schedule == STANDARD_STATIC:
        return static_windows(frames, length, overlap)
    if schedule == BATCHED:
        return batched_windows(frames, length)
    if schedule == LOOPED_UNIFORM:
        return looped_uniform_windows(frames, length, overlap, stride, closed_loop, step)
    if schedule == STANDARD_UNIFORM:
        return standard_uniform_windows(frames, length, overlap, stride, step)
    raise ValueError(f"unknown context schedule {schedule!r}; one of {', '.join(SCHEDULES)}")


def static_windows(frames: int, length: int, overlap: int) -> list[list[int]]:
    """Windows every length - overlap frames; the last one slides back to end on the last frame."""
    if frames <= length:
        return [list(range(frames))]
    windows = []
    for start in range(0, frames, length - overlap):
        start = min(start, frames - length)
        windows.append(list(range(start, start + length)))
        if start + length >= frames:
            break
    return windows


def batched_windows(frames: int, length: int) -> list[list[int]]:
    """Consecutive windows with no overlap; the last one may be shorter."""
    return [list(range(start, min(start + length, frames))) for start in range(0, max(frames, 1), length)]


def ordered_halving(step: int) -> float:
    """step's 64 bits reversed, as a fraction of 2**64: 0, 1/2, 1/4, 3/4, 1/8, ... for 0, 1, 2, 3, 4."""
    return int(f"{step:064b}"[::-1], 2) / (1 << 64)


def _uniform_windows(frames: int, length: int, overlap: int, stride: int, end_overlap: int,
                     step: int) -> list[list[int]]:
    """Windows at strides 1, 2, 4, ... (as many levels as `stride` allows and the clip needs),
    their start offset moving with the step so seams fall elsewhere each step; they wrap around."""
    levels = min(stride, math.ceil(math.log2(frames / length)) + 1)
    shift = ordered_halving(step)
    pad = int(round(frames * shift))
    windows = []
    for level in range(levels):
        spacing = 1 << level
        first = int(shift * spacing) + pad
        for start in range(first, frames + pad - end_overlap, length * spacing - overlap):
            windows.append([i % frames for i in range(start, start + length * spacing, spacing)])
    return windows


def looped_uniform_windows(frames: int, length: int, overlap: int, stride: int = 1,
                           closed_loop: bool = False, step: int = 0) -> list[list[int]]:
    """Uniform windows that wrap past the last frame to the first; `closed_loop` adds the windows
    that join the end to the start across the whole overlap (for clips meant to loop)."""
    if frames < length:
        return [list(range(frames))]
    return _uniform_windows(frames, length, overlap, stride, 0 if closed_loop else overlap, step)


def standard_uniform_windows(frames: int, length: int, overlap: int, stride: int = 1,
                             step: int = 0) -> list[list[int]]:
    """Uniform windows that never wrap: a window running past the last frame is slid back to end
    on it (and a window is added where that leaves the wrapped-to frames uncovered); repeated
    windows are dropped. A strided window longer than the clip is dropped (ComfyUI would index
    past the last frame there; the dense windows cover those frames anyway)."""
    if frames <= length:
        return [list(range(frames))]
    windows = [w for w in _uniform_windows(frames, length, overlap, stride, overlap, step)
               if _spacing(w, frames) * (len(w) - 1) < frames]
    position = 0
    while position < len(windows):
        window = windows[position]
        wrap = next((i for i in range(1, len(window)) if window[i] < window[i - 1]), None)
        if wrap is not None:
            wrapped_to = window[wrap]
            spacing = _spacing(window, frames)
            windows[position] = list(range(frames - 1 - spacing * (len(window) - 1), frames, spacing))
            following = windows[(position + 1) % len(windows)]
            if wrapped_to not in following:
                windows.insert(position + 1, list(range(wrapped_to, wrapped_to + length)))
        position += 1
    unique = []
    for window in windows:
        if window not in unique:
            unique.append(window)
    return unique


def _spacing(window: list[int], frames: int) -> int:
    return (window[1] - window[0]) % frames if len(window) > 1 else 1


# -- fuse weights -------------------------------------------------------------------------------------

def fuse_weights(method: str, window: Sequence[int], frames: int, overlap: int) -> list[float]:
    """Per-position weights of one window's output. Each frame's fused value is the weighted mean
    of the windows holding it. pyramid: 1, 2, ... up to the middle and back down (FreeNoise's
    weighted average); relative: 1 at the window's centre falling linearly to 0.01 at its ends;
    flat: all 1; overlap-linear: 1, with linear ramps across the overlap on the sides that have
    a neighbouring window (none before frame 0, none after the last frame)."""
    length = len(window)
    if method == FLAT:
        return [1.0] * length
    if method == PYRAMID:
        half = (length + 1) // 2
        rising = list(range(1, half + 1))
        return [float(w) for w in rising + rising[:length - half][::-1]]
    if method == RELATIVE:
        first, last = window[0], window[-1]
        centre, radius = (first + last) / 2, (last - first + 1e-2) / 2
        return [max(1e-2, 1 - abs(i - centre) / radius) for i in window]
    if method == OVERLAP_LINEAR:
        weights = [1.0] * length
        ramp = min(overlap, length)
        if ramp > 0:
            up = torch.linspace(1e-37, 1, ramp).tolist()
            if min(window) > 0:
                weights[:ramp] = up
            if max(window) < frames - 1:
                weights[length - ramp:] = up[::-1]
        return weights
    raise ValueError(f"unknown fuse method {method!r}; one of {', '.join(FUSE_METHODS)}")


# -- the windowed call --------------------------------------------------------------------------------

WindowCall = Callable[[torch.Tensor, list], "torch.Tensor | tuple[torch.Tensor, ...]"]


def windowed(call: WindowCall, x: torch.Tensor, windows: list[list[int]], method: str, overlap: int,
             dim: int = 0, check: Callable[[], None] | None = None):
    """`call(x_window, indices)` on every window, fused by `method` along `dim`.

    `call` may return one tensor or a tuple (cond and uncond predictions, say); the result has the
    same form, each at full length along `dim`. Weights are normalised per frame before summing, so
    one window covering the clip returns the call's output exactly. `check()` runs between windows
    (interrupts)."""
    frames = x.shape[dim]
    per_window = [torch.tensor(fuse_weights(method, w, frames, overlap), dtype=torch.float32) for w in windows]
    totals = torch.zeros(frames, dtype=torch.float32)
    for window, weights in zip(windows, per_window):
        totals.index_add_(0, torch.tensor(window), weights)
    if bool((totals <= 0).any()):
        missing = torch.nonzero(totals <= 0).flatten().tolist()
        raise ValueError(f"context windows leave frames {missing[:10]} uncovered")
    fused = None
    single = False
    for window, weights in zip(windows, per_window):
        if check is not None:
            check()
        index = torch.tensor(window, device=x.device)
        out = call(x.index_select(dim, index), window)
        if isinstance(out, torch.Tensor):
            out, single = (out,), True
        share = (weights / totals[window]).to(x.device)
        shape = [1] * out[0].ndim
        shape[dim] = len(window)
        if fused is None:
            fused = [o.new_zeros((*o.shape[:dim], frames, *o.shape[dim + 1:])) for o in out]
        for total, o in zip(fused, out):
            total.index_add_(dim, index, o * share.to(o.dtype).reshape(shape))
    return fused[0] if single else tuple(fused)


def windowed_rows(run: Callable, x: torch.Tensor, sigma: torch.Tensor, row_args: dict, chunks: int,
                  settings: ContextWindows, step: int = 0, check: Callable[[], None] | None = None):
    """A batched video call through context windows: x holds `chunks` videos of T frames as rows
    [chunk, frame] (cond and uncond, say); `sigma` and every tensor in `row_args` have one row per
    row of x. Each window runs `run(x_rows, sigma_rows, args_rows, window_frames)` on the same
    frames of every chunk, and the outputs are fused per frame. Other values pass through."""
    rows = x.shape[0]
    frames = rows // chunks
    sigma = sigma.reshape(-1).expand(rows)

    def call(x_window, window):
        picked = torch.tensor([c * frames + f for c in range(chunks) for f in window], device=x.device)
        args = {key: value.index_select(0, picked.to(value.device))
                if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == rows else value
                for key, value in row_args.items()}
        out = run(x_window.reshape(-1, *x.shape[1:]), sigma.index_select(0, picked.to(sigma.device)), args,
                  len(window))
        return out.reshape(chunks, len(window), *out.shape[1:])

    videos = x.reshape(chunks, frames, *x.shape[1:])
    fused = windowed(call, videos, settings.windows(frames, step), settings.fuse_method, settings.overlap,
                     dim=1, check=check)
    return fused.reshape(rows, *fused.shape[2:])


def step_of(sigma: float, sample_sigmas) -> int:
    """The sampler step i with sample_sigmas[i] >= sigma > sample_sigmas[i+1] (its substeps too)."""
    for i in range(len(sample_sigmas) - 1):
        if float(sample_sigmas[i + 1]) < sigma <= float(sample_sigmas[i]) * (1 + 1e-6):
            return i
    return max(0, len(sample_sigmas) - 1)


def freenoise(noise: torch.Tensor, length: int, overlap: int, seed: int, dim: int = 0) -> torch.Tensor:
    """FreeNoise's noise rescheduling: the frames each next window adds (length - overlap of them)
    start from a random permutation of the noise of the frames just before them, so windows begin
    from related noise. Returns a new tensor; the permutations come from a generator seeded `seed`."""
    noise = noise.clone()
    frames, delta = noise.shape[dim], length - overlap
    if delta <= 0:
        return noise
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, frames - length, delta):
        place = start + length
        count = min(delta, frames - place)
        if count <= 0:
            break
        source = torch.randperm(count, generator=generator) + start
        target = torch.arange(place, place + count)
        noise.index_copy_(dim, target.to(noise.device), noise.index_select(dim, source.to(noise.device)))
    return noise


# -- on a model -----------------------------------------------------------------------------------------

def patch_model(model, settings: ContextWindows):
    """A clone of a `model.Model` that samples through context windows (ARCHITECTURE.md, "MODEL"):
    a model wrapper splits each batched network call into windows; a denoise wrapper tells it the
    sampler step (the uniform schedules move with it); FreeNoise goes in as a noise transform."""
    patched = model.clone()
    state = {"step": 0}

    def track_step(predict, x, sigma, args):
        if args.get("step") is not None:
            state["step"] = args["step"]
        return predict(x, sigma)

    def split_into_windows(apply, args):
        x, sigma, c, chunks = args["input"], args["timestep"], args["c"], len(args["cond_or_uncond"])
        frames = x.shape[0] // chunks
        if not settings.applies_to(frames):
            return apply(x, sigma, **c)

        def run(x_rows, sigma_rows, rows, window_frames):
            if "num_video_frames" in rows:
                rows = {**rows, "num_video_frames": window_frames}
            return apply(x_rows, sigma_rows, **rows)

        return windowed_rows(run, x, sigma, c, chunks, settings, state["step"])

    patched.add_denoise_wrapper(track_step)
    patched.add_model_wrapper(split_into_windows)
    if settings.freenoise:
        transforms = list(patched.transformer_options.get("noise_transforms", ()))
        transforms.append(lambda noise, seed: freenoise(noise, settings.length, settings.overlap, seed or 0))
        patched.transformer_options["noise_transforms"] = transforms
    patched.transformer_options["context_windows"] = settings
    return patched
