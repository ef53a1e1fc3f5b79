"""Loading SVD checkpoints: the original single file, standalone UNet / VAE / CLIP-vision files and
diffusers-format folders, detected from keys and shapes (never from file names).

The files are read through `nodes/weights.py` (tensor by tensor into modules built on the meta
device); this module knows SVD's key layouts and which weights go where.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..weights import CheckpointError, open_source, read_all, shapes_as_meta, stream_into, widest_float_dtype
from . import clip_vision as clip_mod
from . import vae as vae_mod
from .casting import cast_on_forward
from .cpu_kernels import use_cpu_kernels
from .convert import unet_key_map
from .denoiser import svd_model
from .unet import UNetConfig, VideoUNet, config_from_state_dict as unet_config

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = vae_mod.CHECKPOINT_PREFIX
CLIP_PREFIX = clip_mod.CHECKPOINT_PREFIX
# In the real file but unused: the conditioner's legacy copy of the VAE, and the OpenCLIP text
# tower's leftovers (token/positional embedding, ln_final, text_projection, logit_scale).
IGNORABLE = re.compile(r"conditioner\.embedders\.3\.|conditioner\.embedders\.0\.open_clip\.model\.(?!visual\.)")


def _weight_dtype(stored, compute, low_memory):
    """Weights' dtype: the compute dtype; in low-memory mode 16-bit (the file's own if 16-bit)."""
    if not low_memory or compute.itemsize <= 2:
        return compute
    return stored if stored.itemsize == 2 else torch.float16


def build_unet(source, keys, strip, compute_dtype, low_memory, device, diffusers=False,
               unet_class=VideoUNet, detect_config=unet_config):
    """A UNet (SVD's by default; SD's with `sd.unet.UNet` and its detector) from the `keys` of `source`."""
    names = unet_key_map([k[len(strip):] for k in keys]) if diffusers else {k[len(strip):]: k[len(strip):] for k in keys}
    by_original = {orig: strip + dk for dk, orig in names.items()}
    meta = {orig: torch.empty(source.shape(fk), device="meta") for orig, fk in by_original.items()}
    try:
        cfg = detect_config(meta)
    except (ValueError, KeyError, StopIteration) as error:
        raise CheckpointError(f"{source.path}: cannot detect the UNet config: {error}") from None
    with torch.device("meta"):
        unet = unet_class(cfg)
    stored = widest_float_dtype(source, keys)
    weight_dtype = _weight_dtype(stored, compute_dtype, low_memory)
    kept = _lowest_stage(unet) if weight_dtype.itemsize > stored.itemsize == 2 else []
    dtypes = {key: stored if any(key.startswith(name + ".") for name, _ in kept) else weight_dtype
              for key in unet.state_dict()}
    stream_into(unet, source, by_original, "UNet", dtypes, device, strip)
    if weight_dtype != compute_dtype:
        cast_on_forward(unet)
    for _, module in kept:
        cast_on_forward(module)
    return use_cpu_kernels(unet)


def _lowest_stage(unet) -> list:
    """(name, module) of the blocks at the lowest resolution: the last level's input blocks, the
    middle block and the first level's output blocks. Widening a 16-bit file to fp32 compute, these
    keep the file's 16-bit weights and widen them as they run (exact): they hold a third of SVD-XT's
    weights (0.9 GB less as 16-bit) but see the fewest positions per weight, so the cast costs little
    next to their compute (under 1% at 1024x576)."""
    cfg = unet.config
    per_level = cfg.num_res_blocks
    last = len(cfg.channel_mult) - 1
    names = [f"input_blocks.{1 + last * (per_level + 1) + j}" for j in range(per_level)]
    names += ["middle_block"] + [f"output_blocks.{j}" for j in range(per_level + 1)]
    return [(name, unet.get_submodule(name)) for name in names]


def _build_run_once(module, model_class, what, source, keys, strip, dtype, device):
    """A VAE or CLIP vision model (`module` gives config_from_state_dict) from the `keys` of `source`."""
    meta = shapes_as_meta(source, keys, strip)
    try:
        cfg = module.config_from_state_dict(meta)
    except ValueError as error:
        raise CheckpointError(f"{source.path}: cannot detect the {what} config: {error}") from None
    with torch.device("meta"):
        model = model_class(cfg)
    storage = run_once_storage(widest_float_dtype(source, keys), dtype)
    stream_into(model, source, {k[len(strip):]: k for k in keys}, what, storage, device, strip)
    return _computing_in(model, storage, dtype)


def build_vae(source, keys, strip, dtype, device):
    return _build_run_once(vae_mod, vae_mod.VAE, "VAE", source, keys, strip, dtype, device)


def build_clip_vision(source, keys, strip, dtype, device):
    return _build_run_once(clip_mod, clip_mod.CLIPVision, "CLIP vision", source, keys, strip, dtype, device)


def run_once_storage(stored: torch.dtype, compute: torch.dtype) -> torch.dtype:
    """Weights' dtype for a model that runs once per prompt (VAE, CLIP vision): a 16-bit file stays
    16-bit under fp32 compute. Widening a 16-bit value to fp32 is exact, so the results are those of
    fp32 weights (ComfyUI keeps CLIP vision this way), at half the memory and a negligible cast cost."""
    return stored if stored.itemsize == 2 and compute.itemsize > 2 else compute


def _computing_in(model: nn.Module, storage: torch.dtype, compute: torch.dtype) -> nn.Module:
    if storage != compute:
        cast_on_forward(model)
        model.compute_dtype = compute
    return use_cpu_kernels(model)


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

    def model(self):
        """The MODEL (`nodes/model.py`) that samples with this UNet."""
        return svd_model(self.unet, self.compute_dtype)


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


def load_vae(path, *, dtype: torch.dtype = torch.float32, device="cpu", allow_pickle: bool = False):
    """A VAE alone, in any layout vae.vae_state_dict_from_any accepts (or a whole SVD file)."""
    source = open_source(path, allow_pickle)
    keys = [k for k in source.keys() if k.startswith(VAE_PREFIX)]
    if keys:
        return build_vae(source, keys, VAE_PREFIX, dtype, device)
    try:
        return vae_mod.VAE.from_state_dict(read_all(source), dtype).to(device)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None


def load_clip_vision(path, *, dtype: torch.dtype = torch.float32, device="cpu", allow_pickle: bool = False):
    """A CLIP vision tower alone: OpenCLIP `visual.*`, Hugging Face `vision_model.*`, or a whole SVD file."""
    source = open_source(path, allow_pickle)
    keys = [k for k in source.keys() if k.startswith(CLIP_PREFIX)]
    if keys:
        return build_clip_vision(source, keys, CLIP_PREFIX, dtype, device)
    try:
        return clip_mod.CLIPVision.from_state_dict(read_all(source), dtype=dtype).to(device)
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
