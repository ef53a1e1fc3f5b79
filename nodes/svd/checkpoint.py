"""Loading SVD checkpoints: the original single file, standalone UNet / VAE / CLIP-vision files and
diffusers-format folders, detected from keys and shapes (never from file names).

Single files are read tensor by tensor with plain file reads into modules built on the meta device,
so peak memory while loading is the target weights plus one tensor (no mmap of the whole file,
no full state dict). Pickle files load only through `torch.load(weights_only=True)`, and only when
the caller allows them.
"""
from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import clip_vision as clip_mod
from . import vae as vae_mod
from .casting import cast_on_forward
from .convert import unet_key_map
from .denoiser import VDenoiser
from .unet import UNetConfig, VideoUNet, config_from_state_dict as unet_config

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = vae_mod.CHECKPOINT_PREFIX
CLIP_PREFIX = clip_mod.CHECKPOINT_PREFIX
# In the real file but unused: the conditioner's legacy copy of the VAE, and the OpenCLIP text
# tower's leftovers (token/positional embedding, ln_final, text_projection, logit_scale).
IGNORABLE = re.compile(r"conditioner\.embedders\.3\.|conditioner\.embedders\.0\.open_clip\.model\.(?!visual\.)")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
if hasattr(torch, "float8_e4m3fn"):
    _DTYPES.update({"F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2})


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
                dtype, shape, (begin, end) = _DTYPES[entry["dtype"]], tuple(entry["shape"]), entry["data_offsets"]
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
    keys to the source's keys (`prefix` + key, for the messages, where a key is missing).
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
    def target_of(source_key):
        stored = source.dtype(source_key)
        return dtype if dtype is not None and stored.is_floating_point else stored

    def needs_staging(source_key):
        return target_of(source_key) != source.dtype(source_key) or torch.device(device).type != "cpu"

    staging = [torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.uint8)]

    def read(i, f):
        source_key = items[i][1]
        if not needs_staging(source_key):
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
            yield key, current, tensor.to(device=device, dtype=target_of(source_key), copy=needs_staging(source_key))


def _dtype_of(source, keys):
    floats = {source.dtype(k) for k in keys if source.dtype(k).is_floating_point}
    return max(floats, key=lambda d: d.itemsize) if floats else torch.float32


def _weight_dtype(stored, compute, low_memory):
    """Weights' dtype: the compute dtype; in low-memory mode 16-bit (the file's own if 16-bit)."""
    if not low_memory or compute.itemsize <= 2:
        return compute
    return stored if stored.itemsize == 2 else torch.float16


def build_unet(source, keys, strip, compute_dtype, low_memory, device, diffusers=False) -> VideoUNet:
    names = unet_key_map([k[len(strip):] for k in keys]) if diffusers else {k[len(strip):]: k[len(strip):] for k in keys}
    by_original = {orig: strip + dk for dk, orig in names.items()}
    meta = {orig: torch.empty(source.shape(fk), device="meta") for orig, fk in by_original.items()}
    try:
        cfg = unet_config(meta)
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{source.path}: cannot detect the UNet config: {error}") from None
    with torch.device("meta"):
        unet = VideoUNet(cfg)
    weight_dtype = _weight_dtype(_dtype_of(source, keys), compute_dtype, low_memory)
    stream_into(unet, source, by_original, "UNet", weight_dtype, device, strip)
    if weight_dtype != compute_dtype:
        cast_on_forward(unet)
    return unet


def _build_run_once(module, model_class, what, source, keys, strip, dtype, device):
    """A VAE or CLIP vision model (`module` gives config_from_state_dict) from the `keys` of `source`."""
    meta = shapes_as_meta(source, keys, strip)
    try:
        cfg = module.config_from_state_dict(meta)
    except ValueError as error:
        raise CheckpointError(f"{source.path}: cannot detect the {what} config: {error}") from None
    with torch.device("meta"):
        model = model_class(cfg)
    storage = _run_once_storage(_dtype_of(source, keys), dtype)
    stream_into(model, source, {k[len(strip):]: k for k in keys}, what, storage, device, strip)
    return _computing_in(model, storage, dtype)


def build_vae(source, keys, strip, dtype, device):
    return _build_run_once(vae_mod, vae_mod.VAE, "VAE", source, keys, strip, dtype, device)


def build_clip_vision(source, keys, strip, dtype, device):
    return _build_run_once(clip_mod, clip_mod.CLIPVision, "CLIP vision", source, keys, strip, dtype, device)


def _run_once_storage(stored: torch.dtype, compute: torch.dtype) -> torch.dtype:
    """Weights' dtype for a model that runs once per prompt (VAE, CLIP vision): a 16-bit file stays
    16-bit under fp32 compute. Widening a 16-bit value to fp32 is exact, so the results are those of
    fp32 weights (ComfyUI keeps CLIP vision this way), at half the memory and a negligible cast cost."""
    return stored if stored.itemsize == 2 and compute.itemsize > 2 else compute


def _computing_in(model: nn.Module, storage: torch.dtype, compute: torch.dtype) -> nn.Module:
    if storage != compute:
        cast_on_forward(model)
        model.compute_dtype = compute
    return model


@dataclass
class SVDModels:
    """What an SVD checkpoint holds, ready to run. `variant` is "svd" (temporal video decoder) or
    "svd_image_decoder" (plain 2-D decoder); the frame count (14 / 25) is not in the weights."""
    unet: VideoUNet
    vae: object | None
    clip_vision: object | None
    variant: str
    compute_dtype: torch.dtype
    configs: dict = field(default_factory=dict)
    ignored_keys: int = 0

    def denoiser(self) -> VDenoiser:
        return VDenoiser(self.unet, self.compute_dtype)


def load_checkpoint(path, *, dtype: torch.dtype = torch.float32, low_memory: bool = False,
                    device="cpu", allow_pickle: bool = False, vae_dtype: torch.dtype | None = None) -> SVDModels:
    """An SVD checkpoint: a single file (original layout) or a diffusers folder.

    dtype: the compute dtype (fp32 on the CPU). low_memory: keep the UNet's weights in 16 bits and
    cast each layer to `dtype` as it runs. The VAE and CLIP vision compute in `dtype` too (VAE:
    `vae_dtype` when given) and keep a 16-bit file's weights in 16 bits under fp32 compute."""
    path = Path(path)
    if path.is_dir():
        return load_diffusers_folder(path, dtype=dtype, low_memory=low_memory, device=device)
    return load_from_source(open_source(path, allow_pickle), dtype=dtype, low_memory=low_memory, device=device,
                            vae_dtype=vae_dtype)


def group_keys(keys) -> dict[str, list]:
    """Sort a single file's keys into unet / vae / clip / ignored (known leftovers) / unexpected."""
    groups = {"unet": [], "vae": [], "clip": [], "ignored": [], "unexpected": []}
    for key in keys:
        group = ("unet" if key.startswith(UNET_PREFIX) else "vae" if key.startswith(VAE_PREFIX)
                 else "clip" if key.startswith(CLIP_PREFIX) else "ignored" if IGNORABLE.match(key) else "unexpected")
        groups[group].append(key)
    return groups


def load_from_source(source, *, dtype: torch.dtype = torch.float32, low_memory: bool = False, device="cpu",
                     vae_dtype: torch.dtype | None = None) -> SVDModels:
    """The single-file path on any source (a DictSource of meta tensors with device="meta" builds
    the whole model without allocating: the conformance tests use that)."""
    groups = group_keys(source.keys())
    if not groups["unet"]:
        raise CheckpointError(f"{source.path}: not an SVD checkpoint: no {UNET_PREFIX}* keys{_what_is_it(source)}")
    if groups["unexpected"]:
        keys = sorted(groups["unexpected"])
        raise CheckpointError(f"{source.path}: unexpected keys in an SVD checkpoint ({len(keys)}): "
                              + ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else ""))
    unet = build_unet(source, groups["unet"], UNET_PREFIX, dtype, low_memory, device)
    vae = build_vae(source, groups["vae"], VAE_PREFIX, vae_dtype or dtype, device) if groups["vae"] else None
    clip = build_clip_vision(source, groups["clip"], CLIP_PREFIX, dtype, device) if groups["clip"] else None
    return _bundle(unet, vae, clip, dtype, len(groups["ignored"]))


def _bundle(unet, vae, clip, dtype, ignored=0) -> SVDModels:
    temporal = vae is None or vae.config.temporal
    configs = {"unet": unet.config, "vae": vae and vae.config, "clip_vision": clip and clip.config}
    return SVDModels(unet, vae, clip, "svd" if temporal else "svd_image_decoder", dtype, configs, ignored)


def _what_is_it(source) -> str:
    keys = list(source.keys())
    if any(k.startswith(("encoder.", "decoder.", VAE_PREFIX)) for k in keys):
        return " (it looks like a VAE file: load it as a VAE)"
    if any("vision_model." in k or k.startswith(("visual.", "conv1.")) for k in keys):
        return " (it looks like a CLIP vision file: load it as CLIP vision)"
    if any(k.startswith(("down_blocks.", "input_blocks.")) for k in keys):
        return " (it looks like a standalone UNet: load it with load_unet)"
    return f" (first keys: {', '.join(sorted(keys)[:3])})"


def load_unet(path, *, dtype: torch.dtype = torch.float32, low_memory: bool = False, device="cpu",
              allow_pickle: bool = False) -> VideoUNet:
    """A UNet alone: original keys (with or without `model.diffusion_model.`) or diffusers keys."""
    source = open_source(path, allow_pickle)
    keys = list(source.keys())
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return build_unet(source, [k for k in keys if k.startswith(UNET_PREFIX)], UNET_PREFIX, dtype, low_memory, device)
    diffusers = any(k.startswith("down_blocks.") for k in keys)
    return build_unet(source, keys, "", dtype, low_memory, device, diffusers=diffusers)


def _read_all(source) -> dict:
    with source.open() as f:
        return {k: source.read(k, f) for k in source.keys()}


def load_vae(path, *, dtype: torch.dtype = torch.float32, device="cpu", allow_pickle: bool = False):
    """A VAE alone, in any layout vae.vae_state_dict_from_any accepts (or a whole SVD file)."""
    source = open_source(path, allow_pickle)
    keys = [k for k in source.keys() if k.startswith(VAE_PREFIX)]
    if keys:
        return build_vae(source, keys, VAE_PREFIX, dtype, device)
    try:
        return vae_mod.VAE.from_state_dict(_read_all(source), dtype).to(device)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_clip_vision(path, *, dtype: torch.dtype = torch.float32, device="cpu", allow_pickle: bool = False):
    """A CLIP vision tower alone: OpenCLIP `visual.*`, Hugging Face `vision_model.*`, or a whole SVD file."""
    source = open_source(path, allow_pickle)
    keys = [k for k in source.keys() if k.startswith(CLIP_PREFIX)]
    if keys:
        return build_clip_vision(source, keys, CLIP_PREFIX, dtype, device)
    try:
        return clip_mod.CLIPVision.from_state_dict(_read_all(source), dtype=dtype).to(device)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _diffusers_weights(folder: Path, names) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: none of {', '.join(names)} found")


def load_diffusers_folder(folder, *, dtype: torch.dtype = torch.float32, low_memory: bool = False,
                          device="cpu") -> SVDModels:
    """A diffusers StableVideoDiffusionPipeline folder: unet/, vae/, image_encoder/."""
    folder = Path(folder)
    if not (folder / "unet").is_dir():
        raise CheckpointError(f"{folder}: not a diffusers SVD folder (no unet/ subfolder)")
    weights = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"]
    unet = load_unet(_diffusers_weights(folder / "unet", weights), dtype=dtype, low_memory=low_memory, device=device)
    vae = clip = None
    if (folder / "vae").is_dir():
        vae = load_vae(_diffusers_weights(folder / "vae", weights), dtype=dtype, device=device)
    if (folder / "image_encoder").is_dir():
        clip = load_clip_vision(_diffusers_weights(folder / "image_encoder", ["model.safetensors", "model.fp16.safetensors"]),
                                dtype=dtype, device=device)
    return _bundle(unet, vae, clip, dtype)
