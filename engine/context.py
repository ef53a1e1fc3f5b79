"""What a node receives when it asks for the hidden input `"NODE_CONTEXT"`.

Nodes report progress, send previews and check for interrupt through this object. The executor
also puts it in a ContextVar around each node call, so the ComfyUI compatibility modules
(`comfy.utils.ProgressBar`, `comfy.model_management...`) can find it; vidgraph's own nodes use
the object they are handed.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Callable, Iterator, Mapping

from .folders import Folders
from .interrupt import InterruptFlag
from .resources import ResourceCache

Emit = Callable[[str, dict], None]


class NodeContext:
    def __init__(self, prompt_id: str, node_id: str, class_type: str, folders: Folders,
                 resources: ResourceCache, settings: Mapping[str, Any] | None = None,
                 interrupt: InterruptFlag | None = None, emit: Emit | None = None):
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.class_type = class_type
        self.folders = folders
        self.resources = resources
        self.settings = settings if settings is not None else {}
        self.interrupt_flag = interrupt if interrupt is not None else InterruptFlag()
        self._emit = emit
        self.list_index = 0      # which call over the node's input lists is running
        self.graphs_made = 0     # GraphBuilders made by this call (their id prefixes)

    @property
    def interrupted(self) -> bool:
        return self.interrupt_flag.is_set()

    def check_interrupt(self) -> None:
        """Raise `Interrupted` if the prompt was interrupted; call it in long loops."""
        self.interrupt_flag.check()

    def progress(self, value, total, preview: tuple[str, bytes] | None = None) -> None:
        """Report `value` of `total` steps (and optionally a ("JPEG"|"PNG", bytes) preview)."""
        self.check_interrupt()
        self.send("progress", {"value": value, "max": total, "prompt_id": self.prompt_id,
                               "node": self.node_id})
        if preview is not None:
            image_format, image = preview
            self.send("preview", {"prompt_id": self.prompt_id, "node_id": self.node_id,
                                  "format": image_format, "image": image})

    def send(self, event: str, data: dict) -> None:
        """Send an event to the prompt's subscribers (the websocket client, the CLI)."""
        if self._emit is not None:
            self._emit(event, data)


_current: contextvars.ContextVar[NodeContext | None] = contextvars.ContextVar(
    "vidgraph_node_context", default=None)


def current_context() -> NodeContext | None:
    """The context of the node running in this thread, if any (for compatibility modules)."""
    return _current.get()


def check_current_interrupt() -> None:
    """Raise `Interrupted` if the running node's prompt was interrupted (no-op outside a node).
    For long loops below the node, such as a model load or a video encode, that get no context."""
    context = _current.get()
    if context is not None:
        context.check_interrupt()


def enter_context(ctx: NodeContext) -> contextvars.Token:
    """Make `ctx` current; undo with `leave_context(token)` (the executor's cheap form of use_context)."""
    return _current.set(ctx)


def leave_context(token: contextvars.Token) -> None:
    _current.reset(token)


@contextlib.contextmanager
def use_context(ctx: NodeContext) -> Iterator[NodeContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
