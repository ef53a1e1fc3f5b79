"""vidgraph's built-in node pack.

It is loaded by the engine's registry exactly like a third-party pack: this module exports
``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``, gathered from the modules below.
"""
import importlib

# Each module exports NODE_CLASS_MAPPINGS (and optionally NODE_DISPLAY_NAME_MAPPINGS).
PACK_MODULES = (
    "core",        # primitives, math, string, compare, text preview
    "images",      # LoadImage, SaveImage, PreviewImage, scaling, batching ...
    "batches",     # RebatchImages, RebatchLatents
    "video",       # animated WEBP/PNG, CreateVideo/SaveVideo (PyAV), LoadVideo
    "latents",     # VAEEncode/Decode, Save/LoadLatent, latent batch nodes
    "loaders",     # checkpoint, VAE, CLIP-vision and UNet loaders
    "conditioning",  # CLIPVisionEncode, SVD_img2vid_Conditioning, per-frame CFG guidance
    "ksampler",    # KSampler, KSamplerAdvanced
    "motion",      # motion brush, camera paths, keyframes/loops, trajectories (nodes/motion/)
    "long_video",  # ContextWindowsManual
    "frame_interpolation",  # FrameInterpolate (optical flow)
    "extension",   # SVDExtendClip, SVDLongClip (clips of N seconds, drift-corrected)
)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

for _name in PACK_MODULES:  # a module that fails to import fails the pack, loudly (the registry reports it)
    _module = importlib.import_module(f"{__name__}.{_name}")
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_module, "NODE_DISPLAY_NAME_MAPPINGS", {}))

# The torch side of ComfyUI's module API for packs, added through the engine's seam (engine/compat).
from .comfy_faces import VIDGRAPH_COMPAT_FACES  # noqa: E402
