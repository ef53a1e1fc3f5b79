"""An empty compatibility module, marked as vidgraph's and located where ComfyUI's would be."""
from __future__ import annotations

from pathlib import Path
from types import ModuleType


def compat_module(name: str, root: Path, package: bool = False, doc: str | None = None) -> ModuleType:
    """An empty face module; its `__file__` lies where ComfyUI's would, under the base folder
    (packs find ComfyUI's folders from `folder_paths.__file__` and the like)."""
    module = ModuleType(name, doc or f"ComfyUI `{name}` compatibility module (vidgraph)")
    module.__vidgraph_compat__ = True
    parts = name.split(".")
    module.__file__ = str(root.joinpath(*parts, "__init__.py") if package else
                          root.joinpath(*parts[:-1], parts[-1] + ".py"))
    if package:
        module.__path__ = []
    module.__package__ = name if package else name.rpartition(".")[0]
    return module
