"""ComfyUI's module-level API, for packs written against it: `nodes`, `folder_paths`, `comfy.*`, ...

These modules are faces over one NodeRegistry (its live class dict and its Folders) and over
the NodeContext of the running node (found through the context variable). vidgraph's own code
never imports them. They are put in `sys.modules` when a registry loads packs; a module of the
same name that vidgraph did not create is left alone.

The engine builds the faces that need neither torch nor HTTP. The other layers add theirs
through one seam, `registry.add_compat_faces({module_name: contribute})`: `contribute(module,
registry)` fills a module (created empty, with its parent packages, when no layer made it yet).
The node pack adds the torch faces (`comfy.samplers`, `comfy.sd`, `latent_preview`, ...) by
exporting `VIDGRAPH_COMPAT_FACES`; the server adds `server` (PromptServer) when it builds its app.
"""
from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable

from .module import compat_module
from .comfy_core import cli_args_module, comfy_types_modules, model_management_module, utils_module
from .execution_api import api_modules, execution_module, graph_modules
from .folder_paths import MAX_RESOLUTION, folder_paths_module
from .prompt_server import server_module
from .stand_ins import install_finder, offer_stand_ins, stand_in_module

if TYPE_CHECKING:
    from ..registry import NodeRegistry

Contribute = Callable[[ModuleType, "NodeRegistry"], None]

__all__ = ["MAX_RESOLUTION", "install", "apply_faces", "compat_module", "Contribute", "offer_stand_ins",
           "stand_in_module"]


def install(registry: "NodeRegistry") -> None:
    current = sys.modules.get("nodes")
    if getattr(current, "__vidgraph_registry__", None) is registry:
        return  # already the face of this registry: packs imported earlier keep the same modules
    root = Path(registry.folders.base_dir)
    modules: dict[str, ModuleType] = {"nodes": nodes_module(registry),
                                      "folder_paths": folder_paths_module(registry)}
    modules["comfy"] = compat_module("comfy", root, package=True)
    modules["comfy.utils"] = utils_module(root)
    modules["comfy.model_management"] = model_management_module(root)
    modules["comfy.cli_args"] = cli_args_module(root)
    modules.update(comfy_types_modules(root))
    modules.update(graph_modules(root))
    modules.update(api_modules(root))
    modules["execution"] = execution_module(root)
    modules["server"] = server_module(root)
    for name in [n for n, m in sys.modules.items() if getattr(m, "__vidgraph_compat__", False)]:
        del sys.modules[name]   # faces of an earlier registry (other layers' included) go
    for name, module in modules.items():
        _put(name, module)
    for name in modules:  # parents know their children as attributes (`comfy.utils`)
        parent, _, child = name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, sys.modules[name])
    install_finder(lambda name: compat_module(name, root, package=True))
    apply_faces(registry, registry.compat_faces)


def apply_faces(registry: "NodeRegistry", faces: dict[str, list[Contribute]]) -> None:
    """Let other layers fill their modules, when this registry's faces are the installed ones."""
    if getattr(sys.modules.get("nodes"), "__vidgraph_registry__", None) is not registry:
        return
    root = Path(registry.folders.base_dir)
    for name, contributors in faces.items():
        module = _ensure(name, root)
        if module is None:
            continue
        for contribute in contributors:
            contribute(module, registry)


def _put(name: str, module: ModuleType) -> bool:
    existing = sys.modules.get(name)
    if existing is None or getattr(existing, "__vidgraph_compat__", False):
        sys.modules[name] = module
        return True
    return False


def _ensure(name: str, root: Path) -> ModuleType | None:
    """The face module `name` (and its parents), created when missing; None when a real module
    of that name exists (vidgraph never shadows one)."""
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        sub = ".".join(parts[:depth])
        module = sys.modules.get(sub)
        if module is None:
            module = compat_module(sub, root, package=depth < len(parts))
            sys.modules[sub] = module
            if depth > 1:
                setattr(sys.modules[".".join(parts[:depth - 1])], parts[depth - 1], module)
        elif not getattr(module, "__vidgraph_compat__", False):
            return None
        elif depth < len(parts) and not hasattr(module, "__path__"):
            module.__path__ = []
    return sys.modules[name]


def nodes_module(registry: "NodeRegistry") -> ModuleType:
    module = compat_module("nodes", Path(registry.folders.base_dir))
    module.__vidgraph_registry__ = registry
    module.NODE_CLASS_MAPPINGS = registry.classes
    module.NODE_DISPLAY_NAME_MAPPINGS = registry.display_names
    module.EXTENSION_WEB_DIRS = registry.web_directories
    module.MAX_RESOLUTION = MAX_RESOLUTION
    module.LOADED_MODULE_DIRS = {}
    return module
