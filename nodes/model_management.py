"""Where models live and how long: device and dtype policy, the loaded-model cache, low-VRAM moves.

The engine owns a byte-bounded LRU (`ctx.resources`); this module decides what goes into it
(keyed by the file's identity and the load options, so an edited file is reloaded and the stale
copy released) and how a
torch module is moved between CPU and GPU. Settings come from the command line through
`ctx.settings`: ``device`` ("auto" | "cpu" | "cuda"), ``dtype`` ("auto" | "fp32" | "fp16" | "bf16"),
``lowvram`` (keep weights on the CPU, move each model to the GPU only while it runs) and
``allow_pickle`` (permit legacy .ckpt/.pt files, through ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import contextlib
import gc
import os
from typing import Any, Callable, Iterator, Mapping

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def compute_device(settings: Mapping[str, Any]) -> torch.device:
    wanted = settings.get("device", "auto")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


def compute_dtype(settings: Mapping[str, Any], device: torch.device) -> torch.dtype:
    """fp32 on the CPU (half precision is slow there and changes results); fp16 on a GPU."""
    wanted = settings.get("dtype", "auto")
    if wanted != "auto":
        return DTYPES[wanted]
    return torch.float16 if device.type == "cuda" else torch.float32


def vae_compute_dtype(settings: Mapping[str, Any], device: torch.device) -> torch.dtype:
    """The VAE's dtype: as `dtype` says, except that it never computes in fp16 (its activations
    overflow there: black or NaN frames), so on a GPU it takes bf16 where supported, else fp32."""
    wanted = settings.get("dtype", "auto")
    if wanted in ("fp32", "bf16"):
        return DTYPES[wanted]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.float32


def file_identity(path: str | os.PathLike) -> tuple:
    """(real path, size, mtime_ns, inode): a file edited in place, replaced under the same name or
    re-pointed by a symlink is a different model. One stat, never a read of the weights; a folder
    model (diffusers layout) is the identities of the files inside it."""
    real = os.path.realpath(path)
    if os.path.isdir(real):
        inside = []
        for dirpath, dirnames, filenames in os.walk(real):
            dirnames.sort()
            for name in sorted(filenames):
                stat = os.stat(os.path.join(dirpath, name))
                inside.append((os.path.relpath(os.path.join(dirpath, name), real), stat.st_size,
                               stat.st_mtime_ns, stat.st_ino))
        return real, tuple(inside)
    stat = os.stat(real)
    return real, stat.st_size, stat.st_mtime_ns, stat.st_ino


def _modules_of(value: Any) -> list[torch.nn.Module]:
    if isinstance(value, torch.nn.Module):
        return [value]
    if callable(getattr(value, "torch_modules", None)):  # bundles such as an SD checkpoint's models
        return list(value.torch_modules())
    return [v for v in getattr(value, "__dict__", {}).values() if isinstance(v, torch.nn.Module)]


def module_nbytes(value: Any) -> int:
    """Bytes held by the parameters and buffers of every torch module reachable from `value`."""
    modules = _modules_of(value)
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            if id(tensor) not in seen and tensor.device.type != "meta":
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def load_cached(ctx, kind: str, path: str | os.PathLike, loader: Callable[[], Any],
                **options: Any) -> Any:
    """Load once per (file, options) and keep it in the engine's model cache across prompts. Copies
    loaded from an older version of the same file are released first: they can never be used again."""
    identity = file_identity(path)
    key = (kind, identity, tuple(sorted(options.items())))
    ctx.resources.add_release_hook(offload_released)
    for old in ctx.resources.keys():
        if _is_model_key(old) and old[0] == kind and old[1][0] == identity[0] and old[1] != identity:
            ctx.resources.release(old)
    return ctx.resources.get_or_load(key, loader, size_of=module_nbytes)


def _is_model_key(key) -> bool:
    return isinstance(key, tuple) and len(key) == 3 and isinstance(key[1], tuple) and bool(key[1])


def offload_released(key, value) -> None:
    """A model leaving the cache gives its GPU memory back; a prompt still holding it moves it back."""
    for module in _modules_of(value):
        if any(p.device.type == "cuda" for p in module.parameters()):
            module.to("cpu")
    release_memory()


def release_memory() -> None:
    """Hand freed tensors back to the system and the GPU driver (a `/free` or cache eviction)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# Kept free beside a model moved to the GPU, for its activations.
INFERENCE_RESERVE = 1 << 30


def _on_device(module: torch.nn.Module, device: torch.device) -> bool:
    return any(p.device.type == device.type for p in module.parameters())


def make_room(needed: int, device: torch.device, resources, keep: torch.nn.Module) -> list[torch.nn.Module]:
    """Move cached models off `device`, least recently used first, until `needed` bytes are free.

    Returns the modules moved (to the CPU, so they come back on their next use)."""
    moved = []
    for value in resources.values():
        if available_memory(device) >= needed + INFERENCE_RESERVE:
            break
        for module in _modules_of(value):
            if module is not keep and _on_device(module, device):
                module.to("cpu")
                moved.append(module)
        if moved and device.type == "cuda":
            torch.cuda.empty_cache()
    return moved


@contextlib.contextmanager
def resident(module: torch.nn.Module, settings: Mapping[str, Any], resources=None) -> Iterator[torch.device]:
    """Run `module` on the compute device; in low-VRAM mode it leaves the GPU afterwards.

    With the model cache given, other models are moved off the GPU first when it is short of memory."""
    device = compute_device(settings)
    if resources is not None and device.type != "cpu" and not _on_device(module, device):
        make_room(module_nbytes(module), device, resources, keep=module)
    module.to(device)
    try:
        yield device
    finally:
        if settings.get("lowvram") and device.type == "cuda":
            module.to("cpu")
            torch.cuda.empty_cache()


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors on `device`: the GPU's free memory, or the system's MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # no way to ask: assume a modest machine


def items_that_fit(bytes_per_item: int, count: int, device: torch.device, headroom: float = 0.7) -> int:
    """How many items (frames) of `bytes_per_item` working memory fit now, at least 1, at most count."""
    budget = int(available_memory(device) * headroom)
    return max(1, min(count, budget // max(1, bytes_per_item)))


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def with_shrinking_chunks(fn: Callable[[int], Any], chunk: int, min_chunk: int = 1) -> Any:
    """Call ``fn(chunk)``; an out-of-memory error halves the chunk size and retries.

    Used for the VAE decode so that a clip too long for the GPU still decodes, in smaller
    groups of frames, instead of failing the prompt.
    """
    chunk = max(min_chunk, chunk)
    while True:
        try:
            return fn(chunk)
        except Exception as error:  # noqa: BLE001 - only OOM is retried, the rest re-raised
            if not is_out_of_memory(error) or chunk <= min_chunk:
                raise
            chunk = max(min_chunk, chunk // 2)
            release_memory()
