"""Numbered output files shared by every saving node.

Names follow ComfyUI (`<prefix>_00001_.png`, sub-folders taken from the prefix, counter one past
the highest file already there). Two rules ComfyUI does not give and we need:
- a file is never overwritten, even when another prompt picked the same number meanwhile: the
  finished temp file is hard-linked to its final name, which fails instead of replacing;
- a crash never leaves a half-written file under a final name: bytes go to a hidden temp file in
  the same folder and only a complete, fsynced file gets the real name.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable

from PIL.PngImagePlugin import PngInfo

from vidgraph.engine import metadata
from vidgraph.engine.files import claim_name
from vidgraph.engine.folders import Folders
from vidgraph.engine.paths import UnsafePathError

from .common import NodeInputError

# How many numbers to skip past files that other writers claimed while we were encoding.
MAX_NAME_RETRIES = 1000


class OutputFiles:
    """The numbered files of one save call, in the output (or temp) folder of `folders`.

    `save(write, extension)` writes one file and returns its ui entry
    `{"filename", "subfolder", "type"}`; each call takes the next number.
    """

    def __init__(self, folders: Folders, filename_prefix: str, kind: str = "output",
                 width: int = 0, height: int = 0):
        root = folders.directory_for(kind)
        root.mkdir(parents=True, exist_ok=True)
        folder, filename, counter, subfolder, _ = folders.get_save_image_path(
            filename_prefix, str(root), width, height)
        self.folder = Path(folder)
        self.filename = filename
        self.counter = counter
        self.subfolder = subfolder
        self.kind = kind

    def save(self, write: Callable[[str], None], extension: str, batch_number: int = 0) -> dict:
        """Run `write(temp_path)` and give the complete file the next free number."""
        stem = self.filename.replace("%batch_num%", str(batch_number))
        tmp = self.folder / f".{stem}.{secrets.token_hex(6)}.tmp.{extension}"
        try:
            write(str(tmp))
            _fsync(tmp)
            for _ in range(MAX_NAME_RETRIES):
                name = f"{stem}_{self.counter:05}_.{extension}"
                self.counter += 1
                if claim_name(tmp, self.folder / name):
                    return {"filename": name, "subfolder": self.subfolder, "type": self.kind}
            raise FileExistsError(f"no free file name for {stem!r} in {self.folder}")
        finally:
            tmp.unlink(missing_ok=True)


def output_files(context, filename_prefix, kind, images, node) -> OutputFiles:
    """The numbered files of a save node, sized by its [B,H,W,C] images (for %width%/%height%;
    images None: no size)."""
    if context is None:
        raise NodeInputError(node, "context", "this node needs the engine's NODE_CONTEXT (its folders)")
    height, width = (0, 0) if images is None else images.shape[1:3]
    try:
        return OutputFiles(context.folders, filename_prefix, kind, width=width, height=height)
    except UnsafePathError as e:
        raise NodeInputError(node, "filename_prefix", str(e)) from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- workflow metadata: the layouts live in engine/metadata.py; these wrap them for Pillow -------

def png_text_info(prompt, extra_pnginfo) -> PngInfo:
    """PNG tEXt chunks, "prompt" then one per extra_pnginfo key ("workflow")."""
    info = PngInfo()
    for key, text in metadata.png_text_items(prompt, extra_pnginfo):
        info.add_text(key, text)
    return info


def apng_comf_info(prompt, extra_pnginfo) -> PngInfo:
    """Animated PNG: private "comf" chunks after the image data, `keyword\\0json` each."""
    info = PngInfo()
    for kind, body in metadata.png_comf_chunks(prompt, extra_pnginfo):
        info.add(kind, body, after_idat=True)
    return info


def embedded_metadata(settings, prompt, extra_pnginfo) -> tuple:
    """(prompt, extra_pnginfo) to embed, or (None, None) under --disable-metadata."""
    if (settings or {}).get("disable_metadata"):
        return None, None
    return prompt, extra_pnginfo
