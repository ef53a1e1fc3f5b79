"""V3 nodes (`comfy_api.latest.io`): schema-declared node classes, run as V1 classes.

A V3 node subclasses `io.ComfyNode`, describes itself with `define_schema() -> io.Schema` (typed
`io.<Type>.Input` / `.Output` entries) and computes in the classmethod `execute(**inputs)`, answering
`io.NodeOutput(*values, ui=..., expand=...)`. `as_v1(cls)` derives the V1 attributes the engine reads
(INPUT_TYPES, RETURN_TYPES, FUNCTION, ...) from the schema, so a V3 node validates, caches, appears
in /object_info and runs exactly like a V1 node. Packs hand V3 nodes over through
`comfy_entrypoint() -> ComfyExtension` (`get_node_list()`), or in NODE_CLASS_MAPPINGS.
"""
from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from .module import compat_module


class Hidden(str, enum.Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class FolderType(str, enum.Enum):
    input = "input"
    output = "output"
    temp = "temp"


class _Input:
    """One input of a schema; `options` becomes the V1 input's options dict."""
    io_type: Any = "*"

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                 tooltip: str | None = None, lazy: bool | None = None, default: Any = None,
                 min: Any = None, max: Any = None, step: Any = None, multiline: bool | None = None,
                 options: list | None = None, force_input: bool | None = None, raw_link: bool | None = None,
                 placeholder: str | None = None, display_mode: Any = None, round: Any = None,
                 label_on: str | None = None, label_off: str | None = None, advanced: bool | None = None,
                 control_after_generate: Any = None, socketless: bool | None = None, **extra):
        self.id = id
        self.optional = optional
        self.choices = options
        named = {"display_name": display_name, "tooltip": tooltip, "lazy": lazy, "default": default,
                 "min": min, "max": max, "step": step, "multiline": multiline, "forceInput": force_input,
                 "rawLink": raw_link, "placeholder": placeholder, "round": round, "label_on": label_on,
                 "label_off": label_off, "advanced": advanced, "socketless": socketless,
                 "control_after_generate": control_after_generate,
                 "display": getattr(display_mode, "value", display_mode)}
        self.options = {k: v for k, v in {**named, **extra}.items() if v is not None}

    def v1(self) -> tuple:
        return (self.io_type, self.options) if self.options else (self.io_type,)


class _Output:
    io_type: Any = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False, **extra):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list


def io_type(name: str, type_name: str) -> type:
    """A V3 type: `Type.io_type`, `Type.Input(...)`, `Type.Output(...)`."""
    holder = type(name, (), {"io_type": type_name})
    holder.Input = type("Input", (_Input,), {"io_type": type_name})
    holder.Output = type("Output", (_Output,), {"io_type": type_name})
    return holder


class _ComboInput(_Input):
    io_type = "COMBO"

    def v1(self) -> tuple:
        return (list(self.choices or []), self.options) if self.options else (list(self.choices or []),)


TYPES = {
    "Boolean": "BOOLEAN", "Int": "INT", "Float": "FLOAT", "String": "STRING", "Image": "IMAGE",
    "Mask": "MASK", "Latent": "LATENT", "Conditioning": "CONDITIONING", "Sampler": "SAMPLER",
    "Sigmas": "SIGMAS", "Noise": "NOISE", "Guider": "GUIDER", "Clip": "CLIP", "ClipVision": "CLIP_VISION",
    "ClipVisionOutput": "CLIP_VISION_OUTPUT", "ControlNet": "CONTROL_NET", "Vae": "VAE", "Model": "MODEL",
    "StyleModel": "STYLE_MODEL", "Gligen": "GLIGEN", "UpscaleModel": "UPSCALE_MODEL", "Audio": "AUDIO",
    "Video": "VIDEO", "SVG": "SVG", "Point": "POINT", "FaceAnalysis": "FACE_ANALYSIS", "BBOX": "BBOX",
    "SEGS": "SEGS", "AnyType": "*", "Webcam": "WEBCAM", "LoraModel": "LORA_MODEL", "LossMap": "LOSS_MAP",
    "Hooks": "HOOKS", "HookKeyframes": "HOOK_KEYFRAMES", "TimestepsRange": "TIMESTEPS_RANGE",
    "LatentOperation": "LATENT_OPERATION", "FlowControl": "FLOW_CONTROL", "Accumulation": "ACCUMULATION",
    "Mesh": "MESH", "Voxel": "VOXEL", "Photomaker": "PHOTOMAKER", "ModelPatch": "MODEL_PATCH",
    "AudioEncoder": "AUDIO_ENCODER", "AudioEncoderOutput": "AUDIO_ENCODER_OUTPUT", "Color": "COLOR",
    "BoundingBox": "BOUNDING_BOX", "Tracks": "TRACKS", "LatentUpscaleModel": "LATENT_UPSCALE_MODEL",
}


def Custom(type_name: str) -> type:
    return io_type(type_name, type_name)


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    search_aliases: list = field(default_factory=list)
    price_badge: Any = None
    accept_all_inputs: bool = False   # the node also receives inputs its schema does not declare
    is_dev_only: bool = False


class NodeOutput:
    def __init__(self, *values, ui=None, expand=None, block_execution: str | None = None):
        self.result = values if values else None
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution


class ComfyNode:
    """Base of V3 node classes: `define_schema()` and `execute()` are classmethods."""
    hidden = SimpleNamespace()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError


class AnyOptional(dict):
    """Optional inputs that also take any undeclared input (as "*"), for `accept_all_inputs`."""

    def __contains__(self, key) -> bool:
        return True

    def __getitem__(self, key):
        return super().__getitem__(key) if dict.__contains__(self, key) else ("*",)


def is_v3(cls: Any) -> bool:
    return isinstance(cls, type) and callable(getattr(cls, "define_schema", None)) and \
        not hasattr(cls, "RETURN_TYPES")


def _answer(result, blocker, slots: int):
    if isinstance(result, NodeOutput):
        if result.block_execution is not None:
            return tuple(blocker(result.block_execution) for _ in range(slots))
        ui = result.ui.as_dict() if hasattr(result.ui, "as_dict") else result.ui
        answer: dict = {"result": tuple(result.result or ())}
        if ui is not None:
            answer["ui"] = ui
        if result.expand is not None:
            answer["expand"] = result.expand
        return answer
    return result


def as_v1(cls: type) -> type:
    """The V1 class the engine runs for V3 class `cls` (a subclass: classmethods and state stay)."""
    from ..nodecall import ExecutionBlocker
    from .v3_dynamic import nest_dynamic, v1_entries

    schema = cls.define_schema()
    hidden_names = {member.name: member.value for member in schema.hidden}

    def input_types(_cls):
        current = cls.define_schema()
        declared: dict = {"required": {}, "optional": {}}
        for entry in current.inputs:
            for section, name, spec in v1_entries(entry):
                declared[section][name] = spec
        if current.hidden:
            declared["hidden"] = {member.name: member.value for member in current.hidden}
        if current.accept_all_inputs:
            declared["optional"] = AnyOptional(declared["optional"])
        return declared

    def run(self, **kwargs):
        cls.hidden = SimpleNamespace(**{name: kwargs.pop(name, None) for name in hidden_names})
        result = cls.execute(**nest_dynamic(schema.inputs, kwargs))
        if inspect.isawaitable(result):
            async def finish():
                return _answer(await result, ExecutionBlocker, len(schema.outputs))
            return finish()
        return _answer(result, ExecutionBlocker, len(schema.outputs))

    attributes = {
        "INPUT_TYPES": classmethod(input_types), "FUNCTION": "_vidgraph_execute", "_vidgraph_execute": run,
        "RETURN_TYPES": tuple(o.io_type for o in schema.outputs),
        "RETURN_NAMES": tuple(o.display_name or o.id or o.io_type for o in schema.outputs),
        "OUTPUT_IS_LIST": tuple(o.is_output_list for o in schema.outputs),
        "OUTPUT_TOOLTIPS": [o.tooltip or "" for o in schema.outputs] or None,
        "OUTPUT_NODE": schema.is_output_node, "INPUT_IS_LIST": schema.is_input_list,
        "CATEGORY": schema.category, "DESCRIPTION": schema.description,
        "NOT_IDEMPOTENT": schema.not_idempotent, "DEPRECATED": schema.is_deprecated,
        "EXPERIMENTAL": schema.is_experimental, "API_NODE": schema.is_api_node,
        "__vidgraph_v3__": cls,
    }
    for v3_name, v1_name in (("validate_inputs", "VALIDATE_INPUTS"), ("fingerprint_inputs", "IS_CHANGED")):
        method = cls.__dict__.get(v3_name) or next((c.__dict__[v3_name] for c in cls.__mro__[1:]
                                                     if v3_name in c.__dict__ and c is not ComfyNode), None)
        if method is not None:
            attributes[v1_name] = getattr(cls, v3_name)
    if "check_lazy_status" in dir(cls) and getattr(cls, "check_lazy_status") is not None:
        lazy = getattr(cls, "check_lazy_status")
        attributes["check_lazy_status"] = lambda self, **kwargs: lazy(**kwargs)
    return type(cls.__name__, (cls,), attributes)


def io_module(root: Path, name: str) -> ModuleType:
    module = compat_module(name, root)
    for type_name, socket in TYPES.items():
        setattr(module, type_name, io_type(type_name, socket))
    module.Combo = io_type("Combo", "COMBO")
    module.Combo.Input = _ComboInput
    module.MultiCombo = module.Combo
    module.Custom = Custom
    module.Schema = Schema
    module.NodeOutput = NodeOutput
    module.ComfyNode = ComfyNode
    module.Hidden = Hidden
    module.FolderType = FolderType
    from .v3_dynamic import DYNAMIC_TYPES   # (it builds on this module's input classes)
    for type_name, holder in DYNAMIC_TYPES.items():
        setattr(module, type_name, holder)
    module.Input = _Input
    module.Output = _Output
    return module


class PreviewText:
    def __init__(self, value: str, **kwargs):
        self.value = value

    def as_dict(self) -> dict:
        return {"text": [self.value]}


def ui_module(root: Path, name: str) -> ModuleType:
    module = compat_module(name, root)
    module.PreviewText = PreviewText
    return module
