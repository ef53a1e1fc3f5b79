"""Model loaders: SVD and SD 1.x / 2.x / SDXL checkpoints, standalone VAE / CLIP-vision / UNet / text-encoder
files, and LoRA files (LoraLoader, LoraLoaderModelOnly: weight patches on clones, `lora.py`).

File names are combo inputs listing the model folders (`models/checkpoints`, `models/vae`,
`models/clip_vision`, `models/diffusion_models`, plus extra_model_paths.yaml). Loaded models stay
in the engine's model cache across prompts, keyed by the file's identity and the load options.

Each loader's IS_CHANGED is that identity (real path, size, mtime, inode: one stat), so a model
file edited or replaced under the same name is loaded again on the next prompt, with everything
downstream of it, while an unchanged one is never re-read or hashed.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open

from vidgraph.engine.context import current_context

from .common import CONTEXT, NodeInputError, folders_in_scope
from .lora import MODEL_PART, apply_lora
from .model import Model
from .model_management import (available_memory, compute_device, compute_dtype, file_identity, load_cached,
                               vae_compute_dtype)
from .sd import checkpoint as sd_checkpoint
from .sd.text_encoder import CLIP
from .svd import checkpoint as ckpt
from .svd.casting import cast_on_forward
from .svd.denoiser import svd_model
from .weights import CheckpointError, open_source, read_all

log = logging.getLogger(__name__)
# Share of the free memory an fp32 copy of a checkpoint may take before it is kept in 16 bits.
MEMORY_HEADROOM = 0.8
FP8_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
              "fp8_e5m2": torch.float8_e5m2}


def model_files(folder: str, folders=None) -> list[str]:
    folders = folders or folders_in_scope()
    return folders.get_filename_list(folder) if folders is not None else []


def model_file_changed(folder: str, name, context=None):
    """IS_CHANGED of a model combo: the file's identity. Without folders in scope, or for a name that
    is not there, the name itself (the run reports the problem)."""
    folders = folders_in_scope(context)
    path = folders.get_full_path(folder, name) if folders is not None and isinstance(name, str) else None
    if path is None:
        return name
    try:
        return file_identity(path)
    except OSError:
        return name


def resolve_model(context, folder: str, name: str, node: str, input_name: str) -> str:
    """The full path of a model file, or an error naming the folders searched and what is there."""
    try:
        return context.folders.get_full_path_or_raise(folder, name)
    except (FileNotFoundError, ValueError) as error:
        raise NodeInputError(node, input_name, str(error)) from None


def _load_options(context) -> dict:
    settings = context.settings
    device = compute_device(settings)
    return {"dtype": compute_dtype(settings, device), "low_memory": bool(settings.get("lowvram") or settings.get("low_memory")),
            "allow_pickle": bool(settings.get("allow_pickle"))}


def _vae_options(context) -> dict:
    options = _load_options(context)
    options["dtype"] = vae_compute_dtype(context.settings, compute_device(context.settings))
    return options


def _checkpoint_options(context, path: str) -> dict:
    """Load options for a checkpoint; a 16-bit file whose fp32 copy would not fit in memory is kept
    in 16 bits and cast layer by layer (low-memory mode), so SVD-XT runs where fp32 would not load."""
    options = _load_options(context)
    options["vae_dtype"] = vae_compute_dtype(context.settings, compute_device(context.settings))
    if not options["low_memory"] and options["dtype"].itemsize > 2 and _stored_16_bit(path):
        device = compute_device(context.settings)
        widened = os.path.getsize(path) * 2
        options["low_memory"] = widened > available_memory(device) * MEMORY_HEADROOM
    return options


def _stored_16_bit(path: str) -> bool:
    if not path.endswith(".safetensors"):
        return False
    try:
        with safe_open(path, framework="pt") as f:
            key = next((k for k in f.keys() if k.startswith(ckpt.UNET_PREFIX)), None)
            return key is not None and f.get_slice(key).get_dtype() in ("F16", "BF16")
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the loader itself
        return False


def load_part_file(context, folder: str, name: str, node: str, input_name: str, load, options: dict):
    """A standalone VAE or CLIP-vision file from `folder`, cached like a checkpoint."""
    path = resolve_model(context, folder, name, node, input_name)
    return load_cached(context, folder, path, lambda: _checked(node, input_name, lambda: load(
        path, dtype=options["dtype"], allow_pickle=options["allow_pickle"])), **options)


def _embedding_folders(context) -> tuple:
    """The embeddings folders (textual inversions for `embedding:name` in prompts)."""
    return tuple(context.folders.folder_names_and_paths.get("embeddings", ([], set()))[0])


def _checked(node: str, input_name: str, load):
    try:
        return load()
    except CheckpointError as error:
        raise NodeInputError(node, input_name, str(error)) from None


def load_svd(context, name: str, node: str, input_name: str = "ckpt_name") -> ckpt.SVDModels:
    return _load_svd_file(context, resolve_model(context, "checkpoints", name, node, input_name), node, input_name)


def _load_svd_file(context, path: str, node: str, input_name: str) -> ckpt.SVDModels:
    options = _checkpoint_options(context, path)
    return load_cached(context, "svd_checkpoint", path,
                       lambda: _checked(node, input_name, lambda: ckpt.load_checkpoint(path, **options)),
                       **options)


class ImageOnlyCheckpointLoader:
    DESCRIPTION = "Load an SVD / SVD-XT checkpoint: the video UNet, the CLIP vision encoder and the video VAE."
    CATEGORY = "loaders/video_models"
    RETURN_TYPES = ("MODEL", "CLIP_VISION", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        return {"required": {"ckpt_name": (model_files("checkpoints", folders),)}, "hidden": CONTEXT}

    @classmethod
    def IS_CHANGED(cls, ckpt_name, context=None):
        return model_file_changed("checkpoints", ckpt_name, context)

    def load_checkpoint(self, ckpt_name, context):
        models = load_svd(context, ckpt_name, "ImageOnlyCheckpointLoader")
        if models.clip_vision is None:
            raise NodeInputError("ImageOnlyCheckpointLoader", "ckpt_name",
                                 f"{ckpt_name!r} has no CLIP vision weights (conditioner.embedders.0.*)")
        return models.model(), models.clip_vision, models.vae


class CheckpointLoaderSimple:
    DESCRIPTION = "Load a checkpoint. SVD files have no text encoder: their CLIP output is empty."
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        return {"required": {"ckpt_name": (model_files("checkpoints", folders),)}, "hidden": CONTEXT}

    @classmethod
    def IS_CHANGED(cls, ckpt_name, context=None):
        return model_file_changed("checkpoints", ckpt_name, context)

    def load_checkpoint(self, ckpt_name, context):
        node = "CheckpointLoaderSimple"
        path = resolve_model(context, "checkpoints", ckpt_name, node, "ckpt_name")
        return load_checkpoint_file(context, path, node)[:3]


def load_checkpoint_file(context, path: str, node: str, input_name: str = "ckpt_name"):
    """(MODEL, CLIP or None, VAE, CLIP_VISION or None) of an SD-family or SVD checkpoint file, cached."""
    if not _is_sd_file(path):
        _check_known_architecture(path, node)
        models = _load_svd_file(context, path, node, input_name)
        return models.model(), None, models.vae, models.clip_vision
    options = _checkpoint_options(context, path)
    embeddings = _embedding_folders(context)
    models = load_cached(context, "sd_checkpoint", path, lambda: _checked(node, input_name, lambda: (
        sd_checkpoint.load_sd_checkpoint(path, embedding_folders=embeddings, **options))), **options)
    return models.model, models.clip, models.vae, None


def _check_known_architecture(path: str, node: str) -> None:
    """A file that is neither SD nor SVD (no `model.diffusion_model.*` UNet at all) is named for what it holds."""
    try:
        source = open_source(path, allow_pickle=False)
        keys = list(source.keys())
    except CheckpointError:
        return  # the SVD loader reports unreadable and pickle files itself
    if not any(k.startswith(sd_checkpoint.UNET_PREFIX) for k in keys):
        raise NodeInputError(node, "ckpt_name", f"{os.path.basename(path)!r} is not a checkpoint of an architecture "
                                                f"vidgraph loads (SD 1.x / 2.x / SDXL / SVD single files hold "
                                                f"{sd_checkpoint.UNET_PREFIX}* keys); found "
                                                + sd_checkpoint.describe_keys(keys, source.shape))


def _is_sd_file(path: str) -> bool:
    """An SD image checkpoint (else SVD's loader takes it and reports what it is)."""
    try:
        return sd_checkpoint.is_sd_checkpoint(open_source(path, allow_pickle=False).keys())
    except CheckpointError:
        return False


CLIP_TYPES = ["stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image"]
DUAL_CLIP_TYPES = ["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]
SUPPORTED_CLIP_TYPES = {"stable_diffusion", "sd2", "sdxl"}


def load_text_encoder_files(context, files: dict, kind: str, node: str) -> object:
    """One CLIP from the text encoder files `files` names ({input name: file name}, in the input order)."""
    if kind not in SUPPORTED_CLIP_TYPES:
        raise NodeInputError(node, "type", f"{kind!r} text encoders are not supported here; "
                                           f"supported: {', '.join(sorted(SUPPORTED_CLIP_TYPES))}")
    paths = [resolve_model(context, "text_encoders", name, node, input_name) for input_name, name in files.items()]
    options = _load_options(context)
    embeddings = _embedding_folders(context)

    def load():
        return sd_checkpoint.load_text_encoders(paths, kind=kind, dtype=options["dtype"],
                                                allow_pickle=options["allow_pickle"], embedding_folders=embeddings)
    return load_cached(context, "text_encoders", paths[0], lambda: _checked(node, next(iter(files)), load),
                       others=tuple(paths[1:]), kind=kind, **options)


class _TextEncoderLoader:
    """CLIP out of one text encoder file per `clip_name*` input: what CLIPLoader and DualCLIPLoader share."""
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    CLIP_INPUTS: tuple[str, ...]
    TYPES: list

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        files = (model_files("text_encoders", folders),)
        return {"required": {**{name: files for name in cls.CLIP_INPUTS}, "type": (cls.TYPES,)},
                "optional": {"device": (["default", "cpu"], {"advanced": True})}, "hidden": CONTEXT}


class CLIPLoader(_TextEncoderLoader):
    DESCRIPTION = "Load a text encoder file (CLIP-L for SD 1.x, OpenCLIP-H for SD 2.x)."
    CLIP_INPUTS = ("clip_name",)
    TYPES = CLIP_TYPES

    @classmethod
    def IS_CHANGED(cls, clip_name, context=None, **_):
        return model_file_changed("text_encoders", clip_name, context)

    def load_clip(self, clip_name, type="stable_diffusion", device="default", context=None):
        return (load_text_encoder_files(context, {"clip_name": clip_name}, type, "CLIPLoader"),)


class DualCLIPLoader(_TextEncoderLoader):
    DESCRIPTION = "Load two text encoder files (SDXL: CLIP-L and OpenCLIP-bigG)."
    CLIP_INPUTS = ("clip_name1", "clip_name2")
    TYPES = DUAL_CLIP_TYPES

    @classmethod
    def IS_CHANGED(cls, clip_name1, clip_name2, context=None, **_):
        return [model_file_changed("text_encoders", name, context) for name in (clip_name1, clip_name2)]

    def load_clip(self, clip_name1, clip_name2, type="sdxl", device="default", context=None):
        files = {"clip_name1": clip_name1, "clip_name2": clip_name2}
        return (load_text_encoder_files(context, files, type, "DualCLIPLoader"),)


class VAELoader:
    DESCRIPTION = "Load a standalone VAE (original, bare or diffusers layout)."
    CATEGORY = "loaders"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "load_vae"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        return {"required": {"vae_name": (model_files("vae", folders),)}, "hidden": CONTEXT}

    @classmethod
    def IS_CHANGED(cls, vae_name, context=None):
        return model_file_changed("vae", vae_name, context)

    def load_vae(self, vae_name, context):
        return (load_part_file(context, "vae", vae_name, "VAELoader", "vae_name", ckpt.load_vae, _vae_options(context)),)


class CLIPVisionLoader:
    DESCRIPTION = "Load a CLIP vision encoder (OpenCLIP `visual.*` or Hugging Face `vision_model.*` layout)."
    CATEGORY = "loaders"
    RETURN_TYPES = ("CLIP_VISION",)
    FUNCTION = "load_clip"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        return {"required": {"clip_name": (model_files("clip_vision", folders),)}, "hidden": CONTEXT}

    @classmethod
    def IS_CHANGED(cls, clip_name, context=None):
        return model_file_changed("clip_vision", clip_name, context)

    def load_clip(self, clip_name, context):
        return (load_part_file(context, "clip_vision", clip_name, "CLIPVisionLoader", "clip_name",
                               ckpt.load_clip_vision, _load_options(context)),)


class UNETLoader:
    DESCRIPTION = "Load a standalone video UNet (original or diffusers keys); fp8 keeps the weights in 8 bits."
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        return {"required": {"unet_name": (model_files("diffusion_models", folders),),
                             "weight_dtype": (["default", *FP8_DTYPES],)},
                "hidden": CONTEXT}

    @classmethod
    def IS_CHANGED(cls, unet_name, context=None):
        return model_file_changed("diffusion_models", unet_name, context)

    def load_unet(self, unet_name, weight_dtype, context):
        path = resolve_model(context, "diffusion_models", unet_name, "UNETLoader", "unet_name")
        options = _load_options(context)
        if weight_dtype in FP8_DTYPES:
            options["low_memory"] = True

        def load():
            unet = _checked("UNETLoader", "unet_name", lambda: ckpt.load_unet(path, **options))
            if weight_dtype in FP8_DTYPES:  # storage only: each layer casts up as it runs
                unet.to(FP8_DTYPES[weight_dtype])
                cast_on_forward(unet)
            return unet

        unet = load_cached(context, "unet", path, load, weight_dtype=weight_dtype, **options)
        return (svd_model(unet, options["dtype"]),)


def diffusers_folders(folders=None) -> list[str]:
    """The folders under models/diffusers that hold a model_index.json (ComfyUI's DiffusersLoader list)."""
    folders = folders or folders_in_scope()
    roots = folders.folder_names_and_paths.get("diffusers", ([], set()))[0] if folders is not None else []
    names = set()
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if "model_index.json" in filenames:
                names.add(os.path.relpath(dirpath, root).replace(os.sep, "/"))
    return sorted(names)


class DiffusersLoader:
    DESCRIPTION = ("Load a diffusers pipeline folder (SD 1.x / 2.x / SDXL / refiner / inpainting, or SVD) from "
                   "models/diffusers: the same models as the single file with those weights.")
    CATEGORY = "advanced/loaders/deprecated"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load_checkpoint"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        return {"required": {"model_path": (diffusers_folders(folders),)}, "hidden": CONTEXT}

    @classmethod
    def IS_CHANGED(cls, model_path, context=None):
        return model_file_changed("diffusers", model_path, context)

    def load_checkpoint(self, model_path, context):
        node = "DiffusersLoader"
        path = resolve_model(context, "diffusers", model_path, node, "model_path")
        if not sd_checkpoint.is_diffusers_folder(path):
            raise NodeInputError(node, "model_path", f"{model_path!r} has no model_index.json: not a diffusers folder")
        options = dict(_load_options(context), vae_dtype=vae_compute_dtype(context.settings, compute_device(context.settings)))
        if "StableVideoDiffusion" in Path(path, "model_index.json").read_text():
            svd_options = {k: options[k] for k in ("dtype", "low_memory")}
            models = load_cached(context, "svd_diffusers", path, lambda: _checked(node, "model_path", lambda: (
                ckpt.load_diffusers_folder(path, **svd_options))), **svd_options)
            return models.model(), None, models.vae
        embeddings = _embedding_folders(context)
        models = load_cached(context, "sd_diffusers", path, lambda: _checked(node, "model_path", lambda: (
            sd_checkpoint.load_diffusers_folder(path, embedding_folders=embeddings, **options))), **options)
        return models.model, models.clip, models.vae


# -- LoRA: weight patches on clones of the MODEL and the CLIP (formats and arithmetic in lora.py) --

TEXT_ENCODER_PREFIXES = ("lora_te_", "lora_te1_", "lora_te2_", "text_encoder.", "text_encoder_2.", "clip_")
STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}


def read_lora(context, node: str, lora_name: str) -> dict:
    path = resolve_model(context, "loras", lora_name, node, "lora_name")
    try:
        return read_all(open_source(path, allow_pickle=bool(context.settings.get("allow_pickle"))))
    except CheckpointError as error:
        raise NodeInputError(node, "lora_name", str(error)) from None


def load_lora(context, node: str, model, clip, lora_name: str, strength_model: float, strength_clip: float):
    context = context or current_context()  # a pack's subclass calls without the hidden context
    if not isinstance(model, Model):
        raise NodeInputError(node, "model", f"expected a MODEL, got {type(model).__name__}")
    if clip is not None and not isinstance(clip, CLIP):
        raise NodeInputError(node, "clip", f"expected a CLIP, got {type(clip).__name__}")
    sd = read_lora(context, node, lora_name)
    patched_model, patched_clip, found = apply_lora(model, clip, sd, strength_model, strength_clip)
    what = "the diffusion model" + ("" if clip is None else " or the text encoder")
    if found.count(MODEL_PART if clip is None else None) == 0:
        text_keys = [k for k in sd if k.startswith(TEXT_ENCODER_PREFIXES)]
        if clip is None and text_keys:
            hint = f"; {len(text_keys)} of its keys are for a text encoder, which LoraLoader applies"
        elif sd:
            hint = f"; its keys look like {', '.join(sorted(sd)[:3])}"
        else:
            hint = " (the file holds no tensors)"
        raise NodeInputError(node, "lora_name", f"{lora_name!r} matches no weight of {what} "
                                                f"(0 of {len(sd)} keys matched){hint}")
    summary = f"LoRA {lora_name}: {found.summary()}"
    if found.unmatched or found.unsupported:
        log.warning("%s: %s", node, summary)
    return patched_model, patched_clip, summary


class LoraLoader:
    DESCRIPTION = ("LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are "
                   "denoised such as applying styles. Multiple LoRA nodes can be linked together.")
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The modified diffusion model.", "The modified CLIP model.")
    FUNCTION = "load_lora"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
            "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
            "lora_name": (model_files("loras", folders), {"tooltip": "The name of the LoRA."}),
            "strength_model": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to modify the diffusion model. "
                                                                "This value can be negative."}),
            "strength_clip": ("FLOAT", {**STRENGTH, "tooltip": "How strongly to modify the CLIP model. "
                                                               "This value can be negative."}),
        }, "hidden": CONTEXT}

    @classmethod
    def IS_CHANGED(cls, lora_name, context=None, **_):
        return model_file_changed("loras", lora_name, context)

    def load_lora(self, model, clip, lora_name, strength_model, strength_clip, context=None):
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        model, clip, summary = load_lora(context, "LoraLoader", model, clip, lora_name, strength_model, strength_clip)
        return {"ui": {"text": [summary]}, "result": (model, clip)}


class LoraLoaderModelOnly:
    DESCRIPTION = "Apply a LoRA to the diffusion model only (its text-encoder keys, if any, are ignored)."
    CATEGORY = "loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_lora_model_only"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        return {"required": {
            "model": ("MODEL",),
            "lora_name": (model_files("loras", folders),),
            "strength_model": ("FLOAT", dict(STRENGTH)),
        }, "hidden": CONTEXT}

    @classmethod
    def IS_CHANGED(cls, lora_name, context=None, **_):
        return model_file_changed("loras", lora_name, context)

    def load_lora_model_only(self, model, lora_name, strength_model, context=None):
        if strength_model == 0:
            return (model,)
        model, _, summary = load_lora(context, "LoraLoaderModelOnly", model, None, lora_name, strength_model, 0.0)
        return {"ui": {"text": [summary]}, "result": (model,)}


NODE_CLASS_MAPPINGS = {
    "ImageOnlyCheckpointLoader": ImageOnlyCheckpointLoader,
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "VAELoader": VAELoader,
    "CLIPVisionLoader": CLIPVisionLoader,
    "UNETLoader": UNETLoader,
    "CLIPLoader": CLIPLoader,
    "DualCLIPLoader": DualCLIPLoader,
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
    "DiffusersLoader": DiffusersLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ImageOnlyCheckpointLoader": "Image Only Checkpoint Loader (img2vid model)",
    "CheckpointLoaderSimple": "Load Checkpoint",
    "VAELoader": "Load VAE",
    "CLIPVisionLoader": "Load CLIP Vision",
    "UNETLoader": "Load Diffusion Model",
    "LoraLoader": "Load LoRA",
}
