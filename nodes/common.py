"""What every module of the node pack shares: the input error, input checks and widget constants.

Node modules import downward from here (and from `model_management`); nothing here imports a node.
"""
from __future__ import annotations

import math

import torch

from vidgraph.engine.context import current_context

from . import model_management
from .model import Model

# ComfyUI's limits and hidden inputs, as its node classes spell them.
MAX_RESOLUTION = 16384
SEED_MAX = 0xFFFFFFFFFFFFFFFF
CONTEXT = {"context": "NODE_CONTEXT"}
SAVE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", **CONTEXT}


class NodeInputError(ValueError):
    """Bad input to a node; the message names the node class and the input."""

    def __init__(self, node: str, input_name: str, message: str):
        super().__init__(f"{node}: input '{input_name}': {message}")
        self.node = node
        self.input_name = input_name


def require_model(value, method: str, kind: str, node: str, input_name: str):
    """`value` when it has the `method` a `kind` input needs, else an error naming what came instead."""
    if not callable(getattr(value, method, None)):
        raise NodeInputError(node, input_name, f"expected a {kind}, got {type(value).__name__}")
    return value


def check_fits_in_memory(shape, node: str, input_name: str, element_size: int = 4) -> None:
    """Refuse to make a tensor of `shape` larger than the memory free now: the allocation would fail
    with the allocator's own error or, overcommitted, get the process killed while filling it."""
    needed = math.prod(int(n) for n in shape) * element_size
    free = model_management.available_memory(torch.device("cpu"))
    if needed > free:
        raise NodeInputError(node, input_name, f"the output {list(shape)} needs {needed / 2 ** 30:.2f} GiB, "
                                               f"more than the {free / 2 ** 30:.2f} GiB of memory free")


def folders_in_scope(context=None):
    """The Folders of this call: the node's context, else the one the engine has set, else None.

    INPUT_TYPES and VALIDATE_INPUTS are class methods the engine may call without a context.
    """
    if context is not None:
        return context.folders
    current = current_context()
    return current.folders if current is not None else None


def check_model(node: str, model, input_name: str = "model"):
    """`model` when it is a MODEL (`nodes/model.py`), else an error naming what came instead."""
    if not isinstance(model, Model):
        raise NodeInputError(node, input_name, f"expected a MODEL, got {type(model).__name__}")
    return model
