"""File widgets (LoadImage.image, LoadVideo.file, LoadLatent.latent): list the input folder, resolve a
chosen name inside it, and the VALIDATE_INPUTS / IS_CHANGED bodies those nodes share."""
from __future__ import annotations

import hashlib
import mimetypes
import os

from vidgraph.engine.paths import UnsafePathError, check_part

from .common import NodeInputError, folders_in_scope


def list_input_files(folders, media: str) -> list[str]:
    """Top-level files of the input folder whose guessed type is `media` ("image" or "video")."""
    if folders is None or not folders.input_dir.is_dir():
        return []
    names = []
    for entry in os.scandir(folders.input_dir):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        guessed = mimetypes.guess_type(entry.name)[0] or ""
        if guessed.split("/")[0] == media:
            try:
                folders.resolve_input(entry.name)  # drops symlinks that lead outside
            except UnsafePathError:
                continue
            names.append(entry.name)
    return sorted(names)


def resolve_input_file(folders, name, node: str, input_name: str):
    """The path of input file `name` ("x.png", "sub/x.png", "x.png [output]"), contained and existing."""
    if not isinstance(name, str) or not name:
        raise NodeInputError(node, input_name, f"expected a file name, got {name!r}")
    try:
        path = folders.resolve_input(name)
    except UnsafePathError as e:
        raise NodeInputError(node, input_name, f"unsafe file name {name!r}: {e}") from None
    if not path.is_file():
        raise NodeInputError(node, input_name, f"file {name!r} not found in {folders.input_dir}")
    return path


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_input_file(name, context, node: str, input_name: str):
    """VALIDATE_INPUTS for file widgets: True, or the error text. Containment is always checked."""
    folders = folders_in_scope(context)
    try:
        if folders is None:  # no folder to look in yet: at least refuse names that could climb
            if not isinstance(name, str) or not name:
                raise NodeInputError(node, input_name, f"expected a file name, got {name!r}")
            try:
                check_part(name)
            except UnsafePathError as e:
                raise NodeInputError(node, input_name, f"unsafe file name {name!r}: {e}") from None
        else:
            resolve_input_file(folders, name, node, input_name)
    except NodeInputError as e:
        return str(e)
    return True


def input_file_hash(name, context, node: str, input_name: str):
    """IS_CHANGED for file widgets: the file's sha256, so a replaced file is loaded again.

    Without folders in scope (an engine that calls IS_CHANGED without a context) it falls back to
    the name: NaN would also re-run everything downstream of the file, every prompt.
    """
    folders = folders_in_scope(context)
    if folders is None:
        return name
    try:
        return sha256_of(resolve_input_file(folders, name, node, input_name))
    except (NodeInputError, OSError):
        return name  # the run reports the problem
