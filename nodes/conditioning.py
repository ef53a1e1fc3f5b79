"""SVD image conditioning and the per-frame guidance nodes (what the conditioning holds, and how it is
made: `image_conditioning`)."""
from __future__ import annotations

from .common import CONTEXT, MAX_RESOLUTION, NodeInputError, check_model, require_model
from .image_conditioning import encode_clip_vision, svd_image_conditioning
from .image_io import check_rgb_batch
from .svd.denoiser import video_cfg_function


class CLIPVisionEncode:
    DESCRIPTION = "Encode an image with a CLIP vision model (SVD's image embedding)."
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip_vision": ("CLIP_VISION",), "image": ("IMAGE",),
                             "crop": (["center", "none"],)},
                "hidden": CONTEXT}

    def encode(self, clip_vision, image, crop, context):
        image = check_rgb_batch(image, "CLIPVisionEncode", "image")
        require_model(clip_vision, "encode_image", "CLIP_VISION", "CLIPVisionEncode", "clip_vision")
        return (encode_clip_vision(clip_vision, image, context, crop=crop == "center"),)


class SVD_img2vid_Conditioning:
    DESCRIPTION = ("SVD's conditioning from one image: its CLIP embedding, its VAE latent on every frame, "
                   "and the fps / motion / augmentation micro-conditioning; plus an empty video latent.")
    CATEGORY = "conditioning/video_models"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION",), "init_image": ("IMAGE",), "vae": ("VAE",),
            "width": ("INT", {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
            "height": ("INT", {"default": 576, "min": 16, "max": MAX_RESOLUTION, "step": 8}),
            "video_frames": ("INT", {"default": 14, "min": 1, "max": 4096}),
            "motion_bucket_id": ("INT", {"default": 127, "min": 1, "max": 1023,
                                         "tooltip": "More motion with higher values."}),
            "fps": ("INT", {"default": 6, "min": 1, "max": 1024,
                            "tooltip": "The motion rate the model is conditioned on (its fps embedding); "
                                       "the saved file's playback rate is set on the save node."}),
            "augmentation_level": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                             "tooltip": "Noise added to the init image: less faithful, more motion."}),
        }, "hidden": CONTEXT}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        # Naming width and height makes this method own their checks (ComfyUI's rule): range, then
        # the VAE's multiple of 8. The other inputs keep the engine's range checks.
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, int) and not 16 <= value <= MAX_RESOLUTION:
                return f"{name} must be between 16 and {MAX_RESOLUTION}, got {value}"
            if isinstance(value, int) and value % 8:
                return f"{name} must be a multiple of 8 (the VAE's downscale), got {value}"
        return True

    def encode(self, clip_vision, init_image, vae, width, height, video_frames, motion_bucket_id,
               fps, augmentation_level, context):
        node = "SVD_img2vid_Conditioning"
        if width % 8 or height % 8:
            raise NodeInputError(node, "width" if width % 8 else "height",
                                 f"width and height must be multiples of 8, got {width}x{height}")
        if video_frames < 1:
            raise NodeInputError(node, "video_frames", f"must be at least 1, got {video_frames}")
        init_image = check_rgb_batch(init_image, node, "init_image")
        require_model(clip_vision, "encode_image", "CLIP_VISION", node, "clip_vision")
        require_model(vae, "encode", "VAE", node, "vae")
        return svd_image_conditioning(clip_vision, init_image, vae, width, height, video_frames,
                                      {"motion_bucket_id": motion_bucket_id, "fps": fps,
                                       "augmentation_level": augmentation_level}, context, node)


class _VideoCFGGuidance:
    CATEGORY = "sampling/video_models"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    RAMP = ""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "min_cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0,
                                                   "step": 0.5, "round": 0.01})}}

    def patch(self, model, min_cfg):
        check_model(type(self).__name__, model)
        patched = model.clone()
        # cfg 1 with min_cfg 1 is a scale of 1 on every frame: only then may the uncond branch be skipped
        patched.set_cfg_function(video_cfg_function(self.RAMP, float(min_cfg)),
                                 disable_cfg1_optimization=float(min_cfg) != 1.0)
        return (patched,)


class VideoLinearCFGGuidance(_VideoCFGGuidance):
    DESCRIPTION = "Guidance scale per frame, rising linearly from min_cfg (first frame) to the sampler's cfg (last)."
    RAMP = "linear"


class VideoTriangleCFGGuidance(_VideoCFGGuidance):
    DESCRIPTION = "Guidance scale per frame: min_cfg at both ends, the sampler's cfg in the middle frame."
    RAMP = "triangle"


NODE_CLASS_MAPPINGS = {
    "CLIPVisionEncode": CLIPVisionEncode,
    "SVD_img2vid_Conditioning": SVD_img2vid_Conditioning,
    "VideoLinearCFGGuidance": VideoLinearCFGGuidance,
    "VideoTriangleCFGGuidance": VideoTriangleCFGGuidance,
}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPVisionEncode": "CLIP Vision Encode"}
