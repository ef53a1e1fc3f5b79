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
    "text_conditioning",  # CLIPTextEncode(SDXL), CLIPSetLastLayer, Conditioning* editing
    "image_latents",  # EmptyLatentImage, LatentUpscale(By), LatentComposite, inpainting masks
    "custom_sampling",  # SamplerCustom(Advanced), guiders, noise, samplers and sigma schedules as nodes
    "model_advanced",  # ModelSamplingDiscrete, RescaleCFG, FreeU_V2 (MODEL patches)
    "motion",      # motion brush, camera paths, keyframes/loops, trajectories (nodes/motion/)
    "long_video",  # ContextWindowsManual
    "frame_interpolation",  # FrameInterpolate (optical flow)
    "extension",   # SVDExtendClip, SVDLongClip (clips of N seconds, drift-corrected)
)

_GATHERED = ("NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "VIDGRAPH_COMPAT_FACES")


def _gather() -> None:
    class_mappings, display_names = {}, {}
    for name in PACK_MODULES:  # a module that fails to import fails the pack, loudly (the registry reports it)
        module = importlib.import_module(f"{__name__}.{name}")
        class_mappings.update(module.NODE_CLASS_MAPPINGS)
        display_names.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    # The torch side of ComfyUI's module API for packs, added through the engine's seam (engine/compat).
    from .comfy_faces import VIDGRAPH_COMPAT_FACES
    globals().update(NODE_CLASS_MAPPINGS=class_mappings, NODE_DISPLAY_NAME_MAPPINGS=display_names,
                     VIDGRAPH_COMPAT_FACES=VIDGRAPH_COMPAT_FACES)


def __getattr__(name: str):
    """The pack's exports are gathered on first use, so code that imports one module of the pack
    (the model files, a bench, a training tool) does not import every node module and its
    libraries (PyAV, OpenCV, ...): about 60 MB of memory less."""
    if name in _GATHERED:
        _gather()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
