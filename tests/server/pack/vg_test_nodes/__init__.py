"""A tiny node pack for the server tests: slow progress with previews, PNG output, a timestamp.

Loaded through the registry's custom-node loading, like any third-party pack; no torch.
"""
import io
import os
import signal
import time

from PIL import Image

WEB_DIRECTORY = "./js"


def _jpeg(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(out, format="JPEG")
    return out.getvalue()


class TestSlow:
    """Counts `steps` steps of `delay` seconds, reporting progress (and a preview) at each."""
    CATEGORY = "test"
    OUTPUT_NODE = True
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1, "max": 10000}),
                             "delay": ("FLOAT", {"default": 0.01, "min": 0.0, "max": 60.0}),
                             "tag": ("STRING", {"default": ""})},
                "optional": {"previews": ("BOOLEAN", {"default": False})},
                "hidden": {"context": "NODE_CONTEXT"}}

    def run(self, steps, delay, tag, previews=False, context=None):
        for i in range(steps):
            time.sleep(delay)
            context.progress(i + 1, steps, preview=("JPEG", _jpeg(i % 256)) if previews else None)
        return {"ui": {"text": [f"{tag}:{steps}"]}, "result": (steps,)}


class TestSaveImage:
    """Writes a small PNG into the output folder and reports it the way SaveImage does."""
    CATEGORY = "test"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"size": ("INT", {"default": 16, "min": 1, "max": 512}),
                             "filename_prefix": ("STRING", {"default": "test"}),
                             "tag": ("STRING", {"default": ""})},
                "optional": {"count": ("INT", {"forceInput": True})},
                "hidden": {"context": "NODE_CONTEXT"}}

    def save(self, size, filename_prefix, tag, count=None, context=None):
        folder, name, counter, subfolder, _ = context.folders.get_save_image_path(
            filename_prefix, context.folders.output_dir, size, size)
        filename = f"{name}_{counter:05}_.png"
        Image.new("RGB", (size, size), (0, 128, 255)).save(f"{folder}/{filename}")
        return {"ui": {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}}


class TestStamp:
    """An output node that says when it finished (the benchmark's latency probe)."""
    CATEGORY = "test"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "stamp"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tag": ("STRING", {"default": ""})}}

    def stamp(self, tag):
        return {"ui": {"finished_at": [time.time()], "tag": [tag]}}


class TestFail:
    CATEGORY = "test"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "fail"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"message": ("STRING", {"default": "boom"})}}

    def fail(self, message):
        raise ValueError(message)


class TestCrash:
    """Kills the process running it (a poison job for the queue's dead-letter tests)."""
    CATEGORY = "test"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "crash"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"tag": ("STRING", {"default": ""})}}

    def crash(self, tag):
        os.kill(os.getpid(), signal.SIGKILL)


NODE_CLASS_MAPPINGS = {"TestSlow": TestSlow, "TestSaveImage": TestSaveImage,
                       "TestStamp": TestStamp, "TestFail": TestFail, "TestCrash": TestCrash}
