"""Building the subgraph a node expands into (ComfyUI's `comfy_execution.graph_utils` API).

A node may answer `{"result": (...), "expand": graph}`: the executor splices `graph` (API-format
nodes, whose links are `[node_id, output]` lists) into the running prompt and takes the node's
outputs from the links in `result`. GraphBuilder writes such graphs with ids that cannot clash:
while a node runs, the executor sets the default id prefix to "<node id>.<call index>.", and each
builder made during that call takes the next graph number after it (read from the node's context,
so nothing is set per call).
"""
from __future__ import annotations

import contextvars
from typing import Any

from .context import current_context


def is_link(value: Any) -> bool:
    """An input value that names another node's output: `[node_id: str, output: int]`."""
    return (type(value) is list and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)) and not isinstance(value[1], bool))


class _PrefixState:
    __slots__ = ("root", "call_index", "graph_index")

    def __init__(self, root: str = "", call_index: int = 0, graph_index: int = 0):
        self.root, self.call_index, self.graph_index = root, call_index, graph_index


# Per thread/task, so two prompts expanding at once never share a counter.
_prefix: contextvars.ContextVar[_PrefixState | None] = contextvars.ContextVar("vidgraph_graph_prefix",
                                                                             default=None)


def _prefix_state() -> _PrefixState:
    state = _prefix.get()
    if state is None:
        state = _PrefixState()
        _prefix.set(state)
    return state


class GraphNode:
    """One node of a GraphBuilder graph (ComfyUI calls it `Node`)."""

    def __init__(self, id: str, class_type: str, inputs: dict):
        self.id = id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list:
        """A link to output `index` of this node, to pass as another node's input."""
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        """Set an input; None removes it (an optional input left unconnected)."""
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, display_id: str) -> None:
        """Report this node's progress and errors under another node's id in the editor."""
        self.override_display_id = display_id

    def serialize(self) -> dict:
        entry = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            entry["override_display_id"] = self.override_display_id
        return entry


class GraphBuilder:
    def __init__(self, prefix: str | None = None):
        self.prefix = self.alloc_prefix() if prefix is None else prefix
        self.nodes: dict[str, GraphNode] = {}
        self.id_gen = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        _prefix.set(_PrefixState(prefix_root, call_index, graph_index))

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        """The next "<root>.<call>.<graph>." prefix: while a node runs, from its context (its id, its
        list index, the graphs it made so far); elsewhere from set_default_prefix."""
        ctx = current_context()
        if ctx is not None and ctx.node_id:
            default_root, default_call, default_graph = ctx.node_id, ctx.list_index, ctx.graphs_made
            ctx.graphs_made += 1
        else:
            state = _prefix_state()
            default_root, default_call, default_graph = state.root, state.call_index, state.graph_index
            state.graph_index += 1
        root = default_root if root is None else root
        call_index = default_call if call_index is None else call_index
        graph_index = default_graph if graph_index is None else graph_index
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: str | None = None, **inputs) -> GraphNode:
        """Add a node (or return the one already under this id)."""
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        full_id = self.prefix + id
        existing = self.nodes.get(full_id)
        if existing is not None:
            return existing
        node = self.nodes[full_id] = GraphNode(full_id, class_type, inputs)
        return node

    def lookup_node(self, id: str) -> GraphNode | None:
        return self.nodes.get(self.prefix + id)

    def remove_node(self, id: str) -> None:
        del self.nodes[self.prefix + id]

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        """Point every input linked to output `index` of `node_id` at `new_value` (None unlinks)."""
        target = [self.prefix + node_id, index]
        for node in self.nodes.values():
            for key in [k for k, v in node.inputs.items() if is_link(v) and list(v) == target]:
                node.set_input(key, new_value)

    def finalize(self) -> dict:
        """The graph in API format, ready to return under "expand"."""
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}


def add_graph_prefix(graph: dict, outputs, prefix: str) -> tuple[dict, tuple]:
    """A copy of `graph` (and of the `outputs` that link into it) with `prefix` before every id."""
    def moved(value):
        return [prefix + value[0], value[1]] if is_link(value) else value

    prefixed = {prefix + node_id: {"class_type": entry["class_type"],
                                   "inputs": {k: moved(v) for k, v in entry.get("inputs", {}).items()}}
                for node_id, entry in graph.items()}
    return prefixed, tuple(moved(o) for o in outputs)
