"""A small pack of vidgraph's own using ComfyUI's model internals the way AnimateDiff-Evolved,
Advanced-ControlNet, KJNodes and GGUF do: real faces (latent formats, ops, ModelType, key maps,
video types, the sampling API: CFGGuider subclassed as KJNodes' scheduled CFG does) and stand-ins
(ldm, controlnet, hooks, samplers' internals) imported at load time."""
from fractions import Fraction

import torch

import comfy.hooks
import comfy.latent_formats
import comfy.ldm.modules.attention
import comfy.model_base
import comfy.ops
import comfy.utils
import comfy_extras.nodes_model_advanced
from aiohttp import web
from comfy.controlnet import ControlBase
from comfy.model_patcher import ModelPatcher
from comfy.samplers import CFGGuider, calc_cond_batch, sampling_function
from comfy.utils import TRANSFORMER_BLOCKS, UNET_MAP_BASIC
from comfy_api.latest import InputImpl, Types, io
from server import PromptServer

# Packs add static routes straight onto the app at import time (KJNodes does).
if not PromptServer.instance.app.router.frozen:
    PromptServer.instance.app.add_routes([web.static("/internals_static", __path__[0])])

TEMPORAL_BLOCKS = {"time_mixer.weight"}
TEMPORAL_BLOCKS.update(UNET_MAP_BASIC)   # a stand-in behaves as an empty collection
SAMPLING_TYPES = {"eps": comfy.model_base.ModelType.EPS, "lcm": comfy_extras.nodes_model_advanced.LCM}


class MotionPatcher(ModelPatcher):
    """Subclasses vidgraph's MODEL through ComfyUI's name (AnimateDiff-Evolved does)."""


class AdvancedControl(ControlBase):
    """Subclasses a ComfyUI class vidgraph lacks: loads, fails when made."""


class ScaleIn:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "format": (["SD15", "SDXL", "Wan21"],)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"
    CATEGORY = "internals"

    def run(self, samples, format):
        latent_format = getattr(comfy.latent_formats, format)()
        return ({"samples": latent_format.process_in(samples["samples"])},)


class CastLinear:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"
    CATEGORY = "internals"

    def run(self, samples):
        layer = comfy.ops.manual_cast.Linear(4, 4, dtype=torch.float16)
        with torch.no_grad():
            layer.weight.copy_(torch.eye(4))
            layer.bias.zero_()
            out = layer(samples["samples"].movedim(1, -1)).movedim(-1, 1)
        return ({"samples": out},)


class ApplyAdvancedControl:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"strength": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "run"
    CATEGORY = "internals"
    OUTPUT_NODE = True

    def run(self, strength):
        return (AdvancedControl(),)


class VideoFromImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="InternalsVideo", category="internals",
                         inputs=[io.Image.Input("images"),
                                 io.Combo.Input("format", options=Types.VideoContainer.as_input())],
                         outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, images, format):
        return io.NodeOutput(InputImpl.VideoFromComponents(
            Types.VideoComponents(images=images, audio=None, frame_rate=Fraction(12))))


NODE_CLASS_MAPPINGS = {"InternalsScaleIn": ScaleIn, "InternalsCastLinear": CastLinear,
                       "InternalsAdvancedControl": ApplyAdvancedControl, "InternalsVideo": VideoFromImages}
INTERNALS_FACTS = {"attention": comfy.ldm.modules.attention.optimized_attention, "hooks": comfy.hooks.HookGroup,
                   "cond_batch": calc_cond_batch, "guider": CFGGuider, "temporal_blocks": TEMPORAL_BLOCKS, "blocks": TRANSFORMER_BLOCKS,
                   "sampling_types": SAMPLING_TYPES, "patcher": MotionPatcher}


class LoraThroughCore:
    """Calls the core LoraLoader as rgthree's Power Lora Loader does, unpacking ComfyUI's tuple."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "clip": ("CLIP",), "lora_name": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("MODEL", "CLIP")
    FUNCTION = "run"
    CATEGORY = "internals"

    def run(self, model, clip, lora_name):
        from nodes import LoraLoader
        model, clip = LoraLoader().load_lora(model, clip, lora_name, 0.5, 1.0)
        return (model, clip)


NODE_CLASS_MAPPINGS["InternalsLoraThroughCore"] = LoraThroughCore


class FlexibleOptional(dict):
    """rgthree's trick: an optional section that claims every name, so the frontend's dynamic
    widgets (`lora_1`, `lora_2`, ...) reach the node as keyword arguments."""

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return super().__getitem__(key) if dict.__contains__(self, key) else ("*",)


class Flexible:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": FlexibleOptional({"base": ("INT", {"default": 0})})}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "internals"

    def run(self, base=0, **rest):
        return {"ui": {"text": [repr((base, sorted(rest.items())))]}}


NODE_CLASS_MAPPINGS["InternalsFlexible"] = Flexible


class MaskPreview(io.ComfyNode):
    """A V3 node previewing through comfy_api's ui helpers (KJNodes' preview nodes do)."""

    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="InternalsMaskPreview", category="internals", is_output_node=True,
                         inputs=[io.Int.Input("size", default=8)], outputs=[])

    @classmethod
    def execute(cls, size):
        from comfy_api.latest import ui
        mask = torch.linspace(0, 1, size * size).reshape(1, size, size)
        return io.NodeOutput(ui=ui.PreviewMask(mask, cls=cls))


NODE_CLASS_MAPPINGS["InternalsMaskPreview"] = MaskPreview


class ScheduledGuider(CFGGuider):
    """CFG only within [start, end] of the run's steps (as a fraction of them), the cond branch alone
    elsewhere: a subclass that overrides predict_noise and reads the run's schedule."""

    def set_cfg(self, cfg, start=0.0, end=1.0):
        self.cfg, self.start, self.end = cfg, start, end

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        sigmas = model_options["transformer_options"]["sample_sigmas"]
        sigma = float(torch.as_tensor(timestep).reshape(-1)[0])
        step = int(torch.argmin((sigmas[:-1] - sigma).abs()))
        self.steps_seen = getattr(self, "steps_seen", []) + [step]
        inside = self.start <= step / (len(sigmas) - 1) <= self.end
        uncond = self.conds.get("negative") if inside else None
        return sampling_function(self.inner_model, x, timestep, uncond, self.conds.get("positive"),
                                 self.cfg if inside else 1.0, model_options=model_options, seed=seed)


class ScheduledGuidance:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                             "cfg": ("FLOAT", {"default": 5.0}), "start": ("FLOAT", {"default": 0.0}),
                             "end": ("FLOAT", {"default": 1.0})}}

    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "run"
    CATEGORY = "internals"

    def run(self, model, positive, negative, cfg, start, end):
        guider = ScheduledGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg, start, end)
        return (guider,)


NODE_CLASS_MAPPINGS["InternalsScheduledGuidance"] = ScheduledGuidance
