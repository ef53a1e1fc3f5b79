"""Nodes for clips longer than the model makes at once: ContextWindowsManual (ComfyUI's node)."""
from __future__ import annotations

from .common import NodeInputError, check_model
from .context_windows import FUSE_METHODS, PYRAMID, SCHEDULES, STANDARD_STATIC, ContextWindows, patch_model


class ContextWindowsManual:
    DESCRIPTION = ("Sample a clip longer than the model's length in overlapping windows of frames, fused at "
                   "every step. For SVD the start image's conditioning is kept in every window.")
    CATEGORY = "model_patches"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        # ComfyUI 0.3.64's inputs, in its order (saved workflows list widget values by it), then freenoise.
        return {"required": {
                    "model": ("MODEL", {"tooltip": "The model to apply context windows to during sampling."}),
                    "context_length": ("INT", {"default": 16, "min": 1, "tooltip": "The length of the context window."}),
                    "context_overlap": ("INT", {"default": 4, "min": 0, "tooltip": "The overlap of the context window."}),
                    "context_schedule": (list(SCHEDULES), {"default": STANDARD_STATIC,
                                         "tooltip": "Step-dependent scheduling algorithm for context windows."}),
                    "context_stride": ("INT", {"default": 1, "min": 1, "tooltip":
                                       "The stride of the context window; only applicable to uniform schedules."}),
                    "closed_loop": ("BOOLEAN", {"default": False, "tooltip":
                                    "Whether to close the context window loop; only applicable to looped schedules."}),
                    "fuse_method": (list(FUSE_METHODS), {"default": PYRAMID,
                                    "tooltip": "The method to use to fuse the context windows."}),
                    "dim": ("INT", {"default": 0, "min": 0, "max": 5,
                                    "tooltip": "The dimension to apply the context windows to."})},
                "optional": {
                    "freenoise": ("BOOLEAN", {"default": False, "tooltip":
                                  "Whether to apply FreeNoise noise shuffling, improves window blending."})}}

    def apply(self, model, context_length, context_overlap, context_schedule, context_stride, closed_loop,
              fuse_method, dim, freenoise=False):
        node = "ContextWindowsManual"
        if dim != 0:
            raise NodeInputError(node, "dim", f"the video models here keep frames on dim 0 (SVD's latent is "
                                              f"[frames, 4, h, w]), got {dim}")
        for name, value, choices in (("context_schedule", context_schedule, SCHEDULES),
                                     ("fuse_method", fuse_method, FUSE_METHODS)):
            if value not in choices:
                raise NodeInputError(node, name, f"{value!r} is not one of {', '.join(choices)}")
        for name, value, least in (("context_length", context_length, 1), ("context_overlap", context_overlap, 0),
                                   ("context_stride", context_stride, 1)):
            if not isinstance(value, int) or value < least:
                raise NodeInputError(node, name, f"must be an integer >= {least}, got {value!r}")
        if context_schedule != "batched" and context_overlap >= context_length:
            raise NodeInputError(node, "context_overlap", f"must be smaller than context_length "
                                                          f"({context_length}), got {context_overlap}")
        settings = ContextWindows(context_length, context_overlap, context_schedule, context_stride,
                                  bool(closed_loop), fuse_method, dim, bool(freenoise))
        return (patch_model(check_model(node, model), settings),)


NODE_CLASS_MAPPINGS = {"ContextWindowsManual": ContextWindowsManual}
NODE_DISPLAY_NAME_MAPPINGS = {"ContextWindowsManual": "Context Windows (Manual)"}
