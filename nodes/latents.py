"""Latents and the VAE: encode, decode (chunked, tiled), save/load `.latent` files, batch slicing.

A LATENT is ComfyUI's dict ``{"samples": [frames, 4, H/8, W/8]}`` holding the VAE's raw
(unscaled) latent; the 0.18215 scale is applied inside the sampler, as ComfyUI does, so a
`.latent` file written here holds the same numbers as ComfyUI's.
"""
from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .common import CONTEXT, SAVE_HIDDEN, NodeInputError, folders_in_scope, require_model
from .model import LATENT_SPACE_KEY
from .image_io import check_rgb_batch
from .input_files import input_file_hash
from .outputs import embedded_metadata, output_files
from .svd.vae import SCALE_FACTOR
from .vae_coding import decode_latent, encode_pixels

# ComfyUI's marker: files without it predate unscaled storage and hold scaled latents.
FORMAT_MARKER = "latent_format_version_0"
MAX_BATCH = 4096


def _samples(latent, node: str, input_name: str = "samples") -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise NodeInputError(node, input_name, "expected a LATENT with 'samples' [frames, C, h, w]")
    return samples


def _vae_input(latent, vae, node: str) -> torch.Tensor:
    """The samples of a decode node's LATENT, checked against its VAE (at least one frame, its channels)."""
    samples = _samples(latent, node)
    require_model(vae, "decode", "VAE", node, "vae")
    channels = getattr(getattr(vae, "config", None), "z_channels", samples.shape[1])
    if samples.shape[0] == 0 or samples.shape[1] != channels:
        raise NodeInputError(node, "samples", f"the VAE decodes latents [frames >= 1, {channels}, h, w], "
                                              f"got {list(samples.shape)}")
    return samples


class VAEEncode:
    DESCRIPTION = "Encode images into the VAE's latent space."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}, "hidden": CONTEXT}

    def encode(self, pixels, vae, context):
        pixels = check_rgb_batch(pixels, "VAEEncode", "pixels")
        require_model(vae, "encode", "VAE", "VAEEncode", "vae")
        if pixels.shape[1] % 8 or pixels.shape[2] % 8:
            raise NodeInputError("VAEEncode", "pixels",
                                 f"width and height must be multiples of 8, got {pixels.shape[2]}x{pixels.shape[1]}")
        latent = {"samples": encode_pixels(vae, pixels, context)}
        if getattr(vae, "latent_space", None):  # SD checkpoints' VAEs know their latent space
            latent[LATENT_SPACE_KEY] = vae.latent_space
        return (latent,)


class VAEDecode:
    DESCRIPTION = "Decode latents into images; video latents are decoded a few frames at a time."
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}, "hidden": CONTEXT}

    def decode(self, samples, vae, context):
        latent = _vae_input(samples, vae, "VAEDecode")
        return (decode_latent(vae, latent, context),)


class VAEDecodeTiled:
    DESCRIPTION = "Decode latents in overlapping spatial tiles and temporal chunks, for large videos on small GPUs."
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT",), "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4,
                                      "tooltip": "Frames decoded at once."}),
            "temporal_overlap": ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4}),
        }, "hidden": CONTEXT}

    def decode(self, samples, vae, tile_size, overlap, temporal_size, temporal_overlap, context):
        latent = _vae_input(samples, vae, "VAEDecodeTiled")
        overlap = min(overlap, tile_size // 4)  # ComfyUI clamps it the same way
        tile, step_over = tile_size // 8, overlap // 8
        frames, _, h, w = latent.shape
        if h <= tile and w <= tile:
            return (decode_latent(vae, latent, context, chunk=temporal_size),)
        out = weight = None
        for top in _tile_starts(h, tile, step_over):
            for left in _tile_starts(w, tile, step_over):
                context.check_interrupt()
                part = latent[:, :, top:top + tile, left:left + tile]
                pixels = decode_latent(vae, part, context, chunk=temporal_size, stream=False)
                if out is None:
                    scale = pixels.shape[1] // part.shape[2]
                    out = torch.zeros(frames, h * scale, w * scale, 3)
                    weight = torch.zeros(1, h * scale, w * scale, 1)
                mask = _feather(pixels.shape[1], pixels.shape[2], step_over * scale)
                y, x = top * scale, left * scale
                out[:, y:y + pixels.shape[1], x:x + pixels.shape[2]] += pixels * mask
                weight[:, y:y + pixels.shape[1], x:x + pixels.shape[2]] += mask
        return ((out / weight.clamp_min(1e-6)).clamp(0, 1),)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _feather(height: int, width: int, ramp: int) -> torch.Tensor:
    """Weights rising linearly over `ramp` pixels at each edge, so tiles blend without seams."""
    def axis(n):
        if ramp <= 0:
            return torch.ones(n)
        i = torch.arange(n, dtype=torch.float32)
        return torch.minimum(torch.ones(n), torch.minimum(i + 1, n - i) / ramp)
    return (axis(height)[:, None] * axis(width)[None, :])[None, :, :, None]


class SaveLatent:
    DESCRIPTION = "Save latents as a `.latent` safetensors file (ComfyUI's layout), with the workflow embedded."
    CATEGORY = "_for_testing"
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",),
                             "filename_prefix": ("STRING", {"default": "latents/ComfyUI"})},
                "hidden": SAVE_HIDDEN}

    def save(self, samples, filename_prefix, context, prompt=None, extra_pnginfo=None):
        latent = _samples(samples, "SaveLatent")
        prompt, extra = embedded_metadata(context.settings, prompt, extra_pnginfo)
        meta = {}
        if prompt is not None:
            meta["prompt"] = json.dumps(prompt)
        for key, value in (extra or {}).items():
            meta[key] = json.dumps(value)
        tensors = {"latent_tensor": latent.contiguous().float(), FORMAT_MARKER: torch.tensor([])}
        files = output_files(context, filename_prefix, "output", None, "SaveLatent")
        entry = files.save(lambda path: save_file(tensors, path, metadata=meta), "latent")
        return {"ui": {"latents": [entry]}}


class LoadLatent:
    DESCRIPTION = "Load a `.latent` file from the input folder."
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        folders = folders or folders_in_scope()
        files = [] if folders is None or not folders.input_dir.is_dir() else sorted(
            entry.name for entry in folders.input_dir.iterdir() if entry.is_file() and entry.suffix == ".latent")
        return {"required": {"latent": (files, {"tooltip": ".latent files in the input folder"})},
                "hidden": CONTEXT}

    @classmethod
    def VALIDATE_INPUTS(cls, latent):
        if not isinstance(latent, str) or not latent.endswith(".latent"):
            return f"LoadLatent.latent: not a .latent file name: {latent!r}"
        return True

    def load(self, latent, context):
        try:
            path = context.folders.resolve_input(latent)
        except ValueError as error:
            raise NodeInputError("LoadLatent", "latent", str(error)) from None
        if not path.is_file():
            raise NodeInputError("LoadLatent", "latent", f"no file {latent!r} in {context.folders.input_dir}")
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = set(f.keys())
                if "latent_tensor" not in keys:
                    raise NodeInputError("LoadLatent", "latent", f"{latent!r} has no 'latent_tensor'")
                samples = f.get_tensor("latent_tensor").float()
        except NodeInputError:
            raise
        except Exception as error:  # noqa: BLE001 - any parse failure is the file's fault
            raise NodeInputError("LoadLatent", "latent", f"{latent!r} is not a readable safetensors file: {error}") from None
        if FORMAT_MARKER not in keys:
            samples = samples / SCALE_FACTOR
        return ({"samples": samples},)

    @classmethod
    def IS_CHANGED(cls, latent, context=None):
        return input_file_hash(latent, context, "LoadLatent", "latent")


class LatentFromBatch:
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",),
                             "batch_index": ("INT", {"default": 0, "min": 0, "max": 63}),
                             "length": ("INT", {"default": 1, "min": 1, "max": 64})}}

    def frombatch(self, samples, batch_index, length):
        latent = _samples(samples, "LatentFromBatch")
        start = min(batch_index, latent.shape[0] - 1)
        length = min(length, latent.shape[0] - start)
        out = dict(samples)
        out["samples"] = latent[start:start + length].clone()
        # A latent already sliced keeps its original indices: they pick its noise in the sampler.
        previous = samples.get("batch_index")
        out["batch_index"] = (list(previous)[start:start + length] if previous is not None
                              else list(range(start, start + length)))
        return (out,)


class RepeatLatentBatch:
    CATEGORY = "latent/batch"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",),
                             "amount": ("INT", {"default": 1, "min": 1, "max": 64})}}

    def repeat(self, samples, amount):
        latent = _samples(samples, "RepeatLatentBatch")
        if latent.shape[0] * amount > MAX_BATCH:
            raise NodeInputError("RepeatLatentBatch", "amount", f"{latent.shape[0]} x {amount} frames exceeds {MAX_BATCH}")
        out = dict(samples)
        out["samples"] = latent.repeat(amount, 1, 1, 1)
        if samples.get("batch_index"):
            offset = max(samples["batch_index"]) - min(samples["batch_index"]) + 1
            out["batch_index"] = [i + k * offset for k in range(amount) for i in samples["batch_index"]]
        return (out,)


NODE_CLASS_MAPPINGS = {
    "VAEEncode": VAEEncode, "VAEDecode": VAEDecode, "VAEDecodeTiled": VAEDecodeTiled,
    "SaveLatent": SaveLatent, "LoadLatent": LoadLatent,
    "LatentFromBatch": LatentFromBatch, "RepeatLatentBatch": RepeatLatentBatch,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VAEEncode": "VAE Encode", "VAEDecode": "VAE Decode", "VAEDecodeTiled": "VAE Decode (Tiled)",
    "SaveLatent": "Save Latent", "LoadLatent": "Load Latent",
    "LatentFromBatch": "Latent From Batch", "RepeatLatentBatch": "Repeat Latent Batch",
}
