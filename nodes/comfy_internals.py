"""Faces of ComfyUI's model internals for node packs: `comfy.latent_formats`, `comfy.ops`,
`comfy.model_base`, and the ComfyUI names the other `comfy.*` faces offer as stand-ins.

Where vidgraph has the thing, the face is real: latent formats carry the facts (scale factors,
channels, RGB preview factors; SD 1.x and SDXL are vidgraph's own `LatentFormat`s), `comfy.ops`
gives ComfyUI's layer families (`disable_weight_init`, `manual_cast`) as plain torch layers, and
small helpers (`get_attr`, `dtype_size`, ...) do what ComfyUI's do. ComfyUI's own model classes,
its sampler internals and its LoRA/ControlNet/hook machinery are stand-ins
(engine/compat/stand_ins.py): importable, failing when used with a message naming them.
"""
from __future__ import annotations

import enum
import logging

import torch
import torch.nn.functional as F

from vidgraph.engine.compat import offer_stand_ins, stand_in_module

from .lora import MODEL_PART, apply_lora, lora_targets, match_lora
from .model import SD15_LATENT, SDXL_LATENT

log = logging.getLogger(__name__)

# -- comfy.latent_formats ---------------------------------------------------------------------------

class LatentFormat:
    """ComfyUI's latent format: sampler space = VAE space * scale_factor (shifted or normalised)."""
    scale_factor = 1.0
    latent_channels = 4
    latent_dimensions = 2
    latent_rgb_factors = None
    latent_rgb_factors_bias = None
    taesd_decoder_name = None

    def process_in(self, latent):
        return latent * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor


def _rows(factors) -> list[list[float]]:
    return [list(row) for row in factors]


class SD15(LatentFormat):
    def __init__(self, scale_factor=SD15_LATENT.scale_factor):
        self.scale_factor = scale_factor
        self.latent_rgb_factors = _rows(SD15_LATENT.rgb_factors)
        self.taesd_decoder_name = "taesd_decoder"


class SDXL(LatentFormat):
    scale_factor = SDXL_LATENT.scale_factor

    def __init__(self):
        self.latent_rgb_factors = _rows(SDXL_LATENT.rgb_factors)
        self.latent_rgb_factors_bias = [0.1084, -0.0175, -0.0011]
        self.taesd_decoder_name = "taesdxl_decoder"


class _Shifted(LatentFormat):
    latent_channels = 16
    shift_factor = 0.0

    def process_in(self, latent):
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor + self.shift_factor


class SD3(_Shifted):
    scale_factor = 1.5305
    shift_factor = 0.0609
    taesd_decoder_name = "taesd3_decoder"


class Flux(_Shifted):
    scale_factor = 0.3611
    shift_factor = 0.1159
    taesd_decoder_name = "taef1_decoder"


class _Normalised(LatentFormat):
    """Per-channel mean/std normalisation (the video VAEs): x = (z - mean) * scale / std."""
    latents_mean: tuple = ()
    latents_std: tuple = ()

    def _stats(self, latent):
        shape = (1, self.latent_channels) + (1,) * (latent.ndim - 2)
        mean = torch.tensor(self.latents_mean, device=latent.device, dtype=latent.dtype).view(shape)
        std = torch.tensor(self.latents_std, device=latent.device, dtype=latent.dtype).view(shape)
        return mean, std

    def process_in(self, latent):
        mean, std = self._stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent):
        mean, std = self._stats(latent)
        return latent * std / self.scale_factor + mean


class Wan21(_Normalised):
    latent_channels = 16
    latent_dimensions = 3
    latents_mean = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
    latents_std = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


class HunyuanVideo(LatentFormat):
    latent_channels = 16
    latent_dimensions = 3
    scale_factor = 0.476986


class StableAudio1(LatentFormat):
    latent_channels = 64
    latent_dimensions = 1


LATENT_FORMATS = (LatentFormat, SD15, SDXL, SD3, Flux, Wan21, HunyuanVideo, StableAudio1)
# ComfyUI's other formats: importable, failing when instantiated.
OTHER_LATENT_FORMATS = ("SDXL_Playground_2_5", "SD_X4", "SC_Prior", "SC_B", "Mochi", "LTXV", "Cosmos1CV8x8x8",
                        "Wan22", "Hunyuan3Dv2", "Hunyuan3Dv2mini", "ACEAudio", "ChromaRadiance", "HunyuanImage21")


def fill_latent_formats(module, registry) -> None:
    for cls in LATENT_FORMATS:
        setattr(module, cls.__name__, cls)
    offer_stand_ins(module, OTHER_LATENT_FORMATS)


# -- comfy.ops -------------------------------------------------------------------------------------

def cast_bias_weight(s, input=None, dtype=None, device=None, bias_dtype=None):
    """A layer's weight and bias on the input's device and dtype (ComfyUI's manual cast)."""
    if input is not None:
        dtype = dtype or input.dtype
        device = device or input.device
    bias_dtype = bias_dtype or dtype
    weight = s.weight.to(device=device, dtype=dtype)
    bias = None if getattr(s, "bias", None) is None else s.bias.to(device=device, dtype=bias_dtype)
    return weight, bias


class CastWeightBiasOp:
    comfy_cast_weights = False
    weight_function: list = []
    bias_function: list = []


def _layer(base: type, call):
    """ComfyUI's layer over a torch layer: no weight init (weights are loaded), optional manual cast."""
    def reset_parameters(self):
        return None

    def forward(self, *args, **kwargs):
        if self.comfy_cast_weights:
            return call(self, *args, **kwargs)
        return base.forward(self, *args, **kwargs)

    return type(base.__name__, (base, CastWeightBiasOp), {"reset_parameters": reset_parameters,
                                                          "forward": forward, "__module__": "comfy.ops"})


def _linear(s, x):
    weight, bias = cast_bias_weight(s, x)
    return F.linear(x, weight, bias)


def _conv(s, x):
    weight, bias = cast_bias_weight(s, x)
    return s._conv_forward(x, weight, bias)


def _group_norm(s, x):
    weight, bias = cast_bias_weight(s, x) if s.weight is not None else (None, None)
    return F.group_norm(x, s.num_groups, weight, bias, s.eps)


def _layer_norm(s, x):
    weight, bias = cast_bias_weight(s, x) if s.weight is not None else (None, None)
    return F.layer_norm(x, s.normalized_shape, weight, bias, s.eps)


def _embedding(s, x, out_dtype=None):
    weight, _ = cast_bias_weight(s, device=x.device, dtype=out_dtype or s.weight.dtype)
    return F.embedding(x, weight, s.padding_idx, s.max_norm, s.norm_type, s.scale_grad_by_freq, s.sparse)


LAYERS = {"Linear": (torch.nn.Linear, _linear), "Conv1d": (torch.nn.Conv1d, _conv),
          "Conv2d": (torch.nn.Conv2d, _conv), "Conv3d": (torch.nn.Conv3d, _conv),
          "GroupNorm": (torch.nn.GroupNorm, _group_norm), "LayerNorm": (torch.nn.LayerNorm, _layer_norm),
          "Embedding": (torch.nn.Embedding, _embedding)}


def _operations(name: str, cast: bool) -> type:
    layers = {}
    for layer, (base, call) in LAYERS.items():
        cls = _layer(base, call)
        cls.comfy_cast_weights = cast
        layers[layer] = cls

    def conv_nd(cls, dims, *args, **kwargs):
        if dims not in (1, 2, 3):
            raise ValueError(f"comfy.ops: unsupported convolution dimensions {dims}")
        return getattr(cls, f"Conv{dims}d")(*args, **kwargs)

    layers["conv_nd"] = classmethod(conv_nd)
    return type(name, (), layers)


disable_weight_init = _operations("disable_weight_init", cast=False)
manual_cast = _operations("manual_cast", cast=True)


def pick_operations(weight_dtype, compute_dtype, load_device=None, disable_fast_fp8=False,
                    fp8_optimizations=False, scaled_fp8=None, model_config=None):
    return disable_weight_init if compute_dtype is None or weight_dtype == compute_dtype else manual_cast


def fill_ops(module, registry) -> None:
    module.CastWeightBiasOp = CastWeightBiasOp
    module.cast_bias_weight = cast_bias_weight
    module.disable_weight_init = disable_weight_init
    module.manual_cast = manual_cast
    module.pick_operations = pick_operations
    offer_stand_ins(module, ("fp8_ops", "scaled_fp8_ops", "mixed_precision_ops", "cublas_ops", "uncast_bias_weight"))


# -- comfy.model_base and comfy.sd's enums ---------------------------------------------------------

class ModelType(enum.Enum):
    EPS = 1
    V_PREDICTION = 2
    V_PREDICTION_EDM = 3
    STABLE_CASCADE = 4
    EDM = 5
    FLOW = 6
    V_PREDICTION_CONTINUOUS = 7
    FLUX = 8
    IMG_TO_IMG = 9
    FLOW_COSMOS = 10
    IMG_TO_IMG_FLOW = 11


class CLIPType(enum.Enum):
    STABLE_DIFFUSION = 1
    STABLE_CASCADE = 2
    SD3 = 3
    STABLE_AUDIO = 4
    HUNYUAN_DIT = 5
    FLUX = 6
    MOCHI = 7
    LTXV = 8
    HUNYUAN_VIDEO = 9
    PIXART = 10
    COSMOS = 11
    LUMINA2 = 12
    WAN = 13
    HIDREAM = 14
    CHROMA = 15
    ACE = 16
    OMNIGEN2 = 17
    QWEN_IMAGE = 18


def fill_model_base(module, registry) -> None:
    """ComfyUI's model classes (BaseModel, SD21UNCLIP, ...) are stand-ins; ModelType is real."""
    stand_in_module(module)
    module.ModelType = ModelType


# -- names the other comfy.* faces offer --------------------------------------------------------------

def get_attr(obj, attr: str):
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr(obj, attr: str, value):
    *path, name = attr.split(".")
    owner = get_attr(obj, ".".join(path)) if path else obj
    previous = getattr(owner, name)
    setattr(owner, name, value)
    return previous


def set_attr_param(obj, attr: str, value):
    return set_attr(obj, attr, torch.nn.Parameter(value, requires_grad=False))


def copy_to_param(obj, attr: str, value):
    get_attr(obj, attr).data.copy_(value)


def weight_dtype(sd: dict, prefix: str = ""):
    counts: dict = {}
    for key, tensor in sd.items():
        if key.startswith(prefix):
            counts[tensor.dtype] = counts.get(tensor.dtype, 0) + tensor.numel()
    return max(counts, key=counts.get) if counts else None


# ComfyUI's diffusers <-> ldm UNet key facts (the short ones; UNET_MAP_BASIC is a stand-in).
UNET_MAP_ATTENTIONS = {"proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias", "norm.weight", "norm.bias"}
TRANSFORMER_BLOCKS = {f"{part}.{p}" for part in ("norm1", "norm2", "norm3") for p in ("weight", "bias")} | {
    f"{attn}.to_{x}.weight" for attn in ("attn1", "attn2") for x in ("q", "k", "v")} | {
    f"{attn}.to_out.0.{p}" for attn in ("attn1", "attn2") for p in ("weight", "bias")} | {
    "ff.net.0.proj.weight", "ff.net.0.proj.bias", "ff.net.2.weight", "ff.net.2.bias"}
UNET_MAP_RESNET = {"in_layers.2.weight": "conv1.weight", "in_layers.2.bias": "conv1.bias",
                   "emb_layers.1.weight": "time_emb_proj.weight", "emb_layers.1.bias": "time_emb_proj.bias",
                   "out_layers.3.weight": "conv2.weight", "out_layers.3.bias": "conv2.bias",
                   "skip_connection.weight": "conv_shortcut.weight", "skip_connection.bias": "conv_shortcut.bias",
                   "in_layers.0.weight": "norm1.weight", "in_layers.0.bias": "norm1.bias",
                   "out_layers.0.weight": "norm2.weight", "out_layers.0.bias": "norm2.bias"}


def fill_utils_internals(module, registry) -> None:
    for fn in (get_attr, set_attr, set_attr_param, copy_to_param, weight_dtype):
        setattr(module, fn.__name__, fn)
    module.UNET_MAP_ATTENTIONS = UNET_MAP_ATTENTIONS
    module.TRANSFORMER_BLOCKS = TRANSFORMER_BLOCKS
    module.UNET_MAP_RESNET = UNET_MAP_RESNET
    offer_stand_ins(module, ("UNET_MAP_BASIC", "unet_to_diffusers", "pack_latents", "unpack_latents",
                             "calculate_parameters", "convert_sd_to", "flux_to_diffusers", "mmdit_to_diffusers"))


def fill_model_management_internals(module, registry) -> None:
    module.is_nvidia = lambda: torch.cuda.is_available() and torch.version.cuda is not None
    module.is_amd = lambda: torch.cuda.is_available() and getattr(torch.version, "hip", None) is not None
    module.get_torch_device_name = lambda device: (
        f"{device} {torch.cuda.get_device_name(device)}" if getattr(device, "type", "") == "cuda" else str(device))
    module.dtype_size = lambda dtype: torch.tensor([], dtype=dtype).element_size()
    module.unet_manual_cast = lambda weight_dtype, inference_device, supported_dtypes=(): (
        None if weight_dtype in (None, torch.float32) or getattr(inference_device, "type", "cpu") != "cpu"
        else torch.float32)
    module.loaded_models = lambda only_currently_used=False: []
    module.intermediate_dtype = lambda: torch.float32   # what vidgraph's nodes hand each other
    module.supports_cast = lambda device, dtype: True
    offer_stand_ins(module, ("LoadedModel", "load_models_gpu_orig"))


def fill_samplers_internals(module, registry) -> None:
    offer_stand_ins(module, ("calc_cond_batch", "cfg_function", "cast_transformer_options", "sample", "KSampler_Advanced",
                             "get_area_and_mult", "encode_model_conds", "process_conds"))


def fill_sample_internals(module, registry) -> None:
    offer_stand_ins(module, ("prepare_mask", "get_models_from_cond", "convert_cond"))


def fill_sd_internals(module, registry) -> None:
    module.CLIPType = CLIPType
    module.load_lora_for_models = load_lora_for_models
    offer_stand_ins(module, ("load_diffusion_model_state_dict", "load_text_encoder_state_dicts", "model_detection",
                             "load_diffusion_model", "load_clip", "load_state_dict_guess_config", "TEModel"))


# -- comfy.lora and comfy.sd.load_lora_for_models: faces over vidgraph's LoRA (nodes/lora.py) ---------

def load_lora_for_models(model, clip, lora: dict, strength_model: float, strength_clip: float):
    """(patched clone of model, patched clone of clip), as LoraLoader makes them."""
    model, clip, _ = apply_lora(model, clip, lora, strength_model, strength_clip)
    return model, clip


def model_lora_keys_unet(model, key_map: dict | None = None) -> dict:
    """{LoRA base name: weight key} for the MODEL; keys are ComfyUI's (`diffusion_model.<path>.weight`),
    which the MODEL's `add_patches` takes."""
    key_map = {} if key_map is None else key_map
    for base, (part, path) in lora_targets(model=model).items():
        if part == MODEL_PART:
            key_map[base] = f"diffusion_model.{path}.weight"
    return key_map


def model_lora_keys_clip(clip, key_map: dict | None = None) -> dict:
    """{LoRA base name: weight key} for the CLIP, in the keys the CLIP's `add_patches` takes."""
    key_map = {} if key_map is None else key_map
    for base, (part, path) in lora_targets(clip=clip).items():
        key_map[base] = f"{part}.{path}.weight"
    return key_map


def load_lora(lora: dict, to_load: dict, log_missing: bool = True) -> dict:
    """{weight key: patch} for the LoRA's layers named in `to_load` ({base name: weight key}); the
    patches are vidgraph's (LoRA, LoHa, LoKr, diff), which `add_patches` applies."""
    targets = {base: ("target", key[:-len(".weight")]) for base, key in to_load.items() if key.endswith(".weight")}
    found = match_lora(lora, targets)
    if log_missing and found.unmatched:
        log.warning("lora key not loaded: %s", ", ".join(found.unmatched[:20]))
    return found.patches.get("target", {})


def fill_lora(module, registry) -> None:
    for fn in (model_lora_keys_unet, model_lora_keys_clip, load_lora):
        setattr(module, fn.__name__, fn)
    offer_stand_ins(module, ("calculate_weight", "weight_decompose", "pad_tensor_to_shape", "LORA_CLIP_MAP"))


def fill_model_patcher_internals(module, registry) -> None:
    offer_stand_ins(module, ("PatcherInjection", "create_model_options_clone", "set_model_options_patch_replace",
                             "set_model_options_post_cfg_function", "set_model_options_pre_cfg_function",
                             "wipe_lowvram_weight", "LowVramPatch", "get_key_weight", "string_to_seed"))


VIDGRAPH_COMPAT_FACES = {
    "comfy.latent_formats": fill_latent_formats,
    "comfy.ops": fill_ops,
    "comfy.model_base": fill_model_base,
    "comfy.utils": fill_utils_internals,
    "comfy.model_management": fill_model_management_internals,
    "comfy.samplers": fill_samplers_internals,
    "comfy.sample": fill_sample_internals,
    "comfy.sd": fill_sd_internals,
    "comfy.model_patcher": fill_model_patcher_internals,
    "comfy.lora": fill_lora,
}
