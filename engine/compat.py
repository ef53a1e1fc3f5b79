"""ComfyUI's module-level API, for packs written against it: `nodes`, `folder_paths`, `comfy.*`.

These modules are a face over one NodeRegistry (its live class dict and its Folders) and over
the NodeContext of the running node (found through the context variable). vidgraph's own code
never imports them. They are put in `sys.modules` when a registry loads packs; a module of the
same name that vidgraph did not create is left alone.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING

from .context import current_context
from .folders import MODEL_EXTENSIONS, Folders
from .interrupt import Interrupted
from .nodecall import ExecutionBlocker

if TYPE_CHECKING:
    from .registry import NodeRegistry

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION, imported by many packs


def install(registry: "NodeRegistry") -> None:
    current = sys.modules.get("nodes")
    if getattr(current, "__vidgraph_registry__", None) is registry:
        return  # already the face of this registry: packs imported earlier keep the same modules
    modules = {
        "nodes": nodes_module(registry),
        "folder_paths": folder_paths_module(registry),
    }
    comfy = _module("comfy", "ComfyUI compatibility package (vidgraph)")
    comfy.__path__ = []
    comfy.utils = utils_module()
    comfy.model_management = model_management_module()
    modules.update({"comfy": comfy, "comfy.utils": comfy.utils,
                    "comfy.model_management": comfy.model_management})
    execution = _module("comfy_execution", "ComfyUI compatibility package (vidgraph)")
    execution.__path__ = []
    execution.graph = _module("comfy_execution.graph", "ExecutionBlocker for packs (vidgraph)")
    execution.graph.ExecutionBlocker = ExecutionBlocker
    modules.update({"comfy_execution": execution, "comfy_execution.graph": execution.graph})
    for name, module in modules.items():
        existing = sys.modules.get(name)
        if existing is None or getattr(existing, "__vidgraph_compat__", False):
            sys.modules[name] = module


def _module(name: str, doc: str) -> ModuleType:
    module = ModuleType(name, doc)
    module.__vidgraph_compat__ = True
    return module


def nodes_module(registry: "NodeRegistry") -> ModuleType:
    module = _module("nodes", "ComfyUI `nodes` compatibility module (vidgraph)")
    module.__vidgraph_registry__ = registry
    module.NODE_CLASS_MAPPINGS = registry.classes
    module.NODE_DISPLAY_NAME_MAPPINGS = registry.display_names
    module.EXTENSION_WEB_DIRS = registry.web_directories
    module.MAX_RESOLUTION = MAX_RESOLUTION
    return module


def folder_paths_module(registry: "NodeRegistry") -> ModuleType:
    """`folder_paths` bound to the running node's Folders, else the registry's."""
    def folders() -> Folders:
        ctx = current_context()
        return ctx.folders if ctx is not None else registry.folders

    module = _module("folder_paths", "ComfyUI `folder_paths` compatibility module (vidgraph)")
    base = registry.folders
    module.supported_pt_extensions = set(MODEL_EXTENSIONS)
    module.base_path = str(base.base_dir)
    module.models_dir = str(base.models_dir)
    module.output_directory = str(base.output_dir)
    module.input_directory = str(base.input_dir)
    module.temp_directory = str(base.temp_dir)
    module.user_directory = str(base.user_dir)
    module.folder_names_and_paths = base.folder_names_and_paths
    for name in ("get_filename_list", "get_full_path", "get_full_path_or_raise", "get_folder_paths",
                 "get_input_directory", "get_output_directory", "get_temp_directory",
                 "get_user_directory", "get_annotated_filepath", "annotated_filepath",
                 "exists_annotated_filepath", "get_save_image_path", "add_model_folder_path"):
        setattr(module, name, _forward(folders, name))
    module.get_directory_by_type = lambda kind: str(folders().directory_for(kind)) if kind in (
        "input", "output", "temp") else None
    module.filter_files_extensions = lambda files, extensions: sorted(
        f for f in files if not extensions or any(f.lower().endswith(e.lower()) for e in extensions))
    return module


def _forward(folders, name: str):
    def call(*args, **kwargs):
        return getattr(folders(), name)(*args, **kwargs)
    call.__name__ = name
    return call


def utils_module() -> ModuleType:
    module = _module("comfy.utils", "ComfyUI `comfy.utils` compatibility module (vidgraph)")
    module.ProgressBar = ProgressBar
    return module


class ProgressBar:
    """comfy.utils.ProgressBar: reports through the running node's context (and checks interrupt)."""

    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total) if self.total else value
        ctx = current_context()
        if ctx is not None:
            # ComfyUI previews are (format, PIL image, size); only ready-encoded bytes pass through.
            usable = preview if preview and isinstance(preview[1], (bytes, bytearray)) else None
            ctx.progress(self.current, self.total, tuple(usable[:2]) if usable else None)

    def update(self, value):
        self.update_absolute(self.current + value)


def model_management_module() -> ModuleType:
    module = _module("comfy.model_management", "ComfyUI `comfy.model_management` compatibility (vidgraph)")
    module.InterruptProcessingException = Interrupted

    def processing_interrupted() -> bool:
        ctx = current_context()
        return ctx is not None and ctx.interrupted

    def throw_exception_if_processing_interrupted() -> None:
        ctx = current_context()
        if ctx is not None:
            ctx.check_interrupt()

    def interrupt_current_processing(value: bool = True) -> None:
        ctx = current_context()
        if ctx is not None:
            (ctx.interrupt_flag.set if value else ctx.interrupt_flag.clear)()

    module.processing_interrupted = processing_interrupted
    module.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    module.interrupt_current_processing = interrupt_current_processing
    module.soft_empty_cache = lambda *args, **kwargs: None
    return module
