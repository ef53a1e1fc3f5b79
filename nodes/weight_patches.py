"""Weight patches: changes to a network's weights (LoRA and its kin, full differences) that a MODEL or
a CLIP carries as data and applies only while it runs.

A patch is any object with `delta(weight) -> tensor`: the change to add to `weight` (float32, on the
weight's device, `weight`'s shape, strength 1). `lora.py` defines LoRA / LoCon / LoHa / LoKr patches;
`Diff` here is a plain full difference. A patch table maps a parameter name to a tuple of
`PatchEntry(patch, strength_patch, strength_model)`, applied in order as ComfyUI applies them:
w <- w * strength_model, then w <- w + strength_patch * delta(w).

`patched_weights(module, table)` puts the patched weights in place for the duration of a `with` and
puts the originals back afterwards: the original tensors are kept (never written to), the patched ones
are new tensors swapped in with `param.data`, so every clone that shares the module and carries
other patches (or none) sees its own weights. A layer that caches something computed from its weights
defines `clear_weight_caches()`; it is called after every swap (a freed patched tensor's address may come
back for the next patch, so a cache keyed by address could not tell them apart). This module is part of the bottom layer (model.py and the
text encoders use it): it imports nothing else from the node pack.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

_STATE = "_vidgraph_weight_patches"  # module attribute: (signature, depth) while patched


@dataclass(frozen=True)
class Diff:
    """A full difference to add to a weight (or a bias): `diff` / `diff_b` keys, ComfyUI's ("diff", (t,))."""
    tensor: torch.Tensor

    def delta(self, weight: torch.Tensor) -> torch.Tensor:
        if self.tensor.numel() != weight.numel():
            raise ValueError(f"a difference of shape {list(self.tensor.shape)} cannot patch a weight of shape "
                             f"{list(weight.shape)}")
        return self.tensor.to(weight.device, torch.float32).reshape(weight.shape)


@dataclass(frozen=True)
class PatchEntry:
    patch: object
    strength_patch: float = 1.0
    strength_model: float = 1.0


def as_patch(value):
    """A patch object from what callers hand over: an object with `delta`, a tensor (a full
    difference) or ComfyUI's tuple form `("diff", (tensor,))`."""
    if hasattr(value, "delta"):
        return value
    if isinstance(value, torch.Tensor):
        return Diff(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and value[0] == "diff":
        return Diff(value[1][0])
    raise TypeError(f"not a weight patch: {type(value).__name__} (expected an object with delta(weight), a tensor "
                    "or ('diff', (tensor,)))")


def add_to_table(table: dict, patches: dict, known: set, strength_patch: float = 1.0,
                 strength_model: float = 1.0, rename=None) -> tuple[dict, list]:
    """(a new table with `patches` added, the keys of `patches` that named a known parameter).

    `rename(key) -> parameter name | None` translates callers' names (None: the key itself);
    keys naming no parameter in `known` are left out, as ComfyUI's `add_patches` leaves them."""
    table = dict(table)
    matched = []
    for key, value in patches.items():
        name = rename(key) if rename else key
        if name not in known:
            continue
        table[name] = table.get(name, ()) + (PatchEntry(as_patch(value), float(strength_patch), float(strength_model)),)
        matched.append(key)
    return table, matched


def patched(weight: torch.Tensor, entries) -> torch.Tensor:
    """`weight` with `entries` applied, computed in float32 and stored in the weight's dtype."""
    out = weight.detach().to(torch.float32, copy=True)
    for entry in entries:
        if entry.strength_model != 1.0:
            out.mul_(entry.strength_model)
        if entry.strength_patch != 0.0:
            out.add_(entry.patch.delta(weight), alpha=entry.strength_patch)
    return out.to(weight.dtype)


def _signature(table: dict) -> tuple:
    return tuple(sorted((name, tuple((id(e.patch), e.strength_patch, e.strength_model) for e in entries))
                        for name, entries in table.items()))


@contextmanager
def patched_weights(module: torch.nn.Module, table: dict):
    """`module` runs with `table`'s patches applied inside the block; the original tensors come back after.

    Re-entering with the same patches (a sampler inside a sampler on one MODEL) is free; the same
    module asked to run with other patches while patched is an error rather than a silent mix."""
    signature = _signature(table) if table else ()
    state = module.__dict__.get(_STATE)
    if state is not None:
        if state[0] != signature:
            raise RuntimeError("this network is already running with other weight patches (two MODELs sharing "
                               "weights cannot run one inside the other)")
        module.__dict__[_STATE] = (signature, state[1] + 1)
        try:
            yield module
        finally:
            module.__dict__[_STATE] = (signature, module.__dict__[_STATE][1] - 1)
            if module.__dict__[_STATE][1] == 0:
                del module.__dict__[_STATE]
        return
    if not table:
        yield module
        return
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    originals = {}
    try:
        with torch.no_grad():
            for name, entries in table.items():
                tensor = tensors[name]
                originals[name] = tensor.data
                tensor.data = patched(tensor.data, entries)
        module.__dict__[_STATE] = (signature, 1)
        _clear_weight_caches(module)
        yield module
    finally:
        module.__dict__.pop(_STATE, None)
        for name, original in originals.items():
            tensors[name].data = original
        _clear_weight_caches(module)


def _clear_weight_caches(module: torch.nn.Module) -> None:
    for layer in module.modules():
        clear = getattr(layer, "clear_weight_caches", None)
        if clear is not None:
            clear()
