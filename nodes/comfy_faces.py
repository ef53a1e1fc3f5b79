"""The torch side of ComfyUI's module API for node packs (the engine's seam: engine/compat).

`VIDGRAPH_COMPAT_FACES` maps a module name to a function that fills it: `comfy.utils`' tensor
helpers, `comfy.model_management`'s devices, `latent_preview`, `node_helpers`, `comfy.samplers`,
`comfy.sample`, `comfy.sd`, and the core node classes packs import from `nodes` / `comfy_extras`.
Core nodes vidgraph does not have (text encoders, LoRA: the Stable Diffusion family) come as
stand-ins: packs that import or subclass them load, and running one says what is missing.
"""
from __future__ import annotations

import hashlib
import io
import logging

import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from vidgraph.engine.compat import stand_in_module
from vidgraph.engine.context import current_context

from . import model_management as vg_memory
from .comfy_internals import VIDGRAPH_COMPAT_FACES as INTERNALS
from .comfy_sampling_faces import VIDGRAPH_COMPAT_FACES as SAMPLING
from .comfy_api_ui import VIDGRAPH_COMPAT_FACES as API_UI
from .comfy_video_api import VIDGRAPH_COMPAT_FACES as VIDEO_API
from .images import resize
from .ksampler import common_ksampler
from .sampling import SAMPLER_NAMES, get_sampler
from .sampling_noise import prepare_noise
from .schedules import SCHEDULER_NAMES, calculate_sigmas
from .weights import open_source, read_all

log = logging.getLogger(__name__)


# -- comfy.utils --------------------------------------------------------------------------------

def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """[B,C,H,W] resized to height x width (ComfyUI's methods; "center" crops to the aspect first)."""
    method = "bilinear" if upscale_method == "bislerp" else upscale_method
    return resize(samples, width, height, method, crop)


def load_torch_file(ckpt, safe_load: bool = False, device=None, return_metadata: bool = False):
    """A weights file as a state dict: safetensors, or pickled tensors read with weights_only."""
    sd = read_all(open_source(ckpt, allow_pickle=True))
    if device is not None:
        sd = {k: v.to(device) for k, v in sd.items()}
    if not return_metadata:
        return sd
    metadata = None
    if str(ckpt).lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open
        with safe_open(str(ckpt), framework="pt") as f:
            metadata = f.metadata()
    return sd, metadata


def save_torch_file(sd: dict, path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)


def state_dict_prefix_replace(state_dict: dict, replace_prefix: dict, filter_keys: bool = False) -> dict:
    out = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key) if not filter_keys else state_dict[key]
    return out


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        repeats = [1] * tensor.ndim
        repeats[dim] = -(-batch_size // size)
        return tensor.repeat(*repeats).narrow(dim, 0, batch_size)
    return tensor


def resize_to_batch_size(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Nearest-index resampling of the batch to `batch_size` entries."""
    size = tensor.shape[0]
    if size == batch_size:
        return tensor
    index = torch.linspace(0, size - 1, batch_size).round().long()
    return tensor[index]


def tiled_scale(samples, function, tile_x=64, tile_y=64, overlap=8, upscale_amount=4, out_channels=3,
                output_device="cpu", pbar=None):
    """`function` applied tile by tile ([B,C,H,W] in), overlaps feathered (ComfyUI's signature)."""
    out = []
    for sample in samples.split(1):
        height, width = sample.shape[-2:]
        scaled = (round(height * upscale_amount), round(width * upscale_amount))
        total = torch.zeros((1, out_channels) + scaled, device=output_device)
        weight = torch.zeros_like(total)
        step_y, step_x = max(1, tile_y - overlap), max(1, tile_x - overlap)
        for y in range(0, max(1, height - overlap), step_y):
            for x in range(0, max(1, width - overlap), step_x):
                tile = sample[..., y:y + tile_y, x:x + tile_x]
                result = function(tile).to(output_device)
                ys, xs = round(y * upscale_amount), round(x * upscale_amount)
                th, tw = result.shape[-2:]
                total[..., ys:ys + th, xs:xs + tw] += result
                weight[..., ys:ys + th, xs:xs + tw] += 1
                if pbar is not None:
                    pbar.update(1)
        out.append(total / weight.clamp(min=1))
    return torch.cat(out)


def tensor_preview(preview) -> tuple[str, bytes] | None:
    """ComfyUI's (format, PIL image, max size) preview as (format, encoded bytes)."""
    if not preview or len(preview) < 2:
        return None
    image_format, image = preview[0], preview[1]
    if isinstance(image, (bytes, bytearray)):
        return str(image_format), bytes(image)
    if isinstance(image, Image.Image):
        if len(preview) > 2 and preview[2]:
            image = image.copy()
            image.thumbnail((preview[2], preview[2]))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG" if str(image_format).upper() == "PNG" else "JPEG")
        return str(image_format).upper(), buffer.getvalue()
    return None


def fill_utils(module, registry) -> None:
    base = module.ProgressBar

    class ProgressBar(base):
        def update_absolute(self, value, total=None, preview=None):
            super().update_absolute(value, total, None)
            encoded = tensor_preview(preview)
            ctx = current_context()
            if encoded is not None and ctx is not None:
                ctx.send("preview", {"prompt_id": ctx.prompt_id, "node_id": ctx.node_id,
                                     "format": encoded[0], "image": encoded[1]})

    module.ProgressBar = ProgressBar
    for fn in (common_upscale, load_torch_file, save_torch_file, state_dict_prefix_replace,
               repeat_to_batch_size, resize_to_batch_size, tiled_scale):
        setattr(module, fn.__name__, fn)
    module.tiled_scale_multidim = tiled_scale
    module.lanczos = lambda samples, width, height: resize(samples, width, height, "lanczos")
    module.bislerp = lambda samples, width, height: resize(samples, width, height, "bilinear")


# -- comfy.model_management ---------------------------------------------------------------------

def fill_model_management(module, registry) -> None:
    def device() -> torch.device:
        ctx = current_context()
        return vg_memory.compute_device(ctx.settings if ctx is not None else {})

    cpu = torch.device("cpu")
    module.get_torch_device = device
    module.intermediate_device = lambda: cpu
    for name in ("unet_offload_device", "text_encoder_offload_device", "vae_offload_device"):
        setattr(module, name, lambda: cpu)
    for name in ("text_encoder_device", "vae_device", "unet_inital_load_device"):
        setattr(module, name, lambda *args, **kwargs: device())
    module.vae_dtype = lambda *args, **kwargs: torch.float32
    module.unet_dtype = lambda *args, **kwargs: torch.float32 if device().type == "cpu" else torch.float16
    module.text_encoder_dtype = lambda *args, **kwargs: torch.float32
    module.get_free_memory = lambda dev=None, torch_free_too=False: (
        (vg_memory.available_memory(dev or device()),) * 2 if torch_free_too else vg_memory.available_memory(dev or device()))
    module.total_vram = vg_memory.available_memory(device()) / (1024 * 1024)
    module.xformers_enabled = lambda: False
    module.xformers_enabled_vae = lambda: False
    module.pytorch_attention_enabled = lambda: True
    module.pytorch_attention_flash_attention = lambda: False
    module.is_device_mps = lambda dev=None: getattr(dev, "type", "") == "mps"
    module.is_device_cpu = lambda dev=None: getattr(dev, "type", "cpu") == "cpu"
    module.is_device_cuda = lambda dev=None: getattr(dev, "type", "") == "cuda"
    module.is_intel_xpu = lambda: False
    module.directml_enabled = False
    module.mps_mode = lambda: False
    module.should_use_fp16 = lambda *args, **kwargs: device().type == "cuda"
    module.should_use_bf16 = lambda *args, **kwargs: False
    module.device_supports_non_blocking = lambda dev=None: False
    module.get_autocast_device = lambda dev: getattr(dev, "type", "cuda")
    module.cast_to_device = lambda tensor, dev, dtype, copy=False: tensor.to(dev, dtype, copy=copy)
    module.module_size = vg_memory.module_nbytes
    module.load_models_gpu = lambda *args, **kwargs: None
    module.load_model_gpu = lambda *args, **kwargs: None
    module.free_memory = lambda *args, **kwargs: vg_memory.release_memory()
    module.soft_empty_cache = lambda *args, **kwargs: vg_memory.release_memory()
    module.OOM_EXCEPTION = torch.cuda.OutOfMemoryError


# -- latent_preview and node_helpers ------------------------------------------------------------

def prepare_callback(model, steps, x0_output_dict=None):
    """A sampler callback (step, x0, x, total_steps) that reports progress, as ComfyUI's does."""
    import comfy.utils

    bar = comfy.utils.ProgressBar(steps)

    def callback(step, x0, x, total_steps):
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        bar.update_absolute(step + 1, total_steps)
    return callback


class LatentPreviewer:
    def decode_latent_to_preview(self, x0):
        raise NotImplementedError

    def decode_latent_to_preview_image(self, preview_format, x0):
        return preview_format, self.decode_latent_to_preview(x0), 512


def fill_latent_preview(module, registry) -> None:
    module.MAX_PREVIEW_RESOLUTION = 512
    module.LatentPreviewer = LatentPreviewer
    module.prepare_callback = prepare_callback
    module.get_previewer = lambda device, latent_format: None   # previews come from vidgraph's samplers
    module.set_preview_method = lambda method: None


def pillow(fn, arg):
    """Call a PIL function; on a truncated file, retry allowing truncated images (ComfyUI's helper)."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        return fn(arg)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def conditioning_set_values(conditioning, values=None, append=False):
    """A copy of CONDITIONING with `values` set on (or appended to) every entry's options."""
    out = []
    for embedding, options in conditioning:
        options = dict(options)
        for key, value in (values or {}).items():
            options[key] = (options.get(key, []) + value) if append and key in options else value
        out.append([embedding, options])
    return out


def fill_node_helpers(module, registry) -> None:
    module.pillow = pillow
    module.conditioning_set_values = conditioning_set_values
    module.hasher = lambda: hashlib.sha256
    module.string_to_torch_dtype = lambda name: {"fp32": torch.float32, "fp16": torch.float16,
                                                 "bf16": torch.bfloat16}.get(name)
    module.image_alpha_fix = lambda destination, source: (destination, source)


# -- comfy.samplers, comfy.sample, comfy.sd -------------------------------------------------------

class KSampler:
    """ComfyUI's comfy.samplers.KSampler: the sampler and scheduler names packs list in widgets."""
    SAMPLERS = list(SAMPLER_NAMES)
    SCHEDULERS = list(SCHEDULER_NAMES)
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}


def fill_samplers(module, registry) -> None:
    module.KSampler = KSampler
    module.KSAMPLER_NAMES = list(SAMPLER_NAMES)
    module.SAMPLER_NAMES = list(SAMPLER_NAMES)
    module.SCHEDULER_NAMES = list(SCHEDULER_NAMES)
    module.SCHEDULER_HANDLERS = {name: None for name in SCHEDULER_NAMES}
    module.calculate_sigmas = lambda model_sampling, scheduler_name, steps: calculate_sigmas(scheduler_name, steps)
    module.sampler_object = get_sampler
    module.ksampler = get_sampler


def fill_sample(module, registry) -> None:
    def prepare(latent_image, seed, noise_inds=None):
        return prepare_noise(latent_image.shape, seed, noise_inds)

    module.prepare_noise = prepare
    module.fix_empty_latent_channels = lambda model, latent_image, downscale_ratio_spacial=None: latent_image


class _FaceOf(type):
    """A ComfyUI class name that vidgraph's own objects of that kind are instances of."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls.vidgraph_class())


class VAE(metaclass=_FaceOf):
    """comfy.sd.VAE: every vidgraph VAE is one; `VAE(sd=state_dict)` builds one from weights in any
    layout vidgraph's VAE loader reads (original, bare or diffusers keys)."""

    @staticmethod
    def vidgraph_class():
        from .svd.vae import VAE as VidgraphVAE
        return VidgraphVAE

    def __new__(cls, sd=None, device=None, config=None, dtype=None, metadata=None):
        if sd is None:
            raise NotImplementedError("comfy.sd.VAE without a state dict (a config alone) is not available in vidgraph")
        return cls.vidgraph_class().from_state_dict(sd, dtype or torch.float32)


class CLIP(metaclass=_FaceOf):
    """comfy.sd.CLIP: every vidgraph text encoder is one (made by the loaders, not by packs)."""

    @staticmethod
    def vidgraph_class():
        from .sd.text_encoder import CLIP as VidgraphCLIP
        return VidgraphCLIP

    def __new__(cls, *args, **kwargs):
        raise NotImplementedError("comfy.sd.CLIP(...) is not available in vidgraph: load text encoders with "
                                  "CheckpointLoaderSimple, CLIPLoader or DualCLIPLoader")


def fill_sd(module, registry) -> None:
    module.VAE = VAE
    module.CLIP = CLIP

    module.load_checkpoint_guess_config = load_checkpoint_guess_config


def load_checkpoint_guess_config(ckpt_path, output_vae=True, output_clip=True, output_clipvision=False,
                                 embedding_directory=None, output_model=True, **_):
    """comfy.sd's checkpoint loader by path: (MODEL, CLIP, VAE, CLIP_VISION), None for what is not
    asked for or not in the file (an SVD file has no CLIP; an SD file no CLIP vision). Textual
    inversions come from vidgraph's embeddings folders."""
    from .loaders import load_checkpoint_file

    model, clip, vae, clip_vision = load_checkpoint_file(current_context(), str(ckpt_path),
                                                         "comfy.sd.load_checkpoint_guess_config", "ckpt_path")
    return (model if output_model else None, clip if output_clip else None, vae if output_vae else None,
            clip_vision if output_clipvision else None)


# -- core node classes on `nodes` and `comfy_extras.*` -------------------------------------------

def unavailable_node(name: str, reason: str) -> type:
    """A ComfyUI core node vidgraph lacks: importable and subclassable, failing clearly when run."""
    def run(self, **kwargs):
        raise NotImplementedError(f"{name} (ComfyUI core node) is not available in vidgraph: {reason}")

    return type(name, (), {"INPUT_TYPES": classmethod(lambda cls: {"required": {}}), "RETURN_TYPES": (),
                           "FUNCTION": "run", "CATEGORY": "unavailable", "run": run,
                           "__doc__": f"Stand-in for ComfyUI's {name}: {reason}."})


SD_FAMILY = "vidgraph has no such node yet (ControlNet, style models and GLIGEN are not implemented)"
# ComfyUI core nodes vidgraph lacks (the SD family's others are vidgraph's own nodes, handed out as such).
MISSING_CORE = {name: SD_FAMILY for name in (
    "ControlNetApply", "ControlNetApplyAdvanced", "ControlNetLoader", "StyleModelApply", "unCLIPConditioning",
    "GLIGENTextBoxApply")}
# comfy_extras names packs import: vidgraph's node when it has one, else a stand-in node.
MISSING_EXTRAS = {
    "nodes_latent": ("LatentBatch", "LatentAdd", "LatentSubtract", "LatentMultiply", "LatentInterpolate"),
    "nodes_clip_sdxl": ("CLIPTextEncodeSDXL", "CLIPTextEncodeSDXLRefiner"),
    "nodes_custom_sampler": ("Noise_RandomNoise", "Noise_EmptyNoise", "BasicScheduler", "BasicGuider", "CFGGuider",
                             "SamplerCustomAdvanced", "SamplerCustom", "KSamplerSelect", "RandomNoise"),
    "nodes_model_advanced": ("ModelSamplingFlux", "ModelSamplingAuraFlow", "ModelSamplingDiscrete", "ModelSamplingSD3"),
    "nodes_upscale_model": ("UpscaleModelLoader", "ImageUpscaleWithModel"),
    "nodes_mask": ("MaskComposite", "SolidMask", "InvertMask", "CropMask", "FeatherMask", "GrowMask"),
}


# Core nodes whose FUNCTION answers ComfyUI's plain tuple where vidgraph's adds a UI summary: packs call
# them directly (`model, clip = LoraLoader().load_lora(...)`, rgthree's Power Lora Loader).
TUPLE_RESULT_NODES = ("LoraLoader", "LoraLoaderModelOnly")


def with_tuple_result(cls: type) -> type:
    """A subclass of vidgraph's node whose FUNCTION returns only the result tuple, as ComfyUI's does."""
    function = cls.FUNCTION

    def call(self, *args, **kwargs):
        answer = getattr(super(face, self), function)(*args, **kwargs)
        return tuple(answer["result"]) if isinstance(answer, dict) else answer

    face = type(cls.__name__, (cls,), {function: call, "__module__": cls.__module__, "__doc__": cls.__doc__})
    return face


def fill_nodes(module, registry) -> None:
    classes = registry.classes
    stand_ins = {name: unavailable_node(name, reason) for name, reason in MISSING_CORE.items()}
    tuple_faces: dict[str, type] = {}

    def lookup(name: str):
        cls = classes.get(name)
        if cls is not None and registry.node_packs.get(name) == "vidgraph.nodes":
            if name in TUPLE_RESULT_NODES:
                return tuple_faces.setdefault(name, with_tuple_result(cls))
            return cls
        if name in stand_ins:
            return stand_ins[name]
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")

    module.__getattr__ = lookup
    module.common_ksampler = common_ksampler
    module.before_node_execution = lambda: current_context() and current_context().check_interrupt()
    module.interrupt_processing = lambda value=True: None


def fill_extras(module_name: str, names: tuple[str, ...]):
    """A comfy_extras module: vidgraph's node of that name when the built-in pack has it, else a stand-in
    node; the module's other names (helper classes packs import) are stand-ins too."""
    def fill(module, registry) -> None:
        stand_in_module(module)
        for name in names:
            if registry.node_packs.get(name) == "vidgraph.nodes":
                setattr(module, name, registry.classes[name])
            else:
                setattr(module, name, unavailable_node(name, f"vidgraph has no {name} node yet"))
    return fill


class FolderOfImages(torch.utils.data.Dataset):
    """comfy.k_diffusion.utils.FolderOfImages: the image files under a folder, as a dataset."""
    IMG_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}

    def __init__(self, root, transform=None):
        from pathlib import Path
        self.root = Path(root)
        self.transform = transform or (lambda image: image)
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in self.IMG_EXTENSIONS)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        with Image.open(self.paths[key]) as image:
            return (self.transform(image.convert("RGB")),)


def fill_k_diffusion_utils(module, registry) -> None:
    module.FolderOfImages = FolderOfImages


def fill_chainner_model_loading(module, registry) -> None:
    def load_state_dict(state_dict):
        """An upscale model from its state dict, through spandrel (ComfyUI's shim does the same)."""
        try:
            from spandrel import ModelLoader
        except ImportError:
            raise NotImplementedError("upscale models need spandrel: install vidgraph's [comfyui] extra") from None
        return ModelLoader().load_from_state_dict(state_dict).eval()

    module.load_state_dict = load_state_dict


def fill_model_patcher(module, registry) -> None:
    from .model import Model
    module.ModelPatcher = Model   # every MODEL is one: ComfyUI's method names map onto its registrations


VIDGRAPH_COMPAT_FACES = {
    "comfy.model_patcher": fill_model_patcher,
    "comfy_extras.chainner_models.model_loading": fill_chainner_model_loading,
    "comfy.k_diffusion.utils": fill_k_diffusion_utils,
    "comfy.utils": fill_utils,
    "comfy.model_management": fill_model_management,
    "latent_preview": fill_latent_preview,
    "node_helpers": fill_node_helpers,
    "comfy.samplers": fill_samplers,
    "comfy.sample": fill_sample,
    "comfy.sd": fill_sd,
    "nodes": fill_nodes,
    **{f"comfy_extras.{name}": fill_extras(name, names) for name, names in MISSING_EXTRAS.items()},
}


def _in_turn(*contributors):
    def fill(module, registry) -> None:
        for contribute in contributors:
            contribute(module, registry)
    return fill


for _name, _fill in [*INTERNALS.items(), *SAMPLING.items(), *VIDEO_API.items(), *API_UI.items()]:   # the other faces modules
    VIDGRAPH_COMPAT_FACES[_name] = _in_turn(VIDGRAPH_COMPAT_FACES[_name], _fill) if _name in VIDGRAPH_COMPAT_FACES else _fill
