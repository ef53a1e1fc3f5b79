"""The torch-free parts of `comfy.*`: utils.ProgressBar, model_management's interrupt calls,
cli_args, comfy_types. The node pack adds the torch parts to the same modules (see __init__)."""
from __future__ import annotations

import argparse
import enum
from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Literal, TypedDict

from ..context import current_context
from .module import compat_module
from ..interrupt import Interrupted




# -- comfy.utils ------------------------------------------------------------------------------

class ProgressBar:
    """comfy.utils.ProgressBar: reports through the running node's context (and checks interrupt)."""

    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total else value
        ctx = current_context()
        if ctx is not None:
            ctx.progress(self.current, self.total, encoded_preview(preview))

    def update(self, value):
        self.update_absolute(self.current + value)


def encoded_preview(preview) -> tuple[str, bytes] | None:
    """ComfyUI previews are (format, image, max size); only bytes pass here. The node pack
    encodes PIL images (its `comfy.utils` contribution replaces this function's use)."""
    if preview and len(preview) >= 2 and isinstance(preview[1], (bytes, bytearray)):
        return str(preview[0]), bytes(preview[1])
    return None


def utils_module(root: Path) -> ModuleType:
    module = compat_module("comfy.utils", root)
    module.ProgressBar = ProgressBar
    module.PROGRESS_BAR_ENABLED = True
    module.PROGRESS_BAR_HOOK = None

    def set_progress_bar_enabled(enabled: bool) -> None:
        module.PROGRESS_BAR_ENABLED = enabled

    def set_progress_bar_global_hook(hook) -> None:
        module.PROGRESS_BAR_HOOK = hook

    module.set_progress_bar_enabled = set_progress_bar_enabled
    module.set_progress_bar_global_hook = set_progress_bar_global_hook
    return module


# -- comfy.model_management (interrupts; devices come from the node pack) ----------------------

class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


def model_management_module(root: Path) -> ModuleType:
    module = compat_module("comfy.model_management", root)
    module.InterruptProcessingException = Interrupted
    module.VRAMState = VRAMState
    module.CPUState = CPUState
    module.vram_state = VRAMState.DISABLED
    module.cpu_state = CPUState.CPU

    def processing_interrupted() -> bool:
        ctx = current_context()
        return ctx is not None and ctx.interrupted

    def throw_exception_if_processing_interrupted() -> None:
        ctx = current_context()
        if ctx is not None:
            ctx.check_interrupt()

    def interrupt_current_processing(value: bool = True) -> None:
        ctx = current_context()
        if ctx is not None:
            (ctx.interrupt_flag.set if value else ctx.interrupt_flag.clear)()

    module.processing_interrupted = processing_interrupted
    module.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    module.interrupt_current_processing = interrupt_current_processing
    module.soft_empty_cache = lambda *args, **kwargs: None
    module.cleanup_models = lambda *args, **kwargs: None
    module.cleanup_models_gc = lambda *args, **kwargs: None
    module.unload_all_models = lambda *args, **kwargs: None
    module.current_loaded_models = []
    return module


# -- comfy.cli_args ---------------------------------------------------------------------------

class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


# ComfyUI's command-line defaults (what packs read from `comfy.cli_args.args`).
CLI_DEFAULTS: dict[str, Any] = {
    "listen": "127.0.0.1", "port": 8188, "tls_keyfile": None, "tls_certfile": None,
    "enable_cors_header": None, "max_upload_size": 100, "base_directory": None,
    "extra_model_paths_config": None, "output_directory": None, "temp_directory": None,
    "input_directory": None, "user_directory": None, "auto_launch": False, "disable_auto_launch": False,
    "cuda_device": None, "cuda_malloc": False, "disable_cuda_malloc": True, "force_upcast_attention": False,
    "dont_upcast_attention": False, "force_fp32": False, "force_fp16": False, "fp32_unet": False,
    "fp64_unet": False, "bf16_unet": False, "fp16_unet": False, "fp8_e4m3fn_unet": False,
    "fp8_e5m2_unet": False, "fp8_e8m0fnu_unet": False, "fp16_vae": False, "fp32_vae": False, "bf16_vae": False,
    "cpu_vae": False, "fp8_e4m3fn_text_enc": False, "fp8_e5m2_text_enc": False, "fp16_text_enc": False,
    "fp32_text_enc": False, "bf16_text_enc": False, "force_channels_last": False, "directml": None,
    "oneapi_device_selector": None, "disable_ipex_optimize": False, "supports_fp8_compute": False,
    "preview_method": LatentPreviewMethod.NoPreviews, "preview_size": 512, "cache_classic": False,
    "cache_lru": 0, "cache_none": False, "use_split_cross_attention": False,
    "use_quad_cross_attention": False, "use_pytorch_cross_attention": False, "use_sage_attention": False,
    "use_flash_attention": False, "disable_xformers": True, "force_upcast_vae": False, "gpu_only": False,
    "highvram": False, "normalvram": False, "lowvram": False, "novram": False, "cpu": True,
    "reserve_vram": None, "async_offload": False, "default_hashing_function": "sha256",
    "disable_smart_memory": False, "deterministic": False, "fast": [], "mmap_torch_files": False,
    "disable_mmap": False, "dont_print_server": False, "quick_test_for_ci": False,
    "windows_standalone_build": False, "disable_metadata": False, "disable_all_custom_nodes": False,
    "whitelist_custom_nodes": [], "disable_api_nodes": False, "multi_user": False, "verbose": "INFO",
    "log_stdout": False, "front_end_version": "comfyanonymous/ComfyUI@latest", "front_end_root": None,
    "user_directory_override": None, "enable_compress_response_body": False,
    "comfy_api_base": "https://api.comfy.org", "database_url": None,
}


def cli_args_module(root: Path) -> ModuleType:
    module = compat_module("comfy.cli_args", root)
    module.LatentPreviewMethod = LatentPreviewMethod
    module.args = argparse.Namespace(**{k: (list(v) if isinstance(v, list) else v) for k, v in CLI_DEFAULTS.items()})
    module.parser = argparse.ArgumentParser(prog="vidgraph (ComfyUI compatibility)")
    module.enables_dynamic_vram = lambda: False
    return module


# -- comfy.comfy_types ------------------------------------------------------------------------

class IO(str, enum.Enum):
    """Socket types; like ComfyUI's, "*" matches everything and comma lists match on any subset."""
    STRING = "STRING"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    BOOLEAN = "BOOLEAN"
    INT = "INT"
    FLOAT = "FLOAT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    GUIDER = "GUIDER"
    NOISE = "NOISE"
    CLIP = "CLIP"
    CONTROL_NET = "CONTROL_NET"
    VAE = "VAE"
    MODEL = "MODEL"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    AUDIO = "AUDIO"
    WEBCAM = "WEBCAM"
    POINT = "POINT"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    BBOX = "BBOX"
    SEGS = "SEGS"
    VIDEO = "VIDEO"
    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"

    def __str__(self) -> str:
        return str.__str__(self)

    def __ne__(self, other: object) -> bool:
        if self == "*" or other == "*":
            return False
        if not isinstance(other, str):
            return True
        mine, theirs = frozenset(self.split(",")), frozenset(other.split(","))
        return not (mine <= theirs or theirs <= mine)

    __hash__ = str.__hash__


class InputTypeOptions(TypedDict, total=False):
    default: Any
    defaultInput: bool
    forceInput: bool
    lazy: bool
    rawLink: bool
    tooltip: str
    min: float
    max: float
    step: float
    round: float
    label_on: str
    label_off: str
    multiline: bool
    placeholder: str
    dynamicPrompts: bool
    image_upload: bool
    image_folder: Literal["input", "output", "temp"]
    remote: dict
    control_after_generate: bool
    options: list


class HiddenInputTypeDict(TypedDict, total=False):
    node_id: Literal["UNIQUE_ID"]
    unique_id: Literal["UNIQUE_ID"]
    prompt: Literal["PROMPT"]
    extra_pnginfo: Literal["EXTRA_PNGINFO"]
    dynprompt: Literal["DYNPROMPT"]


class InputTypeDict(TypedDict, total=False):
    required: dict[str, tuple]
    optional: dict[str, tuple]
    hidden: HiddenInputTypeDict


class ComfyNodeABC(ABC):
    """The base class ComfyUI's typing offers V1 nodes; it only declares the node attributes."""
    DESCRIPTION: str
    CATEGORY: str
    EXPERIMENTAL: bool = False
    DEPRECATED: bool = False
    API_NODE: bool = False

    @classmethod
    @abstractmethod
    def INPUT_TYPES(cls) -> InputTypeDict:
        ...


class CheckLazyMixin:
    """check_lazy_status asking for every lazy input still missing (ComfyUI's default)."""

    def check_lazy_status(self, **kwargs) -> list[str]:
        need = [name for name, value in kwargs.items() if value is None]
        return need


class FileLocator(TypedDict):
    filename: str
    subfolder: str
    type: Literal["input", "output", "temp"]


UnetApplyFunction = Callable[..., Any]
UnetApplyConds = dict
UnetParams = dict
UnetWrapperFunction = Callable[[UnetApplyFunction, UnetParams], Any]

TYPING_NAMES = ("IO", "ComfyNodeABC", "CheckLazyMixin", "FileLocator", "InputTypeDict", "InputTypeOptions",
                "HiddenInputTypeDict", "UnetApplyFunction", "UnetApplyConds", "UnetParams", "UnetWrapperFunction")


def comfy_types_modules(root: Path) -> dict[str, ModuleType]:
    package = compat_module("comfy.comfy_types", root, package=True)
    typing_module = compat_module("comfy.comfy_types.node_typing", root)
    for name in TYPING_NAMES:
        setattr(package, name, globals()[name])
        setattr(typing_module, name, globals()[name])
    package.node_typing = typing_module
    return {"comfy.comfy_types": package, "comfy.comfy_types.node_typing": typing_module}
