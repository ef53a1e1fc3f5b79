"""A small ComfyUI-style pack exercising the module surface real packs use (vidgraph's own code)."""
import os

import comfy.model_management
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview
import node_helpers
import server
from comfy.k_diffusion.utils import FolderOfImages
from nodes import MAX_RESOLUTION, ControlNetApply, PreviewImage, SaveImage
from server import PromptServer

web = server.web
HERE = os.path.dirname(os.path.realpath(__file__))
COMFY_ROOT = os.path.dirname(folder_paths.__file__)


@PromptServer.instance.routes.get("/surface/hello")
async def hello(request):
    return web.json_response({"hello": request.query.get("name", "world")})


class HalfSize(SaveImage):
    """Subclasses SaveImage as VHS and essentials do: its own prefix, save_images reused."""

    def __init__(self):
        super().__init__()
        self.prefix_append = "_half"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "method": (["bilinear", "area"],)},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "surface"

    def run(self, images, method, prompt=None, extra_pnginfo=None, unique_id=None):
        bar = comfy.utils.ProgressBar(2)
        comfy.model_management.throw_exception_if_processing_interrupted()
        samples = images.movedim(-1, 1)
        half = comfy.utils.common_upscale(samples, samples.shape[3] // 2, samples.shape[2] // 2, method, "disabled")
        bar.update(1)
        half = half.to(comfy.model_management.intermediate_device()).movedim(1, -1)
        PromptServer.instance.send_sync("surface.progress", {"node": unique_id, "size": list(half.shape)})
        saved = self.save_images(half, "surface/half", prompt, extra_pnginfo)
        bar.update(1)
        return {"ui": saved["ui"], "result": (half,)}


class Samplers:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sampler": (comfy.samplers.KSampler.SAMPLERS,),
                             "scheduler": (comfy.samplers.KSampler.SCHEDULERS,),
                             "width": ("INT", {"default": 64, "max": MAX_RESOLUTION})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "surface"

    def run(self, sampler, scheduler, width):
        callback = latent_preview.prepare_callback(None, 2)
        callback(0, None, None, 2)
        return (f"{sampler}/{scheduler}/{width}/{node_helpers.pillow(len, 'abc')}",)


class ControlNetWithPreview(ControlNetApply):
    """Subclasses a core node vidgraph does not have: the pack loads, running it says why not."""
    CATEGORY = "surface"


NODE_CLASS_MAPPINGS = {"SurfaceHalfSize": HalfSize, "SurfaceSamplers": Samplers,
                       "SurfacePreview": PreviewImage, "SurfaceControlNet": ControlNetWithPreview}
SURFACE_FACTS = {"root": COMFY_ROOT, "here": HERE, "folder_of_images": sorted(FolderOfImages.IMG_EXTENSIONS)}
WEB_DIRECTORY = "./js"
