"""The result cache: node outputs by input signature, least recently used out first.

A node's key digests its class, its constant inputs, the *keys* (not the values) of the nodes
that feed it and its IS_CHANGED fingerprint. Each key is a fixed-size digest computed from its
producers' digests, so keying a whole graph is linear in its size (ComfyUI rebuilds the full
ancestor signature per node, which is quadratic on a chain).
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from .resources import estimate_nbytes
from .validation import Link, class_method_arguments

_unique = itertools.count()


@dataclass
class CacheLimits:
    max_entries: int = 50_000
    max_bytes: int | None = 8 * 1024**3


@dataclass
class CachedResult:
    outputs: list[list]          # per output slot, the list of values (ComfyUI list semantics)
    ui: dict | None
    nbytes: int = 0


class ResultCache:
    def __init__(self, limits: CacheLimits | None = None):
        self.limits = limits or CacheLimits()
        self._entries: OrderedDict[bytes, CachedResult] = OrderedDict()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> CachedResult | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: CachedResult, skip_ids: set[int] | None = None) -> bool:
        """Store an entry (False when it alone is bigger than the byte budget)."""
        entry.nbytes = estimate_nbytes(entry.outputs, skip_ids=skip_ids)
        limit = self.limits.max_bytes
        if limit is not None and entry.nbytes > limit:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.total_bytes -= old.nbytes
        self._entries[key] = entry
        self.total_bytes += entry.nbytes
        while self._entries and (len(self._entries) > self.limits.max_entries
                                 or (limit is not None and self.total_bytes > limit)):
            _, dropped = self._entries.popitem(last=False)
            self.total_bytes -= dropped.nbytes
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.total_bytes = 0


def fingerprint(spec, node, defs, context: Any, run_coroutine: Callable[[Any], Any]) -> Any:
    """IS_CHANGED of a node with its constant inputs (links as None); NaN when it raises.

    vidgraph nodes that take a `context` hash their files through its configured folders. An
    async IS_CHANGED is run to completion with `run_coroutine` (the executor's loop).
    """
    if spec.is_changed is None:
        return None
    args = class_method_arguments(node, defs, spec.is_changed_params, context)
    try:
        changed = spec.is_changed(**args)
        return run_coroutine(changed) if inspect.isawaitable(changed) else changed
    except Exception:
        return math.nan


def node_key(spec, node, upstream: dict[str, bytes], changed: Any, per_node: bool) -> bytes:
    """Digest of what determines a node's outputs; a NaN fingerprint makes it unique."""
    parts = [spec.name, _repr(changed)]
    if isinstance(changed, float) and math.isnan(changed):
        parts.append(f"always-run-{next(_unique)}")
    if per_node:
        parts.append(f"node={node.id}")
    inputs = node.inputs
    for name in sorted(inputs):
        value = inputs[name]
        kind = type(value)
        if kind is Link:   # the producer's key, a fixed-size digest: linear, not the whole ancestry
            parts.append(f"{name}<{value.output}:{upstream[value.node_id].hex()}")
        elif kind in _SCALARS:
            parts.append(f"{name}={kind.__name__}:{value!r}")
        else:
            parts.append(f"{name}={_repr(value)}")
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).digest()


_SCALARS = {str, int, float, bool, type(None)}


def _repr(value: Any) -> str:
    """A stable text for a constant; a value JSON cannot spell (a tensor an expansion passed in)
    has no stable text, so the node's key becomes unique: it runs, as in ComfyUI."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return f"{type(value).__name__}:{value!r}"
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return f"unhashable-{next(_unique)}"
