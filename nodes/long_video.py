"""Nodes for clips longer than the model makes at once: ContextWindowsManual (ComfyUI's node)."""
from __future__ import annotations

from .common import NodeInputError, check_model
from .context_windows import (FRAMES_DIM, FUSE_METHODS, PYRAMID, SCHEDULES, SPATIAL_DIMS, STANDARD_STATIC,
                              ContextWindows, patch_model)

NODE = "ContextWindowsManual"


def _positions(value, input_name: str) -> tuple[int, ...]:
    """A retain list as ComfyUI writes it: window positions separated by commas ("0", "0, 1"); "" = none."""
    if not isinstance(value, str):
        raise NodeInputError(NODE, input_name, f"expected a string of positions like '0' or '0, 1', got {value!r}")
    try:
        positions = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise NodeInputError(NODE, input_name, f"expected positions like '0' or '0, 1', got {value!r}") from None
    if any(p < 0 for p in positions):
        raise NodeInputError(NODE, input_name, f"positions count from 0 (a window's first frame), got {value!r}")
    return positions


def _check_dim(dim):
    if dim == 1:
        raise NodeInputError(NODE, "dim", "1 is the latent's channels; windows run along 0 (frames), "
                                          "2 (height) or 3 (width) of a [frames, channels, height, width] latent")
    if dim != FRAMES_DIM and dim not in SPATIAL_DIMS:
        raise NodeInputError(NODE, "dim", f"the latents here have 4 dimensions [frames, channels, height, width]; "
                                          f"windows run along 0, 2 or 3, got {dim}")


class ContextWindowsManual:
    DESCRIPTION = ("Sample a clip longer than the model's length in overlapping windows of frames, fused at "
                   "every step. For SVD the start image's conditioning is kept in every window.")
    CATEGORY = "model_patches"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        # ComfyUI's inputs in its order (saved workflows list widget values by it): 0.3.64's are required,
        # the ones later versions added are optional, so workflows from either load.
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
                    "dim": ("INT", {"default": 0, "min": 0, "max": 5, "tooltip": "The latent dimension the windows "
                                    "run along: 0 = frames; 2 / 3 = height / width (spatial windows)."})},
                "optional": {
                    "freenoise": ("BOOLEAN", {"default": False, "tooltip":
                                  "Whether to apply FreeNoise noise shuffling, improves window blending."}),
                    "cond_retain_index_list": ("STRING", {"default": "", "tooltip":
                                               "Window positions (e.g. '0') that take the conditioning of that frame "
                                               "of the clip. SVD's start image is in every frame's conditioning already."}),
                    "split_conds_to_windows": ("BOOLEAN", {"default": False, "tooltip":
                                               "With several conditionings (ConditioningCombine), each window uses the "
                                               "one for its part of the clip: the first for the start, the last for the end."}),
                    "latent_retain_index_list": ("STRING", {"default": "", "tooltip":
                                                 "Window positions (e.g. '0') that show that frame of the clip's latent "
                                                 "as a reference; their outputs are dropped (overlapping windows make "
                                                 "the frames they stand in for)."}),
                    "causal_window_fix": ("BOOLEAN", {"default": True, "tooltip":
                                          "Give each window after the first the frame before it as context (its "
                                          "output is dropped), so a window's first frame is not taken as the start."})}}

    def apply(self, model, context_length, context_overlap, context_schedule, context_stride, closed_loop,
              fuse_method, dim, freenoise=False, cond_retain_index_list="", split_conds_to_windows=False,
              latent_retain_index_list="", causal_window_fix=True):
        _check_dim(dim)
        for name, value, choices in (("context_schedule", context_schedule, SCHEDULES),
                                     ("fuse_method", fuse_method, FUSE_METHODS)):
            if value not in choices:
                raise NodeInputError(NODE, name, f"{value!r} is not one of {', '.join(choices)}")
        for name, value, least in (("context_length", context_length, 1), ("context_overlap", context_overlap, 0),
                                   ("context_stride", context_stride, 1)):
            if not isinstance(value, int) or value < least:
                raise NodeInputError(NODE, name, f"must be an integer >= {least}, got {value!r}")
        if context_schedule != "batched" and context_overlap >= context_length:
            raise NodeInputError(NODE, "context_overlap", f"must be smaller than context_length "
                                                          f"({context_length}), got {context_overlap}")
        settings = ContextWindows(context_length, context_overlap, context_schedule, context_stride,
                                  bool(closed_loop), fuse_method, dim, bool(freenoise),
                                  _positions(cond_retain_index_list, "cond_retain_index_list"),
                                  bool(split_conds_to_windows),
                                  _positions(latent_retain_index_list, "latent_retain_index_list"),
                                  bool(causal_window_fix))
        return (patch_model(check_model(NODE, model), settings),)


NODE_CLASS_MAPPINGS = {"ContextWindowsManual": ContextWindowsManual}
NODE_DISPLAY_NAME_MAPPINGS = {"ContextWindowsManual": "Context Windows (Manual)"}
