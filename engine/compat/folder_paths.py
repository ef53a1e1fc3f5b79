"""`folder_paths`: ComfyUI's folder module, bound to the running node's Folders, else the registry's."""
from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..context import current_context
from ..folders import LEGACY_FOLDER_NAMES, MODEL_EXTENSIONS, Folders
from .module import compat_module

if TYPE_CHECKING:
    from ..registry import NodeRegistry

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION, imported by many packs

# Methods of Folders that keep ComfyUI's names and signatures.
FORWARDED = ("get_filename_list", "get_full_path", "get_full_path_or_raise", "get_folder_paths",
             "get_input_directory", "get_output_directory", "get_temp_directory", "get_user_directory",
             "get_annotated_filepath", "exists_annotated_filepath", "get_save_image_path",
             "add_model_folder_path")


def folder_paths_module(registry: "NodeRegistry") -> ModuleType:
    def folders() -> Folders:
        ctx = current_context()
        return ctx.folders if ctx is not None else registry.folders

    base = registry.folders
    module = compat_module("folder_paths", Path(base.base_dir))
    module.supported_pt_extensions = set(MODEL_EXTENSIONS)
    module.base_path = str(base.base_dir)
    module.models_dir = str(base.models_dir)
    module.output_directory = str(base.output_dir)
    module.input_directory = str(base.input_dir)
    module.temp_directory = str(base.temp_dir)
    module.user_directory = str(base.user_dir)
    module.folder_names_and_paths = base.folder_names_and_paths
    module.filename_list_cache = {}
    module.extension_mimetypes_cache = {"webp": "image"}
    for name in FORWARDED:
        setattr(module, name, _forward(folders, name))

    def annotated_filepath(name: str):
        bare, directory = folders().annotated_filepath(name)
        return bare, None if directory is None else str(directory)

    def get_directory_by_type(type_name: str):
        return str(folders().directory_for(type_name)) if type_name in ("input", "output", "temp") else None

    def set_directory(attribute: str, module_attribute: str):
        def set_(path: str) -> None:
            setattr(registry.folders, attribute, Path(path).absolute())
            setattr(module, module_attribute, str(Path(path).absolute()))
        set_.__name__ = f"set_{module_attribute}"
        return set_

    def get_input_subfolders() -> list[str]:
        root = folders().input_dir
        found = []
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
                found.append(rel.replace(os.sep, "/"))
        return found

    def get_filename_list_(folder_name: str):
        names = folders().get_filename_list(folder_name)
        return names, {}, 0.0

    def get_system_user_directory(name: str = "default") -> str:
        if not name or not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError("system user names are letters, digits, '_' and '-'")
        return str(folders().user_dir / f"__{name}")

    def get_public_user_directory(user_id: str):
        if not user_id or user_id.startswith("__"):
            return None
        return str(folders().user_dir / user_id)

    module.annotated_filepath = annotated_filepath
    module.get_directory_by_type = get_directory_by_type
    module.set_output_directory = set_directory("output_dir", "output_directory")
    module.set_input_directory = set_directory("input_dir", "input_directory")
    module.set_temp_directory = set_directory("temp_dir", "temp_directory")
    module.set_user_directory = set_directory("user_dir", "user_directory")
    module.get_input_subfolders = get_input_subfolders
    module.get_filename_list_ = get_filename_list_
    module.cached_filename_list_ = lambda folder_name: None   # vidgraph lists folders afresh each time
    module.get_system_user_directory = get_system_user_directory
    module.get_public_user_directory = get_public_user_directory
    module.map_legacy = lambda folder_name: LEGACY_FOLDER_NAMES.get(folder_name, folder_name)
    module.filter_files_extensions = filter_files_extensions
    module.filter_files_content_types = filter_files_content_types
    module.recursive_search = recursive_search
    return module


def _forward(folders, name: str):
    def call(*args, **kwargs):
        return getattr(folders(), name)(*args, **kwargs)
    call.__name__ = name
    return call


def filter_files_extensions(files, extensions) -> list[str]:
    """The files whose extension is one of `extensions` (all of them when it is empty), sorted."""
    wanted = {e.lower() for e in extensions}
    return sorted(f for f in files if not wanted or os.path.splitext(f)[-1].lower() in wanted)


def filter_files_content_types(files, content_types) -> list[str]:
    """The files whose guessed media type ("image", "video", "audio", "model") is in `content_types`."""
    kept = []
    for name in files:
        extension = os.path.splitext(name)[-1].lower()
        guessed = "model" if extension in MODEL_EXTENSIONS else (
            (mimetypes.guess_type(name)[0] or "").split("/")[0] or ("image" if extension == ".webp" else ""))
        if guessed in content_types:
            kept.append(name)
    return kept


def recursive_search(directory: str, excluded_dir_names=None) -> tuple[list[str], dict[str, float]]:
    """(files under `directory` as relative paths, {folder: mtime}) as ComfyUI returns them."""
    if not os.path.isdir(directory):
        return [], {}
    excluded = set(excluded_dir_names or ())
    found, dirs = [], {directory: os.path.getmtime(directory)}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in excluded]
        for d in dirnames:
            path = os.path.join(dirpath, d)
            dirs[path] = os.path.getmtime(path)
        found.extend(os.path.relpath(os.path.join(dirpath, f), directory) for f in filenames)
    return found, dirs
