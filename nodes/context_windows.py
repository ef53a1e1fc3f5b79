"""Context windows: denoise a clip longer than the model's in overlapping windows, fused every step.

ComfyUI's `ContextWindowsManual` semantics (0.3.64's, plus the inputs later versions added), written
from its documentation and behaviour:
- a schedule turns (frames, step) into lists of frame indices (`window_indices`);
- each window is denoised on its own and its output blended back with per-position weights
  (`fuse_weights`); every frame's result is the weighted mean of the windows that hold it;
- what one window's call sees (`WindowCall`, `plan_window`): with `causal_window_fix` the frame
  before the window rides along in front as context and its output is dropped; the positions in
  `cond_retain_index_list` take the conditioning of that absolute frame, those in
  `latent_retain_index_list` the latent of that absolute frame (as reference: their outputs are
  dropped, the frames they stand in for come from the windows overlapping them);
- `split_conds_to_windows`: a branch with several conditioning entries (ConditioningCombine) gives
  each window only the entry of its region of the clip;
- FreeNoise (arXiv 2310.15169) makes each window's new frames start from a shuffle of the noise
  of the frames before them (`freenoise`), so neighbouring windows begin alike.
`dim` is the latent dimension the windows run along: 0, the frames (SVD's latent is [frames, 4, h, w]),
or 2 / 3, the height / width (spatial windows over a tall or wide latent).

Functions on index lists and tensors, and `patch_model`, which plugs them into a MODEL's network calls;
the node is `ContextWindowsManual` in `nodes/long_video.py`.
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


FRAMES_DIM = 0
SPATIAL_DIMS = (2, 3)   # height, width of a [frames, channels, height, width] latent


@dataclass(frozen=True)
class ContextWindows:
    """ContextWindowsManual's settings (ComfyUI's defaults)."""
    length: int = 16
    overlap: int = 4
    schedule: str = STANDARD_STATIC
    stride: int = 1
    closed_loop: bool = False
    fuse_method: str = PYRAMID
    dim: int = FRAMES_DIM
    freenoise: bool = False
    cond_retain: tuple[int, ...] = ()
    split_conds: bool = False
    latent_retain: tuple[int, ...] = ()
    causal_window_fix: bool = True

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
        if self.dim != FRAMES_DIM and self.dim not in SPATIAL_DIMS:
            raise ValueError(f"dim must be {FRAMES_DIM} (frames) or one of {SPATIAL_DIMS} (height, width), got {self.dim}")
        for name, positions in (("cond_retain_index_list", self.cond_retain),
                                ("latent_retain_index_list", self.latent_retain)):
            if any(p < 0 for p in positions):
                raise ValueError(f"{name} holds window positions (0 = a window's first), got {list(positions)}")

    def applies_to(self, frames: int) -> bool:
        """Windows are used only for a clip longer than one window (ComfyUI's rule)."""
        return frames > self.length

    def windows(self, frames: int, step: int = 0) -> list[list[int]]:
        return window_indices(self.schedule, frames, self.length, self.overlap, self.stride,
                              self.closed_loop, step)

    def calls(self, frames: int, step: int = 0) -> list[WindowCall]:
        return [plan_window(window, self) for window in self.windows(frames, step)]


@dataclass(frozen=True)
class WindowCall:
    """One window's model call. Position i of the call gets latent frame `latent[i]` and the
    conditioning of frame `cond[i]`; `kept` pairs (position, frame of `window`) say which outputs
    are fused into the clip, with the weight of that frame's place in the window."""
    window: tuple[int, ...]
    latent: tuple[int, ...]
    cond: tuple[int, ...]
    kept: tuple[tuple[int, int], ...]

    @staticmethod
    def plain(window) -> WindowCall:
        """The window itself: every position its own frame, every output kept."""
        window = tuple(window)
        return WindowCall(window, window, window, tuple((i, i) for i in range(len(window))))

    def region(self, regions: int, frames: int) -> int:
        """Which of `regions` equal parts of the clip the window's centre falls in (ComfyUI's rule)."""
        centre = (min(self.window) + max(self.window)) / (2 * frames)
        return min(max(int(centre * regions), 0), regions - 1)


def plan_window(window: Sequence[int], settings: ContextWindows) -> WindowCall:
    """The call for one window under the settings' causal fix and retain lists (module docstring)."""
    latent = list(window)
    offset = 0
    if settings.causal_window_fix and window[0] > 0:
        latent.insert(0, window[0] - 1)
        offset = 1
    cond = list(latent)
    for position in settings.cond_retain:
        if position < len(cond):
            cond[position] = position
    dropped = set()
    for position in settings.latent_retain:
        if position < len(latent) and latent[position] != position:
            latent[position] = position
            dropped.add(position)
    kept = tuple((i + offset, i) for i in range(len(window)) if i + offset not in dropped)
    return WindowCall(tuple(window), tuple(latent), tuple(cond), kept)


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

def windowed(call: Callable, x: torch.Tensor, windows: Sequence, method: str, overlap: int,
             dim: int = 0, check: Callable[[], None] | None = None):
    """`call(x_window, window_call)` on every window, fused by `method` along `dim`.

    `windows` are `WindowCall`s or plain index lists; x_window holds the call's latent positions.
    `call` may return one tensor or a tuple (cond and uncond predictions, say); the result has the
    same form, each at full length along `dim`. Weights are normalised per frame before summing, so
    one window covering the clip returns the call's output exactly. `check()` runs between windows
    (interrupts)."""
    frames = x.shape[dim]
    calls = [w if isinstance(w, WindowCall) else WindowCall.plain(w) for w in windows]
    shares = []
    totals = torch.zeros(frames, dtype=torch.float32)
    for plan in calls:
        weights = fuse_weights(method, plan.window, frames, overlap)
        targets = [plan.window[i] for _, i in plan.kept]
        kept_weights = torch.tensor([weights[i] for _, i in plan.kept], dtype=torch.float32)
        totals.index_add_(0, torch.tensor(targets, dtype=torch.long), kept_weights)
        shares.append((targets, kept_weights))
    if bool((totals <= 0).any()):
        missing = torch.nonzero(totals <= 0).flatten().tolist()
        dropped = any(len(plan.kept) < len(plan.window) for plan in calls)
        raise ValueError(f"context windows leave frames {missing[:10]} uncovered"
                         + (" (latent_retain_index_list takes the place of frames no other window holds)"
                            if dropped else ""))
    fused = None
    single = False
    for plan, (targets, weights) in zip(calls, shares):
        if check is not None:
            check()
        out = call(x.index_select(dim, torch.tensor(plan.latent, device=x.device)), plan)
        if isinstance(out, torch.Tensor):
            out, single = (out,), True
        positions = torch.tensor([p for p, _ in plan.kept], device=x.device)
        index = torch.tensor(targets, device=x.device)
        share = (weights / totals[targets]).to(x.device)
        shape = [1] * out[0].ndim
        shape[dim] = len(targets)
        if fused is None:
            fused = [o.new_zeros((*o.shape[:dim], frames, *o.shape[dim + 1:])) for o in out]
        for total, o in zip(fused, out):
            total.index_add_(dim, index, o.index_select(dim, positions) * share.to(o.dtype).reshape(shape))
    return fused[0] if single else tuple(fused)


def _entry_sources(plan: WindowCall, chunks: int, entries, frames: int) -> list[int]:
    """Whose conditioning each chunk of a batched call takes in this window. With split_conds_to_windows
    (`entries`: (branch, entry, entries in the branch) per chunk), a branch with several entries takes
    the entry for the window's region in all its chunks, so they all predict that entry (entries batched
    apart keep their own). Every chunk still runs, so the batch keeps its cond/uncond layout."""
    sources = list(range(chunks))
    for chunk, (branch, number, count) in enumerate(entries or ()):
        if count > 1:
            wanted = plan.region(count, frames)
            sources[chunk] = next((c for c, e in enumerate(entries) if e[0] == branch and e[1] == wanted), chunk)
    return sources


def windowed_rows(run: Callable, x: torch.Tensor, sigma: torch.Tensor, row_args: dict, chunks: int,
                  settings: ContextWindows, step: int = 0, check: Callable[[], None] | None = None,
                  entries: list | None = None):
    """A batched video call through context windows: x holds `chunks` videos of T frames as rows
    [chunk, frame] (cond and uncond, say); `sigma` and every tensor in `row_args` have one row per
    row of x. Each window runs `run(x_rows, sigma_rows, args_rows, window_frames)` on the same
    positions of every chunk (its latent frames; the conditioning rows of its `cond` frames), and
    the kept outputs are fused per frame. Other values pass through. `entries` (branch, entry,
    entries in the branch) per chunk lets split_conds_to_windows pick each window's entry."""
    rows = x.shape[0]
    frames = rows // chunks
    sigma = sigma.reshape(-1).expand(rows)
    entries = entries if settings.split_conds else None

    def call(x_window, plan: WindowCall):
        sources = _entry_sources(plan, chunks, entries, frames)
        picked = torch.tensor([sources[c] * frames + f for c in range(chunks) for f in plan.cond], device=x.device)
        latent_rows = torch.tensor([c * frames + f for c in range(chunks) for f in plan.latent], device=x.device)
        args = {key: value.index_select(0, picked.to(value.device))
                if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == rows else value
                for key, value in row_args.items()}
        out = run(x.index_select(0, latent_rows), sigma.index_select(0, latent_rows.to(sigma.device)), args,
                  len(plan.latent))
        return out.reshape(chunks, len(plan.latent), *out.shape[1:])

    videos = x.reshape(chunks, frames, *x.shape[1:])
    fused = windowed(call, videos, settings.calls(frames, step), settings.fuse_method, settings.overlap,
                     dim=1, check=check)
    return fused.reshape(rows, *fused.shape[2:])


def windowed_spatial(run: Callable, x: torch.Tensor, sigma: torch.Tensor, row_args: dict, chunks: int,
                     settings: ContextWindows, step: int = 0, check: Callable[[], None] | None = None,
                     entries: list | None = None):
    """The same along the latent's height (dim 2) or width (dim 3): each window is a strip of every
    row of x; conditioning tensors as wide as x along that dim (SVD's concat latent) are cut alike."""
    dim, rows = settings.dim, x.shape[0]
    size, per_chunk = x.shape[dim], rows // chunks
    sigma = sigma.reshape(-1).expand(rows)
    entries = entries if settings.split_conds else None

    def call(x_window, plan: WindowCall):
        sources = _entry_sources(plan, chunks, entries, size)
        picked = torch.tensor([sources[c] * per_chunk + r for c in range(chunks) for r in range(per_chunk)],
                              device=x.device)
        args = {}
        for key, value in row_args.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == rows:
                value = value.index_select(0, picked.to(value.device))
                if value.ndim > dim and value.shape[dim] == size:
                    value = value.index_select(dim, torch.tensor(plan.cond, device=value.device))
            args[key] = value
        return run(x_window, sigma, args, None)

    return windowed(call, x, settings.calls(size, step), settings.fuse_method, settings.overlap, dim=dim,
                    check=check)


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
        spatial = settings.dim != FRAMES_DIM
        if spatial and x.ndim <= settings.dim:
            raise ValueError(f"ContextWindowsManual: dim {settings.dim} is past this latent's {x.ndim} dimensions")
        if not settings.applies_to(x.shape[settings.dim] if spatial else x.shape[0] // chunks):
            return apply(x, sigma, **c)
        entries = c.get("transformer_options", {}).get("cond_entries")

        def run(x_rows, sigma_rows, rows, window_frames):
            if window_frames is not None and "num_video_frames" in rows:
                rows = {**rows, "num_video_frames": window_frames}
            return apply(x_rows, sigma_rows, **rows)

        split = windowed_spatial if spatial else windowed_rows
        return split(run, x, sigma, c, chunks, settings, state["step"], entries=entries)

    patched.add_denoise_wrapper(track_step)
    patched.add_model_wrapper(split_into_windows)
    if settings.freenoise:
        transforms = list(patched.transformer_options.get("noise_transforms", ()))
        transforms.append(lambda noise, seed: freenoise(noise, settings.length, settings.overlap, seed or 0,
                                                        settings.dim))
        patched.transformer_options["noise_transforms"] = transforms
    patched.transformer_options["context_windows"] = settings
    return patched
