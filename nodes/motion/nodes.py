"""Motion control nodes: motion brush, camera paths, keyframes/loops and trajectories for SVD.

Each is a ComfyUI-style node: MODEL in, MODEL out (a patched clone), plus the plain-data nodes that
make their inputs (CAMERA_PATH, TRAJECTORIES). Nothing is registered on a MODEL unless one of
these nodes is in the graph, so plain sampling pays nothing. User guide: docs/motion.md.
"""
from __future__ import annotations

import torch

from ..common import NodeInputError, require_model
from ..guidance import Guider, denoised_for_moved_latent
from . import brush, camera, keyframes, masks, sgi2v, trajectory_plan
from .layout import layout_post_cfg
from .overlay import draw_tracks
from .trajectories import check_tracks, parse_json_text, tracks_from_json, tracks_from_spline

CATEGORY = "video_models/motion"
MAX_FRAMES = 4096
PERCENT = {"min": 0.0, "max": 1.0, "step": 0.01}


def _patchable(model, node: str):
    require_model(model, "clone", "MODEL", node, "model")
    if not callable(getattr(model, "add_post_cfg", None)):
        raise NodeInputError(node, "model", f"expected a MODEL that takes patches, got {type(model).__name__}")
    return model


def _sigma_range(model, node: str, start: float, end: float):
    if not 0.0 <= start <= end <= 1.0:
        raise NodeInputError(node, "end_percent", f"need 0 <= start_percent <= end_percent <= 1, got {start}, {end}")
    if start <= 0.0 and end >= 1.0:
        return None
    return model.percent_range(start, end)


def _checked(node: str, input_name: str, fn, *args):
    """fn(*args), with its ValueError reported as this node's input error."""
    try:
        return fn(*args)
    except ValueError as error:
        raise NodeInputError(node, input_name, str(error)) from None


def _image(node: str, input_name: str, value) -> torch.Tensor:
    """An IMAGE input [frames, height, width, channels], else this node's input error."""
    if not isinstance(value, torch.Tensor) or value.ndim != 4:
        raise NodeInputError(node, input_name, "expected an IMAGE [frames, height, width, channels]")
    return value


def _planned_latent(model, latent, node: str, input_name: str) -> torch.Tensor:
    """A planned video given as a LATENT input, in the model's own latent scale."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise NodeInputError(node, input_name, "expected a LATENT with samples [frames, channels, h, w]")
    return model.latent_format.process_in(samples.float())


class _PatchNode:
    """MODEL in, patched clone out: what the four guidance nodes share."""
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @staticmethod
    def inputs(required: dict, optional: dict | None = None) -> dict:
        """INPUT_TYPES: the model first, then `required` (and `optional`), in ComfyUI's order."""
        return {"required": {"model": ("MODEL",), **required}, **({"optional": optional} if optional else {})}


def _step_range_inputs(start: float, end: float) -> dict:
    """start_percent / end_percent: the part of sampling a patch acts in (0 = first step, 1 = last)."""
    return {"start_percent": ("FLOAT", {"default": start, **PERCENT}),
            "end_percent": ("FLOAT", {"default": end, **PERCENT})}


# ---------------------------------------------------------------- regions

def _region_inputs() -> dict:
    """strength / feather of a brushed region: MotionBrush's, and MotionBrushComposite's to match it."""
    return {"strength": ("FLOAT", {"default": 1.0, **PERCENT, "tooltip": "How freely the region moves: 1 = not "
                                   "pinned at all, 0.5 = half-way pinned to the first frame."}),
            "feather": ("INT", {"default": 16, "min": 0, "max": 1024, "tooltip": "Soft edge width in pixels."})}


class MotionBrush(_PatchNode):
    DESCRIPTION = ("Paint what may move. Outside the mask every frame keeps the first frame's content (the predicted "
                   "clean latent of frames 2..N is pinned to frame 1's at each step); chain several brushes for several "
                   "regions, each with its own strength.")

    @classmethod
    def INPUT_TYPES(cls):
        return cls.inputs({
            "mask": ("MASK", {"tooltip": "1 where things may move, at the image's resolution."}),
            **_region_inputs(),
            **_step_range_inputs(0.0, 1.0),
        }, optional={
            "follow": ("LATENT", {"tooltip": "A planned video (e.g. the start image warped along a camera path, "
                                  "VAE-encoded): pin to its frames instead of the first frame."}),
        })

    def patch(self, model, mask, strength, feather, start_percent=0.0, end_percent=1.0, follow=None):
        node = "MotionBrush"
        _patchable(model, node)
        mask = _checked(node, "mask", masks.as_mask_batch, mask)
        sigma_range = _sigma_range(model, node, start_percent, end_percent)
        planned = None if follow is None else _planned_latent(model, follow, node, "follow")
        return (brush.add_region(model, mask, strength, feather, sigma_range, planned),)


class MotionBrushComposite:
    DESCRIPTION = ("Hold the still part exactly, after decoding: outside the brush's mask each frame takes the first "
                   "frame's pixels (or the reference's), with the same feathered edge. The brush pins the latent; the "
                   "VAE decoder still lets a large moving region shift the rest by a level or two.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "hold"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The decoded clip."}),
            "mask": ("MASK", {"tooltip": "What may move: the MotionBrush's mask."}),
            **_region_inputs(),
        }, "optional": {
            "reference": ("IMAGE", {"tooltip": "What to hold instead of the first frame: one image, or one per "
                                    "frame (e.g. CameraWarpImage's frames)."}),
        }}

    def hold(self, images, mask, strength, feather, reference=None):
        node = "MotionBrushComposite"
        images = _image(node, "images", images)
        mask = _checked(node, "mask", masks.as_mask_batch, mask)
        if reference is not None:
            _image(node, "reference", reference)
        return (_checked(node, "reference", brush.hold_pixels, images, mask, strength, feather, reference),)


class MaskFromShapes:
    DESCRIPTION = ("A MASK drawn as shapes in pixels of a width x height image (what the editor's drawing layer "
                   'writes): [{"type": "rect"|"ellipse", "x0", "y0", "x1", "y1"}, {"type": "polygon", "points": [[x, y], ...]}, '
                   '{"type": "stroke", "points": [...], "radius": r}, ...]; "erase": true clears.')
    CATEGORY = CATEGORY
    RETURN_TYPES = ("MASK",)
    FUNCTION = "draw"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "width": ("INT", {"default": 1024, "min": 8, "max": 16384}),
            "height": ("INT", {"default": 576, "min": 8, "max": 16384}),
            "shapes": ("STRING", {"multiline": True, "default": "[]"}),
        }}

    def draw(self, width, height, shapes):
        data = _checked("MaskFromShapes", "shapes", parse_json_text, shapes, "shapes")
        return (_checked("MaskFromShapes", "shapes", masks.rasterize, data, width, height),)


# ---------------------------------------------------------------- camera

class CameraPath:
    DESCRIPTION = ("A camera move over the clip: a preset scaled by intensity, or (preset 'custom') the end pose below "
                   "or a keyframe list. Feed it to CameraWarpImage to preview it and to plan the layout.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("CAMERA_PATH",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("INT", {"default": 14, "min": 1, "max": MAX_FRAMES}),
            # "presets" gives the editor's path preview the same numbers (web/extensions/motion/draw.js)
            "preset": (list(camera.PRESET_NAMES), {"default": "pan right", "presets": camera.PRESETS}),
            "intensity": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0, "step": 0.05}),
            "easing": (list(camera.EASINGS), {"default": "linear"}),
        }, "optional": {
            "pan_x": ("FLOAT", {"default": 0.0, "min": -2.0, "max": 2.0, "step": 0.01,
                                "tooltip": "custom: camera moves right by this fraction of the width by the last frame"}),
            "pan_y": ("FLOAT", {"default": 0.0, "min": -2.0, "max": 2.0, "step": 0.01,
                                "tooltip": "custom: camera moves down (negative: tilts up), fraction of the height"}),
            "zoom": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01,
                               "tooltip": "custom: zoom on the last frame (2 = push in to half the field of view)"}),
            "roll": ("FLOAT", {"default": 0.0, "min": -360.0, "max": 360.0, "step": 0.5,
                               "tooltip": "custom: camera roll in degrees, clockwise"}),
            "keyframes": ("STRING", {"default": "", "multiline": True, "tooltip": 'custom: [{"frame": 0, "pan_x": 0, '
                                     '"pan_y": 0, "zoom": 1, "roll": 0}, ...]; overrides the end pose when not empty'}),
        }}

    def build(self, frames, preset, intensity, easing, pan_x=0.0, pan_y=0.0, zoom=1.0, roll=0.0, keyframes=""):
        node = "CameraPath"
        if easing not in camera.EASINGS:
            raise NodeInputError(node, "easing", f"unknown easing {easing!r}; expected one of {camera.EASINGS}")
        if preset == "custom":
            if keyframes and keyframes.strip():
                return (_checked(node, "keyframes", camera.keyframed_path, keyframes, frames, easing),)
            end = _checked(node, "zoom", camera.pose_from, {"pan_x": pan_x, "pan_y": pan_y, "zoom": zoom, "roll": roll},
                           camera.IDENTITY, "end pose")
            return (camera.path_to(end, frames, easing),)
        return (_checked(node, "preset", camera.preset_path, preset, intensity, frames, easing),)


class CameraWarpImage:
    DESCRIPTION = ("The start image seen along a camera path: one frame per pose (a preview of the move, and, "
                   "VAE-encoded, the layout for LayoutGuide) and a mask of where the warp had source pixels.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("frames", "valid")
    FUNCTION = "warp"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "camera_path": ("CAMERA_PATH",)},
                "optional": {
                    "depth": ("IMAGE", {"tooltip": "A depth map (brighter = nearer) for parallax: near things pan "
                                        "and zoom more than far ones."}),
                    "parallax": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.05}),
                }}

    def warp(self, image, camera_path, depth=None, parallax=1.0):
        node = "CameraWarpImage"
        _image(node, "image", image)
        if not isinstance(camera_path, list) or not all(isinstance(p, camera.Pose) for p in camera_path):
            raise NodeInputError(node, "camera_path", "expected a CAMERA_PATH from CameraPath")
        nearness = None
        if depth is not None:
            if not isinstance(depth, torch.Tensor) or depth.ndim not in (3, 4):
                raise NodeInputError(node, "depth", "expected an IMAGE (or MASK) depth map")
            nearness = camera.nearness_from_depth(depth, image.shape[1], image.shape[2], parallax)
        return camera.warp_image(image, camera_path, nearness)


class LayoutGuide(_PatchNode):
    DESCRIPTION = ("Make the high-noise steps follow a planned layout video (e.g. the start image warped along a camera "
                   "path, VAE-encoded): the predicted clean latent is pulled towards it within the step range.")

    @classmethod
    def INPUT_TYPES(cls):
        return cls.inputs({
            "layout": ("LATENT", {"tooltip": "The planned frames, VAE-encoded (one latent frame per video frame)."}),
            "strength": ("FLOAT", {"default": 0.9, **PERCENT}),
            **_step_range_inputs(0.0, 0.3),
        }, optional={"valid": ("MASK", {"tooltip": "Where the plan holds (CameraWarpImage's valid output)."})})

    def patch(self, model, layout, strength, start_percent=0.0, end_percent=0.3, valid=None):
        node = "LayoutGuide"
        _patchable(model, node)
        planned = _planned_latent(model, layout, node, "layout")
        if valid is not None:
            valid = _checked(node, "valid", masks.as_mask_batch, valid)
        m = model.clone()
        m.add_post_cfg(layout_post_cfg(planned, strength, valid),
                       sigma_range=_sigma_range(model, node, start_percent, end_percent))
        return (m,)


# ---------------------------------------------------------------- keyframes and loops

class KeyframeEnd(_PatchNode):
    DESCRIPTION = ("End the clip on a given image (the same image as the start: a seamless loop). Bidirectional "
                   "sampling after ViBiDSampler: each step denoises forward from the start image, re-noises, then "
                   "denoises the time-reversed clip conditioned on the end image. Costs a second guided prediction per step.")

    @classmethod
    def INPUT_TYPES(cls):
        return cls.inputs({
            "end_positive": ("CONDITIONING", {"tooltip": "SVD_img2vid_Conditioning of the end image."}),
            "end_negative": ("CONDITIONING",),
        })

    def patch(self, model, end_positive, end_negative):
        node = "KeyframeEnd"
        _patchable(model, node)
        for name, cond in (("end_positive", end_positive), ("end_negative", end_negative)):
            if not (isinstance(cond, list) and cond and isinstance(cond[0], (list, tuple)) and len(cond[0]) == 2):
                raise NodeInputError(node, name, "expected CONDITIONING (from SVD_img2vid_Conditioning of the end image)")
        m = model.clone()
        m.add_denoise_wrapper(keyframes.bidirectional_wrapper(end_positive, end_negative, Guider,
                                                              denoised_for_moved_latent))
        return (m,)


# ---------------------------------------------------------------- trajectories

class SplineToTrajectories:
    DESCRIPTION = ("Trajectories from ComfyUI-KJNodes' SplineEditor coordinates (one spline or a list of splines): "
                   "a box of the given size centred on each spline's first point follows the spline.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("TRAJECTORIES",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "coordinates": ("STRING", {"multiline": True, "default": "", "tooltip": "SplineEditor's coord_str"}),
            "canvas_width": ("INT", {"default": 512, "min": 8, "max": 16384, "tooltip": "SplineEditor's mask_width"}),
            "canvas_height": ("INT", {"default": 512, "min": 8, "max": 16384, "tooltip": "SplineEditor's mask_height"}),
            "box_width": ("INT", {"default": 64, "min": 1, "max": 16384}),
            "box_height": ("INT", {"default": 64, "min": 1, "max": 16384}),
        }}

    def convert(self, coordinates, canvas_width, canvas_height, box_width, box_height):
        tracks = _checked("SplineToTrajectories", "coordinates", tracks_from_spline,
                          coordinates, canvas_width, canvas_height, box_width, box_height)
        return (_checked("SplineToTrajectories", "coordinates", check_tracks, tracks),)


class TrajectoriesFromJSON:
    DESCRIPTION = ('Trajectories as the editor draws them: [{"box": [x0, y0, x1, y1], "path": [[x, y], ...]}, ...] in '
                   "pixels of a width x height image (the path is the box centre over the clip).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("TRAJECTORIES",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "tracks": ("STRING", {"multiline": True, "default": "[]"}),
            "width": ("INT", {"default": 1024, "min": 8, "max": 16384}),
            "height": ("INT", {"default": 576, "min": 8, "max": 16384}),
        }}

    def convert(self, tracks, width, height):
        parsed = _checked("TrajectoriesFromJSON", "tracks", tracks_from_json, tracks, width, height)
        return (_checked("TrajectoriesFromJSON", "tracks", check_tracks, parsed),)


class TrajectoryGuidance(_PatchNode):
    DESCRIPTION = ("Move boxes along their paths (SG-I2V, training-free): at the chosen mid-schedule steps the latent "
                   "is optimised so that features inside each box follow it, using spatial self-attention with frame 1's "
                   "keys and values in the chosen up-block layers, then low-pass fused with the original latent.")

    @classmethod
    def INPUT_TYPES(cls):
        return cls.inputs({
            "trajectories": ("TRAJECTORIES",),
            "iterations": ("INT", {"default": 5, "min": 0, "max": 100, "tooltip": "Optimiser steps per guided step."}),
            "learning_rate": ("FLOAT", {"default": 0.21, "min": 0.0, "max": 10.0, "step": 0.01}),
            "start_at": ("FLOAT", {"default": 0.1, **PERCENT, "tooltip": "First guided step, fraction of the steps."}),
            "end_at": ("FLOAT", {"default": 0.4, **PERCENT, "tooltip": "Last guided step, fraction of the steps."}),
            "heatmap_sigma": ("FLOAT", {"default": 0.4, "min": 0.01, "max": 10.0, "step": 0.01}),
            "fft_cutoff": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 2.0, "step": 0.01,
                                     "tooltip": "Low-pass cut-off of the fusion with the original latent; 0 = off."}),
            "feature_blocks": ("STRING", {"default": "auto", "tooltip": "Output-block indices whose spatial "
                                          "self-attention gives the features, e.g. '7,8' (SVD), or 'auto'."}),
        }, optional={
            "learning_rate_scale": (["constant", "noise"], {"default": "constant", "tooltip": "constant: the "
                                    "paper's step on the latent; noise: the rate times the step's noise level, "
                                    "for guidance that reaches the low-noise steps of a short schedule."}),
        })

    def patch(self, model, trajectories, iterations, learning_rate, start_at, end_at, heatmap_sigma, fft_cutoff,
              feature_blocks="auto", learning_rate_scale="constant"):
        node = "TrajectoryGuidance"
        _patchable(model, node)
        tracks = _checked(node, "trajectories", check_tracks, trajectories)
        if not 0.0 <= start_at <= end_at <= 1.0:
            raise NodeInputError(node, "end_at", f"need 0 <= start_at <= end_at <= 1, got {start_at}, {end_at}")
        blocks = None
        if feature_blocks.strip().lower() != "auto":
            try:
                blocks = tuple(("output", int(b)) for b in feature_blocks.replace(" ", "").split(",") if b)
            except ValueError:
                raise NodeInputError(node, "feature_blocks", f"expected 'auto' or output-block numbers like '7,8', "
                                                             f"got {feature_blocks!r}") from None
            if not blocks:
                raise NodeInputError(node, "feature_blocks", "name at least one output block")
        if learning_rate_scale not in ("constant", "noise"):
            raise NodeInputError(node, "learning_rate_scale", f"expected 'constant' or 'noise', got {learning_rate_scale!r}")
        settings = sgi2v.TrajectorySettings(tuple(tracks), blocks, iterations, learning_rate, heatmap_sigma,
                                            fft_cutoff, start_at, end_at, lr_per_noise=learning_rate_scale == "noise")
        m = model.clone()
        if tracks and iterations > 0:
            m.add_denoise_wrapper(sgi2v.trajectory_wrapper(settings, _basic_guider, denoised_for_moved_latent))
        return (m,)


class TrajectoryWarpImage:
    DESCRIPTION = ("The start image with each box moved along its path, one frame per frame of the clip (a preview of "
                   "the plan, and, VAE-encoded, the layout for LayoutGuide), and a mask of where the plan holds: the "
                   "boxes where they go and where they started (filled in from around them).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("frames", "valid")
    FUNCTION = "warp"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",), "trajectories": ("TRAJECTORIES",),
            "frames": ("INT", {"default": 14, "min": 1, "max": MAX_FRAMES, "tooltip": "The clip's length (video_frames)."}),
            "feather": ("INT", {"default": 2, "min": 0, "max": 64, "tooltip": "Soft edge of the moved boxes, pixels."}),
        }}

    def warp(self, image, trajectories, frames, feather):
        node = "TrajectoryWarpImage"
        _image(node, "image", image)
        tracks = _checked(node, "trajectories", check_tracks, trajectories)
        return trajectory_plan.plan_frames(image[:1], tracks, frames, feather)


class DrawTrajectories:
    DESCRIPTION = ("Draw the trajectories over frames: on the start image (frames = the clip length) it previews the "
                   "planned motion; over a result it shows whether objects kept to their paths.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "draw"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE",),
            "trajectories": ("TRAJECTORIES",),
            "frames": ("INT", {"default": 0, "min": 0, "max": MAX_FRAMES,
                               "tooltip": "Frames to draw (0 = as many as images; more repeats the last image)."}),
        }}

    def draw(self, images, trajectories, frames=0):
        node = "DrawTrajectories"
        _image(node, "images", images)
        tracks = _checked(node, "trajectories", check_tracks, trajectories)
        return (draw_tracks(images, tracks, frames or None),)


def _basic_guider(model, positive):
    return Guider(model, positive, None, 1.0)


NODE_CLASS_MAPPINGS = {
    "MotionBrush": MotionBrush,
    "MotionBrushComposite": MotionBrushComposite,
    "MaskFromShapes": MaskFromShapes,
    "CameraPath": CameraPath,
    "CameraWarpImage": CameraWarpImage,
    "LayoutGuide": LayoutGuide,
    "KeyframeEnd": KeyframeEnd,
    "SplineToTrajectories": SplineToTrajectories,
    "TrajectoriesFromJSON": TrajectoriesFromJSON,
    "TrajectoryGuidance": TrajectoryGuidance,
    "TrajectoryWarpImage": TrajectoryWarpImage,
    "DrawTrajectories": DrawTrajectories,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "MotionBrush": "Motion Brush (regions that move)",
    "MotionBrushComposite": "Motion Brush Composite (hold the rest exactly)",
    "MaskFromShapes": "Mask from Shapes",
    "CameraPath": "Camera Path",
    "CameraWarpImage": "Camera Warp Image (path preview)",
    "LayoutGuide": "Layout Guide (high-noise steps)",
    "KeyframeEnd": "Keyframe End / Loop (bidirectional)",
    "SplineToTrajectories": "Spline to Trajectories (KJNodes)",
    "TrajectoriesFromJSON": "Trajectories from JSON",
    "TrajectoryGuidance": "Trajectory Guidance (SG-I2V)",
    "TrajectoryWarpImage": "Trajectory Warp Image (path layout)",
    "DrawTrajectories": "Draw Trajectories (overlay)",
}
