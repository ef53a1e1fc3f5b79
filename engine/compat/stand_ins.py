"""Importable stand-ins for the parts of ComfyUI vidgraph has no counterpart for.

Packs import ComfyUI's model internals (`comfy.ldm.*`, `comfy.hooks`, `comfy.controlnet`, ...) at
load time, mostly to subclass them, to test `isinstance` against them or to keep them for later.
A stand-in lets that import succeed; using it (calling it, instantiating it or a subclass of it)
raises NotImplementedError naming the ComfyUI object, so the node that needs it fails when it runs
and says why, while the pack's other nodes load and work.

- `StandIn`: the metaclass of every stand-in class. An attribute of a stand-in is a stand-in named
  after it (`WrappersMP.OUTER_SAMPLE`), so class-level constants resolve too.
- `stand_in_module(name)`: a whole module made of stand-ins (any attribute name is one).
- `StandInFinder`: on `sys.meta_path`, it answers imports of ComfyUI's own packages (`comfy.*`,
  `comfy_extras.*`) that no face and nothing installed provides, with stand-in modules. It answers
  only while vidgraph's faces are the installed `comfy` package.
- `offer_stand_ins(module, names)`: a face module whose listed ComfyUI names, when not filled by a
  real face, resolve to stand-ins; other missing names stay missing (packs probe with hasattr).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Iterable

STAND_IN_PACKAGES = ("comfy", "comfy_extras")
REASON = "ComfyUI's model internals are not part of vidgraph"
# What the engine reads to tell a node class (V1 or V3) from anything else: a stand-in has none of it,
# so a pack's subclass of a stand-in is judged by what the pack itself declares.
NODE_PROTOCOL = frozenset({
    "INPUT_TYPES", "RETURN_TYPES", "RETURN_NAMES", "FUNCTION", "OUTPUT_NODE", "CATEGORY", "DESCRIPTION",
    "INPUT_IS_LIST", "OUTPUT_IS_LIST", "OUTPUT_TOOLTIPS", "VALIDATE_INPUTS", "IS_CHANGED", "NOT_IDEMPOTENT",
    "DEPRECATED", "EXPERIMENTAL", "API_NODE", "SEARCH_ALIASES", "check_lazy_status", "define_schema",
    "execute", "validate_inputs", "fingerprint_inputs", "hidden"})


class StandIn(type):
    """Metaclass of stand-in classes; `__comfy_name__` is the ComfyUI object's dotted name."""

    def __getattr__(cls, name: str):
        if name.startswith("_") or name in NODE_PROTOCOL:   # only ComfyUI's public, non-node names
            raise AttributeError(name)
        child = stand_in(f"{cls.__comfy_name__}.{name}")
        type.__setattr__(cls, name, child)
        return child

    def __call__(cls, *args, **kwargs):
        raise NotImplementedError(unavailable_message(cls))

    def __iter__(cls):
        return iter(())

    def __len__(cls):
        return 0

    def __getitem__(cls, key):
        return cls

    def __or__(cls, other):
        return cls

    __ror__ = __or__

    def __repr__(cls):
        return f"<vidgraph stand-in for ComfyUI's {cls.__comfy_name__}>"


def unavailable_message(cls: type) -> str:
    for base in cls.__mro__:
        if "__comfy_name__" in vars(base):
            missing = base.__comfy_name__
            break
    else:
        missing = cls.__qualname__
    user = "" if vars(cls).get("__comfy_name__") == missing else f" (needed by {cls.__module__}.{cls.__qualname__})"
    return f"ComfyUI's {missing} is not available in vidgraph{user}: {REASON}"


def stand_in(comfy_name: str) -> StandIn:
    module, _, name = comfy_name.rpartition(".")
    return StandIn(name or comfy_name, (), {"__comfy_name__": comfy_name, "__module__": module or comfy_name,
                                            "__doc__": f"Stand-in for ComfyUI's {comfy_name} (vidgraph)."})


def is_stand_in(obj) -> bool:
    return isinstance(obj, StandIn) or getattr(obj, "__vidgraph_stand_in__", False)


class _StandInModule(ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = stand_in(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


def stand_in_module(module: ModuleType) -> ModuleType:
    """Turn a face module into a module of stand-ins (its existing attributes stay)."""
    module.__class__ = _StandInModule
    module.__vidgraph_stand_in__ = True
    return module


def offer_stand_ins(module: ModuleType, names: Iterable[str]) -> None:
    """Let `from module import name` succeed for these ComfyUI names the face does not fill."""
    offered = set(getattr(module, "__vidgraph_stand_in_names__", ())) | set(names)
    module.__vidgraph_stand_in_names__ = frozenset(offered)

    def missing(name: str):
        if name in module.__vidgraph_stand_in_names__:
            value = stand_in(f"{module.__name__}.{name}")
            setattr(module, name, value)
            return value
        raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

    if not hasattr(module, "__getattr__"):
        module.__getattr__ = missing


class _Loader(importlib.abc.Loader):
    def __init__(self, make):
        self.make = make

    def create_module(self, spec):
        return self.make(spec.name)

    def exec_module(self, module):
        pass


class StandInFinder(importlib.abc.MetaPathFinder):
    """Stand-in modules for ComfyUI packages nothing else provides (last on sys.meta_path)."""

    def __init__(self, make_module):
        self.make_module = make_module   # name -> empty face module (compat_module under the base folder)

    def find_spec(self, fullname, path=None, target=None):
        root = fullname.partition(".")[0]
        if root not in STAND_IN_PACKAGES or "." not in fullname:
            return None
        if not getattr(sys.modules.get(root), "__vidgraph_compat__", False):
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(self._module), is_package=True)

    def _module(self, name: str) -> ModuleType:
        module = stand_in_module(self.make_module(name))
        module.__path__ = []
        return module


def install_finder(make_module) -> None:
    for finder in sys.meta_path:
        if isinstance(finder, StandInFinder):
            finder.make_module = make_module
            return
    sys.meta_path.append(StandInFinder(make_module))
