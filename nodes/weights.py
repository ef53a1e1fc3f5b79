"""Model weights from files: safetensors read tensor by tensor, pickle files only on request, and
meta-built modules filled in place. Generic: no model's layout is known here; model files
(`svd/`, ...) import from this module and never the other way round.

Single files are read with plain file reads (no mmap of the whole file, no full state dict), so
peak memory while loading is the target weights plus one tensor. Pickle files load only through
`torch.load(weights_only=True)`, and only when the caller allows them.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from vidgraph.engine.context import check_current_interrupt

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
                      "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
                      "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
if hasattr(torch, "float8_e4m3fn"):
    SAFETENSORS_DTYPES.update({"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2})


class CheckpointError(ValueError):
    """A model file that cannot be loaded; the message names the file and what is wrong."""


# ----------------------------------------------------------------------------------- sources

class SafetensorsFile:
    """A .safetensors file read one tensor at a time (header checked against the file size first)."""

    def __init__(self, path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{self.path}: not a safetensors file ({size} bytes, no header)")
            n = int.from_bytes(head, "little")
            if n > size - 8 or n > 100_000_000:
                raise CheckpointError(f"{self.path}: truncated or not a safetensors file "
                                      f"(header of {n} bytes in a {size}-byte file)")
            try:
                header = json.loads(f.read(n))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise CheckpointError(f"{self.path}: corrupt safetensors header ({error})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: corrupt safetensors header (not a JSON object)")
        self.metadata = header.pop("__metadata__", None) or {}
        self.data_start = 8 + n
        self.entries = {}
        for key, entry in header.items():
            try:
                dtype, shape, (begin, end) = SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise CheckpointError(f"{self.path}: corrupt header entry for {key!r}: {entry}") from None
            nbytes = torch.Size(shape).numel() * dtype.itemsize
            if end - begin != nbytes or begin < 0:
                raise CheckpointError(f"{self.path}: corrupt header: {key} {list(shape)} {entry['dtype']} "
                                      f"needs {nbytes} bytes, offsets give {end - begin}")
            if self.data_start + end > size:
                raise CheckpointError(f"{self.path}: truncated file: {size} bytes, but tensor {key} ends at "
                                      f"byte {self.data_start + end} (incomplete download?)")
            self.entries[key] = (dtype, shape, begin)

    def keys(self):
        return self.entries.keys()

    def shape(self, key):
        return self.entries[key][1]

    def dtype(self, key):
        return self.entries[key][0]

    def read(self, key, file=None, staging=None):
        """The tensor `key`, in a fresh tensor or, given a uint8 `staging` tensor large enough, in that."""
        dtype, shape, begin = self.entries[key]
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        buf = torch.empty(nbytes, dtype=torch.uint8) if staging is None else staging[:nbytes]
        own = file is None
        f = open(self.path, "rb") if own else file
        try:
            f.seek(self.data_start + begin)
            if nbytes and f.readinto(memoryview(buf.numpy())) != nbytes:
                raise CheckpointError(f"{self.path}: truncated while reading {key}")
        finally:
            if own:
                f.close()
        return buf.view(dtype).reshape(shape)

    def nbytes(self, key):
        dtype, shape, _ = self.entries[key]
        return torch.Size(shape).numel() * dtype.itemsize

    def open(self):
        return open(self.path, "rb")


class DictSource:
    """The same interface over an in-memory state dict (pickle files, converted layouts)."""

    def __init__(self, sd, path=""):
        self.sd, self.path, self.metadata = sd, path, {}

    def keys(self):
        return self.sd.keys()

    def shape(self, key):
        return tuple(self.sd[key].shape)

    def dtype(self, key):
        return self.sd[key].dtype

    def read(self, key, file=None, staging=None):
        return self.sd[key]

    def nbytes(self, key):
        return 0  # already in memory: nothing to stage

    def open(self):
        return open(os.devnull, "rb")


def open_source(path, allow_pickle: bool = False):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(f"{path}: pickle-based checkpoints can run code when loaded and are refused; "
                                  "convert it to .safetensors, or allow pickle files explicitly (--allow-pickle)")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file
            raise CheckpointError(f"{path}: cannot be read as a weights-only torch checkpoint ({error})") from None
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CheckpointError(f"{path}: not a state dict of tensors")
        return DictSource(sd, str(path))
    return SafetensorsFile(path)


def shapes_as_meta(source, keys, strip: str = "") -> dict:
    """{key without `strip`: meta tensor}: enough for the config detectors, nothing allocated."""
    return {k[len(strip):]: torch.empty(source.shape(k), dtype=source.dtype(k), device="meta") for k in keys}


# ----------------------------------------------------------------------------------- loading

def stream_into(model: nn.Module, source, names: dict, what: str, dtype=None, device="cpu",
                prefix: str = "") -> nn.Module:
    """Fill a meta-built `model` from `source`, tensor by tensor. `names` maps the model's state-dict
    keys to the source's keys (`prefix` + key, for the messages, where a key is missing). `dtype`: the
    floating tensors' dtype (None: the file's), or {model key: dtype} for a per-tensor choice.
    Missing, unexpected or mis-shaped keys raise one CheckpointError."""
    expected = model.state_dict(keep_vars=True)
    missing = sorted(prefix + k for k in expected.keys() - names.keys())
    unexpected = sorted(names[k] for k in names.keys() - expected.keys())
    misshaped = [f"{names[k]} {list(source.shape(names[k]))} (expected {list(v.shape)})"
                 for k, v in expected.items() if k in names and tuple(source.shape(names[k])) != tuple(v.shape)]
    if missing or unexpected or misshaped:
        lines = [f"{source.path}: the {what} weights do not fit the detected config:"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items:
                lines.append(f"  {label} ({len(items)}): " + ", ".join(items[:10]) + (" ..." if len(items) > 10 else ""))
        raise CheckpointError("\n".join(lines))
    for key, current, tensor in _read_ahead(source, [(k, names[k], v) for k, v in expected.items()], dtype, device):
        check_current_interrupt()  # a load of many GB stops on interrupt between tensors (ComfyUI #1920)
        owner_name, _, attr = key.rpartition(".")
        owner = model.get_submodule(owner_name)
        if isinstance(current, nn.Parameter):
            owner._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
        else:
            owner._buffers[attr] = tensor
    return model.eval().requires_grad_(False)


def _read_ahead(source, items, dtype, device):
    """Yield (model key, current, tensor in its target dtype/device). A worker thread reads the next
    tensor while this one converts; tensors that need converting are read into one of two reused
    staging buffers (no fresh pages per tensor), the others straight into their own storage."""
    def target_of(key, source_key):
        stored = source.dtype(source_key)
        wanted = dtype.get(key) if isinstance(dtype, dict) else dtype
        return wanted if wanted is not None and stored.is_floating_point else stored

    def needs_staging(key, source_key):
        return target_of(key, source_key) != source.dtype(source_key) or torch.device(device).type != "cpu"

    staging = [torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.uint8)]

    def read(i, f):
        key, source_key, _ = items[i]
        if not needs_staging(key, source_key):
            return source.read(source_key, f)
        n = source.nbytes(source_key)
        if staging[i % 2].numel() < n:
            staging[i % 2] = torch.empty(n, dtype=torch.uint8)
        return source.read(source_key, f, staging[i % 2] if n else None)

    with source.open() as f, ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, 0, f) if items else None
        for i, (key, source_key, current) in enumerate(items):
            tensor = pending.result()
            pending = pool.submit(read, i + 1, f) if i + 1 < len(items) else None
            # .to() copies out of the staging buffer before the worker may reuse it (two reads later)
            yield key, current, tensor.to(device=device, dtype=target_of(key, source_key),
                                          copy=needs_staging(key, source_key))

def load_exactly(model: nn.Module, sd, dtype, what: str) -> nn.Module:
    """Fill a meta-built `model` from an in-memory state dict in its own layout, with stream_into's
    key and shape checks."""
    return stream_into(model, DictSource(sd, what + " state dict"), {k: k for k in sd}, what, dtype)


def widest_float_dtype(source, keys) -> torch.dtype:
    """The widest floating dtype among `keys` of `source` (float32 when none is floating)."""
    floats = {source.dtype(k) for k in keys if source.dtype(k).is_floating_point}
    return max(floats, key=lambda d: d.itemsize) if floats else torch.float32


def read_all(source) -> dict:
    """Every tensor of `source` in memory (for layouts that must be converted as a whole)."""
    with source.open() as f:
        return {k: source.read(k, f) for k in source.keys()}
