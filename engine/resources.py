"""Sizes of values, and the byte-bounded cache of loaded models that survives prompts.

The engine may not import torch, so sizes are found by duck typing: tensors and arrays expose
`nbytes` (or `element_size()` and `numel()`), torch modules expose `parameters()`/`buffers()`,
and anything else can say how big it is with a `vidgraph_nbytes()` method.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable


def tensor_nbytes(value: Any) -> int | None:
    """Bytes of one tensor-like value, or None when it is not one."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    element_size = getattr(value, "element_size", None)
    numel = getattr(value, "numel", None)
    if callable(element_size) and callable(numel):
        try:
            return int(element_size()) * int(numel())
        except Exception:
            return None
    return None


_ATOMS = (type(None), bool, int, float, complex)
OBJECT_DEPTH = 2  # how far into plain objects' attributes (model wrappers) the walk goes


def estimate_nbytes(value: Any, limit_items: int = 100_000, skip_ids: set[int] | None = None) -> int:
    """Approximate memory held by `value`: tensors counted once each, containers walked iteratively.

    Objects whose id is in `skip_ids` (e.g. models owned by the ResourceCache) count as zero.
    Plain objects (a VAE wrapper holding a module) are looked into a couple of levels deep.
    """
    total = 0
    seen: set[int] = set(skip_ids) if skip_ids else set()
    stack = [(value, 0)]
    visited = 0
    while stack and visited < limit_items:
        item, depth = stack.pop()
        visited += 1
        kind = type(item)
        if kind in _ATOMS or id(item) in seen:
            continue
        seen.add(id(item))
        if kind is list or kind is tuple or kind is set or kind is frozenset:
            stack.extend((x, depth) for x in item)
            continue
        if kind is dict:
            stack.extend((x, depth) for x in item.values())
            continue
        if kind is str or kind is bytes or kind is bytearray:
            total += len(item)
            continue
        custom = getattr(item, "vidgraph_nbytes", None)
        if callable(custom):
            total += int(custom())
            continue
        size = tensor_nbytes(item)
        if size is not None:
            total += size
        elif callable(getattr(item, "parameters", None)) and callable(getattr(item, "buffers", None)):
            try:
                stack.extend((x, depth) for x in item.parameters())
                stack.extend((x, depth) for x in item.buffers())
            except Exception:
                pass
        elif isinstance(item, (dict, list, tuple)):  # subclasses, e.g. an OrderedDict state dict
            stack.extend((x, depth) for x in (item.values() if isinstance(item, dict) else item))
        elif depth < OBJECT_DEPTH and isinstance(getattr(item, "__dict__", None), dict):
            stack.extend((x, depth + 1) for x in vars(item).values())
    return total


ReleaseHook = Callable[[Hashable, Any], None]


def default_budget(fraction: float = 0.5) -> int | None:
    """Half the machine's physical memory: loaded models beyond it are released, oldest first."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * fraction)
    except (ValueError, OSError, AttributeError):
        return None


class ResourceCache:
    """Loaded models and other expensive objects, least recently used dropped past `max_bytes`.

    Release hooks are called as `hook(key, value)` for every entry that leaves the cache
    (released on request or evicted), e.g. to move a model off the GPU and empty the CUDA cache.
    """

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._hooks: list[ReleaseHook] = []
        self._lock = threading.RLock()
        self.generation = 0   # bumped on every change, so others can cache owned_ids()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def owned_ids(self) -> set[int]:
        """ids of the cached values, so other caches need not count them again."""
        with self._lock:
            return {id(value) for value, _ in self._entries.values()}

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._entries)

    def values(self) -> list[Any]:
        """The cached values, least recently used first, without marking any of them used."""
        with self._lock:
            return [value for value, _ in self._entries.values()]

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            if key not in self._entries:
                return default
            self._entries.move_to_end(key)
            return self._entries[key][0]

    def put(self, key: Hashable, value: Any, size: int | None = None) -> Any:
        size = estimate_nbytes(value) if size is None else int(size)
        with self._lock:
            old = self._entries.pop(key, None)
            self._entries[key] = (value, size)
            self.generation += 1
            evicted = self._evict_over_budget(keep=key)
        if old is not None and old[0] is not value:
            evicted.insert(0, (key, old[0]))
        self._call_hooks(evicted)
        return value

    def get_or_load(self, key: Hashable, loader: Callable[[], Any],
                    size_of: Callable[[Any], int] | None = None) -> Any:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key][0]
            value = loader()
            return self.put(key, value, size_of(value) if size_of else None)

    def release(self, key: Hashable | None = None) -> None:
        """Drop one entry, or everything when key is None."""
        with self._lock:
            self.generation += 1
            if key is None:
                released = [(k, v) for k, (v, _) in self._entries.items()]
                self._entries.clear()
            elif key in self._entries:
                released = [(key, self._entries.pop(key)[0])]
            else:
                released = []
        self._call_hooks(released)

    def add_release_hook(self, hook: ReleaseHook) -> None:
        """Register `hook` once; registering the same hook again is a no-op (loaders may call it each time)."""
        if hook not in self._hooks:
            self._hooks.append(hook)

    def _evict_over_budget(self, keep: Hashable) -> list[tuple[Hashable, Any]]:
        evicted = []
        if self.max_bytes is None:
            return evicted
        total = sum(size for _, size in self._entries.values())
        for key in list(self._entries):
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            value, size = self._entries.pop(key)
            total -= size
            evicted.append((key, value))
        return evicted

    def _call_hooks(self, released: list[tuple[Hashable, Any]]) -> None:
        for key, value in released:
            for hook in self._hooks:
                hook(key, value)
