"""The node registry: node classes by name, loaded from packs, served as `/object_info`.

A pack is a module exporting NODE_CLASS_MAPPINGS (and optionally NODE_DISPLAY_NAME_MAPPINGS and
WEB_DIRECTORY): vidgraph's built-in `vidgraph.nodes`, a `.py` file or package in a custom-node
folder, or a module named by a `vidgraph.nodes` entry point. A pack that fails to import, or that
redefines a node name already registered, is recorded in `load_errors` and skipped as a whole.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, NamedTuple

from . import compat
from .compat import v3_io
from .folders import Folders
from .spec import InvalidNodeClass, NodeSpec

log = logging.getLogger(__name__)


# Set on modules imported as custom-node packs, so a later registry may replace them (but never
# a standard or third-party module that happens to share the name).
PACK_MARK = "__vidgraph_pack_path__"


class PackLoadError(NamedTuple):
    pack: str
    path: str
    reason: str


class NodeRegistry:
    def __init__(self, folders: Folders | None = None):
        self.folders = folders if folders is not None else Folders()
        self.classes: dict[str, type] = {}            # live: `nodes.NODE_CLASS_MAPPINGS` for packs
        self.display_names: dict[str, str] = {}       # live: `nodes.NODE_DISPLAY_NAME_MAPPINGS`
        self.node_packs: dict[str, str] = {}          # node name -> pack name
        self.python_modules: dict[str, str] = {}
        self.web_directories: dict[str, Path] = {}
        self.load_errors: list[PackLoadError] = []
        self.loaded_packs: list[str] = []
        self.compat_faces: dict[str, list] = {}       # module name -> contributors (see compat)
        self._specs: dict[str, NodeSpec] = {}

    def load_compat_faces(self, module_name: str) -> bool:
        """Add the faces a module exports as VIDGRAPH_COMPAT_FACES (imported by name)."""
        try:
            faces = getattr(importlib.import_module(module_name), "VIDGRAPH_COMPAT_FACES", {})
        except Exception:
            self.load_errors.append(PackLoadError(module_name, module_name, _import_failure()))
            return False
        self.add_compat_faces(faces)
        return True

    def add_compat_faces(self, faces: dict) -> None:
        """Compatibility modules another layer fills: {module name: contribute(module, registry)}."""
        for name, contribute in faces.items():
            contributors = self.compat_faces.setdefault(name, [])
            if contribute not in contributors:
                contributors.append(contribute)
        compat.apply_faces(self, {name: [c] for name, c in faces.items()})

    # -- registering -------------------------------------------------------------------------

    def register(self, name: str, cls: type, display_name: str | None = None, pack: str = "vidgraph",
                 python_module: str | None = None) -> NodeSpec:
        if name in self.classes and self.classes[name] is not cls:
            raise ValueError(f"node {name!r} is already registered by pack {self.node_packs.get(name, '?')!r}")
        spec = NodeSpec(name, cls, display_name or self.display_names.get(name), pack, python_module,
                        self.folders)
        self.classes[name] = cls
        if display_name:
            self.display_names[name] = display_name
        self.node_packs[name] = pack
        if python_module:
            self.python_modules[name] = python_module
        self._specs[name] = spec
        return spec

    def register_pack(self, pack: str, mappings: Any, display_names: Any = None,
                      python_module: str | None = None, path: str = "") -> bool:
        """Register every node of one pack, or none of them (the reason goes to load_errors).
        V3 classes (`io.ComfyNode`) are registered as the V1 classes derived from their schema."""
        if isinstance(mappings, dict) and any(v3_io.is_v3(cls) for cls in mappings.values()):
            try:
                v3_names = {name: cls.define_schema().display_name for name, cls in mappings.items()
                            if v3_io.is_v3(cls)}
            except Exception:   # a schema using what vidgraph lacks: the pack fails, with the reason
                self.load_errors.append(PackLoadError(pack, path, _import_failure()))
                return False
            mappings = {name: v3_io.as_v1(cls) if name in v3_names else cls for name, cls in mappings.items()}
            display_names = {**{n: d for n, d in v3_names.items() if d}, **(display_names or {})}
        problem = self._pack_problem(mappings, display_names)
        if problem is None:
            try:
                for name, cls in mappings.items():
                    NodeSpec(name, cls)  # checks the class declares what a node must
            except InvalidNodeClass as e:
                problem = str(e)
        if problem is not None:
            self.load_errors.append(PackLoadError(pack, path, problem))
            return False
        for name, cls in mappings.items():
            self.register(name, cls, (display_names or {}).get(name), pack, python_module)
        self.loaded_packs.append(pack)
        return True

    def _pack_problem(self, mappings: Any, display_names: Any) -> str | None:
        if not isinstance(mappings, dict):
            return "NODE_CLASS_MAPPINGS is missing or not a dict"
        if display_names is not None and not isinstance(display_names, dict):
            return "NODE_DISPLAY_NAME_MAPPINGS is not a dict"
        clashes = [n for n, cls in mappings.items() if n in self.classes and self.classes[n] is not cls]
        if clashes:
            owners = ", ".join(f"{n!r} (from {self.node_packs.get(n, '?')})" for n in clashes)
            return f"redefines existing node names: {owners}"
        return None

    # -- loading packs -----------------------------------------------------------------------

    def load_module_pack(self, module_name: str, pack: str | None = None) -> bool:
        """Import a pack by module name (the built-in pack is `vidgraph.nodes`)."""
        pack = pack or module_name
        compat.install(self)
        try:
            module = importlib.import_module(module_name)
        except Exception:
            self.load_errors.append(PackLoadError(pack, module_name, _import_failure()))
            return False
        return self._register_module(pack, module, module_name, python_module=module_name)

    def load_custom_node_dirs(self, dirs: Iterable[str | os.PathLike]) -> None:
        """Load each `.py` file and package (a folder with `__init__.py`) in each folder, sorted."""
        compat.install(self)
        for directory in dirs:
            directory = Path(directory)
            if not directory.is_dir():
                self.load_errors.append(PackLoadError(str(directory), str(directory), "not a directory"))
                continue
            for entry in sorted(directory.iterdir(), key=lambda p: p.name):
                if entry.name.endswith(".disabled") or entry.name.startswith((".", "__")):
                    continue
                if entry.is_file() and entry.suffix == ".py":
                    self.load_pack_path(entry)
                elif entry.is_dir() and (entry / "__init__.py").is_file():
                    self.load_pack_path(entry)

    def load_pack_path(self, path: str | os.PathLike) -> bool:
        path = Path(path)
        module_name = path.stem if path.is_file() else path.name
        init = path if path.is_file() else path / "__init__.py"
        compat.install(self)
        existing = sys.modules.get(module_name)
        if existing is not None and not hasattr(existing, PACK_MARK) \
                and getattr(existing, "__file__", None) != str(init):
            self.load_errors.append(PackLoadError(module_name, str(path),
                                                  f"its name clashes with the module {module_name!r} "
                                                  "already imported; rename the pack's file or folder"))
            return False
        if existing is not None:  # a pack of the same name loaded earlier (another registry): replace it
            for name in [n for n in sys.modules if n == module_name or n.startswith(module_name + ".")]:
                del sys.modules[name]
        try:
            spec = importlib.util.spec_from_file_location(
                module_name, init, submodule_search_locations=None if path.is_file() else [str(path)])
            module = importlib.util.module_from_spec(spec)
            setattr(module, PACK_MARK, str(path))
            sys.modules[module_name] = module
            # What a pack prints while it loads is a log line, not output: stdout stays clean for --json.
            with contextlib.redirect_stdout(sys.stderr):
                spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(module_name, None)
            self.load_errors.append(PackLoadError(module_name, str(path), _import_failure()))
            return False
        web = self._web_directory(module, path)
        ok = self._register_module(module_name, module, str(path), python_module=f"custom_nodes.{module_name}")
        if ok and web is not None:
            self.web_directories[module_name] = web
        return ok

    def load_entry_points(self, group: str = "vidgraph.nodes") -> None:
        """Packs named by installed distributions: the entry point loads a module or a mapping."""
        compat.install(self)
        for entry_point in importlib.metadata.entry_points(group=group):
            try:
                loaded = entry_point.load()
            except Exception:
                self.load_errors.append(PackLoadError(entry_point.name, entry_point.value, _import_failure()))
                continue
            if isinstance(loaded, ModuleType):
                self._register_module(entry_point.name, loaded, entry_point.value,
                                      python_module=loaded.__name__)
            else:
                self.register_pack(entry_point.name, loaded, python_module=entry_point.value,
                                   path=entry_point.value)

    def _register_module(self, pack: str, module: ModuleType, path: str, python_module: str) -> bool:
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is None and callable(getattr(module, "comfy_entrypoint", None)):
            try:
                mappings = _entrypoint_nodes(module.comfy_entrypoint)
            except Exception:
                self.load_errors.append(PackLoadError(pack, path, _import_failure()))
                return False
        if mappings is None:
            self.load_errors.append(PackLoadError(pack, path, "the module exports no NODE_CLASS_MAPPINGS"))
            return False
        registered = self.register_pack(pack, mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None),
                                        python_module, path)
        faces = getattr(module, "VIDGRAPH_COMPAT_FACES", None)
        if registered and isinstance(faces, dict):   # after the pack's nodes: faces may hand them out
            self.add_compat_faces(faces)
        return registered

    @staticmethod
    def _web_directory(module: ModuleType, path: Path) -> Path | None:
        base = path if path.is_dir() else path.parent
        web = getattr(module, "WEB_DIRECTORY", None)
        if web is None and path.is_dir() and (path / "pyproject.toml").is_file():
            import tomllib

            try:
                web = tomllib.loads((path / "pyproject.toml").read_text())["tool"]["comfy"]["web"]
            except (KeyError, TypeError, ValueError):
                web = None
        if not web:
            return None
        directory = (base / web).resolve()
        return directory if directory.is_dir() else None

    # -- reading -----------------------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self.classes

    def get(self, name: str) -> NodeSpec:
        """The spec of a registered node; classes added straight into `classes` are picked up too."""
        cls = self.classes.get(name)
        if cls is None:
            raise KeyError(f"unknown node type {name!r}")
        spec = self._specs.get(name)
        if spec is None or spec.cls is not cls:
            spec = NodeSpec(name, cls, self.display_names.get(name), self.node_packs.get(name, "custom"),
                            self.python_modules.get(name), self.folders)
            self._specs[name] = spec
        return spec

    def object_info(self, name: str | None = None) -> dict:
        """`/object_info` (all nodes) or `/object_info/{name}` (one): {name: entry}."""
        names = [name] if name is not None else list(self.classes)
        info = {}
        for n in names:
            if n not in self.classes:
                continue
            try:
                info[n] = self.get(n).info()
            except Exception:  # one broken INPUT_TYPES must not hide every other node
                log.exception("node %s: cannot describe it for /object_info", n)
        return info


def _entrypoint_nodes(entrypoint) -> dict:
    """A V3 pack's nodes: `comfy_entrypoint()` gives a ComfyExtension; its `on_load()` runs, then
    `get_node_list()` names the classes (each may be async; run on a private loop in a thread)."""
    async def collect():
        extension = entrypoint()
        if inspect.isawaitable(extension):
            extension = await extension
        loaded = extension.on_load() if hasattr(extension, "on_load") else None
        if inspect.isawaitable(loaded):
            await loaded
        nodes = extension.get_node_list()
        return await nodes if inspect.isawaitable(nodes) else nodes

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        classes = pool.submit(asyncio.run, collect()).result()
    return {cls.define_schema().node_id: cls for cls in classes}


def _import_failure() -> str:
    exc_type, exc, tb = sys.exc_info()
    lines = traceback.format_exception(exc_type, exc, tb)
    return f"{exc_type.__name__}: {exc}\n" + "".join(lines[-6:])
