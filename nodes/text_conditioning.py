"""Text conditioning for the SD image models, and ComfyUI's CONDITIONING editing nodes.

CONDITIONING is ComfyUI's list of `[tensor, dict]` entries; the dict keys used here are ComfyUI's
(`pooled_output`, `width`/`height`/`crop_*`/`target_*`, `aesthetic_score`, `area`, `strength`,
`mask`, `mask_strength`, `set_area_to_bounds`, `start_percent`, `end_percent`); the sampler
(`guidance.py`) reads them. Editing nodes return new lists and never change their input's dicts.
"""
from __future__ import annotations

from contextlib import ExitStack

import torch

from .common import CONTEXT, MAX_RESOLUTION, NodeInputError
from .model_management import resident
from .sd.text_encoder import CLIP
from .sd.tokenizer import PromptSyntaxError

TEXT = ("STRING", {"multiline": True, "dynamicPrompts": True})
STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})


def check_clip(node: str, clip, input_name: str = "clip") -> CLIP:
    if clip is None:
        raise NodeInputError(node, input_name, "no text encoder: the checkpoint has none (an SVD file?); "
                                               "load one with CLIPLoader / DualCLIPLoader")
    if not isinstance(clip, CLIP):
        raise NodeInputError(node, input_name, f"expected a CLIP, got {type(clip).__name__}")
    return clip


def tokenize(node: str, clip: CLIP, text: str, input_name: str = "text") -> dict:
    try:
        return clip.tokenize(text)
    except PromptSyntaxError as error:
        raise NodeInputError(node, input_name, f"prompt weight syntax: {error}") from None


def encode_tokens(clip: CLIP, tokens: dict, context) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond [1, 77k, D], pooled [1, P]) on the CPU, each tower on the compute device while it runs."""
    with ExitStack() as stack:
        for module in clip.modules:
            stack.enter_context(resident(module, context.settings, context.resources))
        return clip.encode_from_tokens(tokens, return_pooled=True)


def check_conditioning(node: str, conditioning, input_name: str = "conditioning") -> list:
    if not (isinstance(conditioning, list) and all(
            isinstance(c, (list, tuple)) and len(c) == 2 and isinstance(c[1], dict) for c in conditioning)):
        raise NodeInputError(node, input_name, "expected CONDITIONING (a list of [tensor, dict] entries)")
    return conditioning


def with_values(conditioning, values: dict) -> list:
    """Every entry with `values` set (a new list of new dicts)."""
    return [[tensor, {**extra, **values}] for tensor, extra in conditioning]


class CLIPTextEncode:
    DESCRIPTION = "Encode a prompt with a CLIP text model into conditioning for an image model."
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": (TEXT[0], {**TEXT[1], "tooltip": "The text to be encoded."}),
                             "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."})},
                "hidden": CONTEXT}

    def encode(self, text, clip, context):
        clip = check_clip("CLIPTextEncode", clip)
        cond, pooled = encode_tokens(clip, tokenize("CLIPTextEncode", clip, text), context)
        return ([[cond, {"pooled_output": pooled}]],)


class CLIPTextEncodeSDXL:
    DESCRIPTION = "SDXL's text encoding with its size conditioning: one prompt per text encoder (G and L)."
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        size = ("INT", {"default": 1024, "min": 0, "max": MAX_RESOLUTION})
        return {"required": {"clip": ("CLIP",), "width": size, "height": size,
                             "crop_w": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION}),
                             "crop_h": ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION}),
                             "target_width": size, "target_height": size, "text_g": TEXT, "text_l": TEXT},
                "hidden": CONTEXT}

    def encode(self, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l, context):
        node = "CLIPTextEncodeSDXL"
        clip = check_clip(node, clip)
        tokens = tokenize(node, clip, text_g, "text_g")
        if "g" not in tokens or "l" not in tokens:
            raise NodeInputError(node, "clip", f"needs SDXL's two text encoders (L and G), got a {clip.family} CLIP")
        tokens["l"] = tokenize(node, clip, text_l, "text_l")["l"]
        empty = clip.tokenize("")
        while len(tokens["l"]) < len(tokens["g"]):  # one chunk of each per 77 tokens, as ComfyUI pads them
            tokens["l"] += empty["l"]
        while len(tokens["l"]) > len(tokens["g"]):
            tokens["g"] += empty["g"]
        cond, pooled = encode_tokens(clip, tokens, context)
        return ([[cond, {"pooled_output": pooled, "width": width, "height": height, "crop_w": crop_w,
                         "crop_h": crop_h, "target_width": target_width, "target_height": target_height}]],)


class CLIPTextEncodeSDXLRefiner:
    DESCRIPTION = "The SDXL refiner's text encoding with its aesthetic score and size."
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        size = ("INT", {"default": 1024, "min": 0, "max": MAX_RESOLUTION})
        return {"required": {"ascore": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01}),
                             "width": size, "height": size, "text": TEXT, "clip": ("CLIP",)},
                "hidden": CONTEXT}

    def encode(self, ascore, width, height, text, clip, context):
        clip = check_clip("CLIPTextEncodeSDXLRefiner", clip)
        cond, pooled = encode_tokens(clip, tokenize("CLIPTextEncodeSDXLRefiner", clip, text), context)
        return ([[cond, {"pooled_output": pooled, "aesthetic_score": ascore, "width": width, "height": height}]],)


class CLIPSetLastLayer:
    DESCRIPTION = "Use an earlier layer of the text encoder (-1 = the last, -2 = the one before, ...)."
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",),
                             "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1})}}

    def set_last_layer(self, clip, stop_at_clip_layer):
        clip = check_clip("CLIPSetLastLayer", clip).clone()
        clip.clip_layer(stop_at_clip_layer)
        return (clip,)


class _ConditioningEdit:
    """CONDITIONING out, made from the conditioning in: what the editing nodes share."""
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)


class ConditioningCombine(_ConditioningEdit):
    DESCRIPTION = "Both conditionings' entries: the sampler predicts each and averages them by weight."
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)}}

    def combine(self, conditioning_1, conditioning_2):
        return (check_conditioning("ConditioningCombine", conditioning_1, "conditioning_1")
                + check_conditioning("ConditioningCombine", conditioning_2, "conditioning_2"),)


class ConditioningConcat(_ConditioningEdit):
    DESCRIPTION = "Append conditioning_from's tokens to each entry of conditioning_to (its first entry only)."
    FUNCTION = "concat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_to": ("CONDITIONING",), "conditioning_from": ("CONDITIONING",)}}

    def concat(self, conditioning_to, conditioning_from):
        node = "ConditioningConcat"
        check_conditioning(node, conditioning_to, "conditioning_to")
        if not check_conditioning(node, conditioning_from, "conditioning_from"):
            raise NodeInputError(node, "conditioning_from", "is empty")
        extra = conditioning_from[0][0]
        out = []
        for tensor, values in conditioning_to:
            if tensor.shape[-1] != extra.shape[-1]:
                raise NodeInputError(node, "conditioning_from", f"token width {extra.shape[-1]} does not match "
                                                                f"conditioning_to's {tensor.shape[-1]}")
            out.append([torch.cat([tensor, extra.to(tensor.dtype)], dim=1), dict(values)])
        return (out,)


class _SetArea(_ConditioningEdit):
    """ConditioningSetArea(Percentage): the same node in two units; each subclass's `area(width, height, x, y)`
    writes ComfyUI's "area" value in its unit."""
    FUNCTION = "append"
    SIZE: tuple
    OFFSET: tuple

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "width": cls.SIZE, "height": cls.SIZE,
                             "x": cls.OFFSET, "y": cls.OFFSET, "strength": STRENGTH}}

    def append(self, conditioning, width, height, x, y, strength):
        check_conditioning(type(self).__name__, conditioning)
        return (with_values(conditioning, {"area": self.area(width, height, x, y), "strength": strength,
                                           "set_area_to_bounds": False}),)


class ConditioningSetArea(_SetArea):
    DESCRIPTION = "Limit the conditioning to a rectangle of the image (pixels, multiples of 8)."
    SIZE = ("INT", {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8})
    OFFSET = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})

    @staticmethod
    def area(width, height, x, y):
        return (height // 8, width // 8, y // 8, x // 8)   # in latent cells


class ConditioningSetAreaPercentage(_SetArea):
    DESCRIPTION = "Limit the conditioning to a rectangle given as fractions of the image."
    SIZE = ("FLOAT", {"default": 1.0, "min": 0, "max": 1.0, "step": 0.01})
    OFFSET = ("FLOAT", {"default": 0, "min": 0, "max": 1.0, "step": 0.01})

    @staticmethod
    def area(width, height, x, y):
        return ("percentage", height, width, y, x)


class ConditioningSetAreaStrength(_ConditioningEdit):
    DESCRIPTION = "Set the weight of the conditioning against the others it is combined with."
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",),
                             "strength": STRENGTH}}

    def append(self, conditioning, strength):
        check_conditioning("ConditioningSetAreaStrength", conditioning)
        return (with_values(conditioning, {"strength": strength}),)


class ConditioningSetMask(_ConditioningEdit):
    DESCRIPTION = "Limit the conditioning to a mask (optionally to the mask's bounding box)."
    FUNCTION = "append"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "mask": ("MASK",),
                             "strength": STRENGTH,
                             "set_cond_area": (["default", "mask bounds"],)}}

    def append(self, conditioning, mask, strength, set_cond_area):
        node = "ConditioningSetMask"
        check_conditioning(node, conditioning)
        if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
            raise NodeInputError(node, "mask", "expected a MASK [batch, height, width]")
        if mask.ndim == 2:
            mask = mask[None]
        return (with_values(conditioning, {"mask": mask, "set_area_to_bounds": set_cond_area != "default",
                                           "mask_strength": strength}),)


class ConditioningZeroOut(_ConditioningEdit):
    DESCRIPTION = "The same conditioning with every value zero (an empty negative for some models)."
    CATEGORY = "advanced/conditioning"
    FUNCTION = "zero_out"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",)}}

    def zero_out(self, conditioning):
        out = []
        for tensor, values in check_conditioning("ConditioningZeroOut", conditioning):
            values = dict(values)
            if isinstance(values.get("pooled_output"), torch.Tensor):
                values["pooled_output"] = torch.zeros_like(values["pooled_output"])
            out.append([torch.zeros_like(tensor), values])
        return (out,)


class ConditioningSetTimestepRange(_ConditioningEdit):
    DESCRIPTION = "Use the conditioning only between two points of sampling (0 = start, 1 = end)."
    CATEGORY = "advanced/conditioning"
    FUNCTION = "set_range"

    @classmethod
    def INPUT_TYPES(cls):
        point = {"min": 0.0, "max": 1.0, "step": 0.001}
        return {"required": {"conditioning": ("CONDITIONING",), "start": ("FLOAT", {"default": 0.0, **point}),
                             "end": ("FLOAT", {"default": 1.0, **point})}}

    def set_range(self, conditioning, start, end):
        check_conditioning("ConditioningSetTimestepRange", conditioning)
        return (with_values(conditioning, {"start_percent": start, "end_percent": end}),)


NODE_CLASS_MAPPINGS = {
    "CLIPTextEncode": CLIPTextEncode,
    "CLIPTextEncodeSDXL": CLIPTextEncodeSDXL,
    "CLIPTextEncodeSDXLRefiner": CLIPTextEncodeSDXLRefiner,
    "CLIPSetLastLayer": CLIPSetLastLayer,
    "ConditioningCombine": ConditioningCombine,
    "ConditioningConcat": ConditioningConcat,
    "ConditioningSetArea": ConditioningSetArea,
    "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
    "ConditioningSetAreaStrength": ConditioningSetAreaStrength,
    "ConditioningSetMask": ConditioningSetMask,
    "ConditioningZeroOut": ConditioningZeroOut,
    "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPTextEncode": "CLIP Text Encode (Prompt)",
                              "CLIPSetLastLayer": "CLIP Set Last Layer",
                              "ConditioningCombine": "Conditioning (Combine)",
                              "ConditioningConcat": "Conditioning (Concat)",
                              "ConditioningSetArea": "Conditioning (Set Area)",
                              "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
                              "ConditioningSetMask": "Conditioning (Set Mask)"}
