"""Image nodes: load, save, preview, scale, crop, batch, noise (ComfyUI's names and inputs)."""
from __future__ import annotations

import random

import torch

from vidgraph.engine.context import current_context

from .common import MAX_RESOLUTION, SAVE_HIDDEN, SEED_MAX, NodeInputError, check_fits_in_memory, folders_in_scope
from .image_io import check_image_batch, ImageLimits, load_image_tensors, open_image_checked, tensor_to_pil
from .input_files import input_file_hash, list_input_files, resolve_input_file, validate_input_file
from .outputs import OutputFiles, embedded_metadata, output_files, png_text_info
from .resizing import CROP_METHODS, UPSCALE_METHODS, resize


# -- loading and saving -------------------------------------------------------------------------------

class LoadImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        files = list_input_files(folders or folders_in_scope(), "image")
        return {"required": {"image": (files, {"image_upload": True})},
                "hidden": {"context": "NODE_CONTEXT"}}

    def load_image(self, image, context):
        path = resolve_input_file(context.folders, image, "LoadImage", "image")
        limits = ImageLimits.from_settings(context.settings)
        with open_image_checked(path, "LoadImage", "image", limits) as opened:
            return load_image_tensors(opened, "LoadImage", "image")

    @classmethod
    def IS_CHANGED(cls, image, context=None):
        return input_file_hash(image, context, "LoadImage", "image")

    @classmethod
    def VALIDATE_INPUTS(cls, image, context=None):
        return validate_input_file(image, context, "LoadImage", "image")


def save_image_batch(images, files: OutputFiles, prompt, extra_pnginfo, compress_level: int,
                     node: str) -> list[dict]:
    results = []
    for batch_number, image in enumerate(check_image_batch(images, node)):
        picture = tensor_to_pil(image)
        info = png_text_info(prompt, extra_pnginfo)
        results.append(files.save(
            lambda path: picture.save(path, format="PNG", pnginfo=info, compress_level=compress_level),
            "png", batch_number))
    return results


class SaveImage:
    """ComfyUI's SaveImage, with the surface packs subclass: `output_dir`, `type`, `prefix_append`,
    `compress_level` and `save_images(images, filename_prefix, prompt, extra_pnginfo)`."""
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your output directory."
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    def __init__(self):
        self.type = "output"
        self.prefix_append = ""
        self.compress_level = 4
        self._output_dir = None

    @property
    def output_dir(self) -> str | None:
        """The folder `type` names, in the running node's folders (a subclass may set another)."""
        if self._output_dir is not None:
            return self._output_dir
        folders = folders_in_scope()
        return None if folders is None else str(folders.directory_for(self.type))

    @output_dir.setter
    def output_dir(self, path: str) -> None:
        self._output_dir = path

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "images": ("IMAGE", {"tooltip": "The images to save."}),
                    "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip":
                        "The prefix for the file to save. This may include formatting information "
                        "such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values "
                        "from nodes."})},
                "hidden": SAVE_HIDDEN}

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None,
                    context=None):
        node = type(self).__name__
        context = context if context is not None else current_context()
        images = check_image_batch(images, node)
        files = output_files(context, filename_prefix + self.prefix_append, self.type, images, node)
        prompt, extra_pnginfo = embedded_metadata(context.settings, prompt, extra_pnginfo)
        return {"ui": {"images": save_image_batch(images, files, prompt, extra_pnginfo, self.compress_level, node)}}


class PreviewImage(SaveImage):
    DESCRIPTION = "Saves the input images to the temp directory for a preview."

    def __init__(self):
        super().__init__()
        self.type = "temp"
        self.prefix_append = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
        self.compress_level = 1

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": SAVE_HIDDEN}


class ImageScale:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "upscale_method": (UPSCALE_METHODS,),
            "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
            "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
            "crop": (CROP_METHODS,)}}

    def upscale(self, image, upscale_method, width, height, crop):
        image = check_image_batch(image, "ImageScale", "image")
        _check_choice(upscale_method, UPSCALE_METHODS, "ImageScale", "upscale_method")
        _check_choice(crop, CROP_METHODS, "ImageScale", "crop")
        if width == 0 and height == 0:
            return (image,)
        in_h, in_w = image.shape[1:3]
        if width == 0:  # keep the aspect ratio
            width = max(1, round(in_w * height / in_h))
        elif height == 0:
            height = max(1, round(in_h * width / in_w))
        check_fits_in_memory((image.shape[0], height, width, image.shape[-1]), "ImageScale", "width")
        return (resize(image.movedim(-1, 1), width, height, upscale_method, crop).movedim(1, -1),)


class ImageScaleBy:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "upscale_method": (UPSCALE_METHODS,),
            "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01})}}

    def upscale(self, image, upscale_method, scale_by):
        image = check_image_batch(image, "ImageScaleBy", "image")
        _check_choice(upscale_method, UPSCALE_METHODS, "ImageScaleBy", "upscale_method")
        width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
        if width < 1 or height < 1 or max(width, height) > MAX_RESOLUTION:
            raise NodeInputError("ImageScaleBy", "scale_by", f"scaling {image.shape[2]} x {image.shape[1]} "
                                 f"by {scale_by} gives {width} x {height}, outside 1..{MAX_RESOLUTION}")
        check_fits_in_memory((image.shape[0], height, width, image.shape[-1]), "ImageScaleBy", "scale_by")
        return (resize(image.movedim(-1, 1), width, height, upscale_method).movedim(1, -1),)


def _check_choice(value, choices, node, input_name):
    if value not in choices:
        raise NodeInputError(node, input_name, f"{value!r} is not one of {', '.join(choices)}")


# -- crops and batches --------------------------------------------------------------------------------

class ImageCrop:
    CATEGORY = "image/transform"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        offset = {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {"image": ("IMAGE",), "width": ("INT", size), "height": ("INT", size),
                             "x": ("INT", offset), "y": ("INT", offset)}}

    def crop(self, image, width, height, x, y):
        image = check_image_batch(image, "ImageCrop", "image")
        # An offset past the edge still yields one column/row, as in ComfyUI.
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :],)


class ImageFromBatch:
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "frombatch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
            "length": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def frombatch(self, image, batch_index, length):
        image = check_image_batch(image, "ImageFromBatch", "image")
        batch_index = min(image.shape[0] - 1, batch_index)  # clamped, as ComfyUI does
        length = min(image.shape[0] - batch_index, length)
        return (image[batch_index:batch_index + length].clone(),)


class RepeatImageBatch:
    CATEGORY = "image/batch"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "amount": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def repeat(self, image, amount):
        image = check_image_batch(image, "RepeatImageBatch", "image")
        check_fits_in_memory((image.shape[0] * amount, *image.shape[1:]), "RepeatImageBatch", "amount")
        return (image.repeat((amount, 1, 1, 1)),)


class ImageBatch:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    def batch(self, image1, image2):
        image1 = check_image_batch(image1, "ImageBatch", "image1")
        image2 = check_image_batch(image2, "ImageBatch", "image2")
        if image2.shape[-1] != image1.shape[-1]:
            raise NodeInputError("ImageBatch", "image2", f"has {image2.shape[-1]} channels, "
                                 f"image1 has {image1.shape[-1]}")
        if image1.shape[1:] != image2.shape[1:]:  # fit image2 to image1, as ComfyUI does
            image2 = resize(image2.movedim(-1, 1), image1.shape[2], image1.shape[1],
                            "bilinear", "center").movedim(1, -1)
        return (torch.cat((image1, image2), dim=0),)


class EmptyImage:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {
            "width": ("INT", size), "height": ("INT", size),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
            "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"})}}

    def generate(self, width, height, batch_size=1, color=0):
        channels = [((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)]
        check_fits_in_memory((batch_size, height, width, 3), "EmptyImage", "batch_size")
        pixel = torch.tensor(channels, dtype=torch.float32)
        return (pixel.expand(batch_size, height, width, 3).clone(),)


class ImageAddNoise:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                             "tooltip": "The random seed used for creating the noise."}),
            "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01})}}

    def repeat(self, image, seed, strength):
        image = check_image_batch(image, "ImageAddNoise", "image")
        # Seeding torch's *global* CPU generator is part of ComfyUI's behaviour, not a slip:
        # later nodes that draw from it (SVD's augmentation noise) depend on this state, and the
        # parity case relies on it. So no private torch.Generator here.
        generator = torch.manual_seed(seed)
        noise = torch.randn(image.size(), generator=generator, device="cpu").to(image)
        return (torch.clamp(image + strength * noise, 0.0, 1.0),)


NODE_CLASS_MAPPINGS = {
    "LoadImage": LoadImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "ImageCrop": ImageCrop,
    "ImageFromBatch": ImageFromBatch,
    "RepeatImageBatch": RepeatImageBatch,
    "ImageBatch": ImageBatch,
    "EmptyImage": EmptyImage,
    "ImageAddNoise": ImageAddNoise,
}

# Only the names ComfyUI gives; the other nodes show their class name, as there.
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImage": "Load Image",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImageCrop": "Image Crop",
    "ImageBatch": "Batch Images",
}
