"""`comfy_api.latest.ui`'s output helpers for V3 nodes, over vidgraph's own saving (nodes/images.py):
`PreviewImage` / `PreviewMask` write temp previews as vidgraph's PreviewImage node does,
`SavedResult` / `SavedImages` / `PreviewVideo` describe files a node wrote. Each answers `as_dict()`,
the node's `ui` entry (the engine keeps `PreviewText` from engine/compat/v3_io.py).
"""
from __future__ import annotations

from .images import PreviewImage as PreviewImageNode


class SavedResult(dict):
    def __init__(self, filename: str, subfolder: str, type):
        super().__init__(filename=filename, subfolder=subfolder, type=getattr(type, "value", type))

    @property
    def filename(self) -> str:
        return self["filename"]

    @property
    def subfolder(self) -> str:
        return self["subfolder"]


class SavedImages:
    def __init__(self, results: list, is_animated: bool = False):
        self.results, self.is_animated = list(results), is_animated

    def as_dict(self) -> dict:
        return {"images": self.results, **({"animated": (True,)} if self.is_animated else {})}


class PreviewImage:
    def __init__(self, image, animated: bool = False, cls=None, **kwargs):
        self.values = PreviewImageNode().save_images(image, "ComfyUI")["ui"]["images"]
        self.animated = animated

    def as_dict(self) -> dict:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    def __init__(self, mask, animated: bool = False, cls=None, **kwargs):
        image = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(image, animated, cls, **kwargs)


class PreviewVideo:
    def __init__(self, values: list, **kwargs):
        self.values = list(values)

    def as_dict(self) -> dict:
        return {"images": self.values, "animated": (True,)}


def fill_ui(module, registry) -> None:
    for helper in (SavedResult, SavedImages, PreviewImage, PreviewMask, PreviewVideo):
        setattr(module, helper.__name__, helper)


VIDGRAPH_COMPAT_FACES = {f"comfy_api.{version}.ui": fill_ui for version in ("latest", "v0_0_2")}
