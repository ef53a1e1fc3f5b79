"""Node expansion: a node that answers `{"result": ..., "expand": graph}` grows the running prompt.

The executor splices the subgraph in (ids checked unique, links resolved against the prompt as it
stands), keys and caches its nodes by the same rules as the submitted ones, runs what the
node's outputs link to (and any output node in the subgraph), and then takes the node's outputs
from those links. Loops are expansions that expand again. `DynamicPrompt` is the view of the
grown prompt that nodes asking for the hidden input "DYNPROMPT" get (ComfyUI's API).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .graph_builder import is_link
from .validation import Link, Node


class ExpansionError(Exception):
    """A subgraph that cannot be spliced in; reported as the expanding node's failure."""

    def __init__(self, message: str, exception_type: str = "ExpansionError"):
        super().__init__(message)
        self.exception_type = exception_type


class DependencyCycleError(ExpansionError):
    def __init__(self, members: list[str]):
        super().__init__("Dependency cycle detected: " + " -> ".join(members + members[:1]),
                         "graph.DependencyCycleError")
        self.members = members


class DynamicPrompt:
    """The submitted prompt plus the nodes expansions added, in API format."""

    def __init__(self, original: dict):
        self.original = original
        self.ephemeral: dict[str, dict] = {}
        self.parents: dict[str, str] = {}
        self.displays: dict[str, str] = {}

    def get_original_prompt(self) -> dict:
        return self.original

    def has_node(self, node_id: str) -> bool:
        return node_id in self.ephemeral or node_id in self.original

    def get_node(self, node_id: str) -> dict:
        entry = self.ephemeral.get(node_id)
        if entry is None:
            entry = self.original.get(node_id)
        if entry is None:
            raise KeyError(f"node {node_id!r} is not in the prompt")
        return entry

    def all_node_ids(self) -> set[str]:
        return set(self.original) | set(self.ephemeral)

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.parents.get(node_id)

    def get_real_node_id(self, node_id: str) -> str:
        """The submitted node this one descends from (itself when it was submitted)."""
        while node_id in self.parents:
            node_id = self.parents[node_id]
        return node_id

    def get_display_node_id(self, node_id: str) -> str:
        """The node the editor shows this one's progress on (an override, else its parent's)."""
        seen = set()
        while node_id in self.displays and node_id not in seen:
            seen.add(node_id)
            shown = self.displays[node_id]
            if shown == node_id:
                break
            node_id = shown
        return node_id

    def add_ephemeral_node(self, node_id: str, entry: dict, parent_id: str, display_id: str) -> None:
        self.ephemeral[node_id] = entry
        self.parents[node_id] = parent_id
        self.displays[node_id] = display_id


@dataclass
class Expansion:
    """A node waiting for the subgraph it expanded into."""
    calls: list[tuple[bool, Any]]          # per call: (expanded, its result tuple or raw answer)
    ui: list[dict]
    waits_for: list[str] = field(default_factory=list)   # producers of linked results + new output nodes


def new_nodes(graph: Any, dynprompt: DynamicPrompt, parent_id: str, known: dict, classes) -> dict[str, Node]:
    """The subgraph's nodes as executor Nodes (links as Link), registered in `dynprompt`.

    `known` holds the prompt's nodes so far; a link must name one of them or a node of `graph`.
    """
    if not isinstance(graph, dict):
        raise ExpansionError(f"'expand' must be a dict of nodes, not {type(graph).__name__}")
    clashes = [node_id for node_id in graph if str(node_id) in known]
    if clashes:
        raise ExpansionError(f"Attempt to add duplicate node {clashes[0]}. Ensure node ids are unique and "
                             "deterministic or use graph_utils.GraphBuilder.", "DuplicateNodeError")
    added: dict[str, Node] = {}
    for node_id, entry in graph.items():
        node_id = str(node_id)
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str):
            raise ExpansionError(f"expanded node {node_id!r} has no class_type")
        if entry["class_type"] not in classes:
            raise ExpansionError(f"expanded node {node_id!r}: node type {entry['class_type']!r} does not exist",
                                 "NodeNotFoundError")
        inputs = {}
        for name, value in (entry.get("inputs") or {}).items():
            if is_link(value):
                target = str(value[0])
                if target not in known and target not in graph:
                    raise ExpansionError(f"expanded node {node_id!r}: input {name!r} links to node {target!r}, "
                                         "which is not in the prompt", "NodeNotFoundError")
                value = Link(target, int(value[1]))
            inputs[name] = value
        added[node_id] = Node(node_id, entry["class_type"], inputs)
    for node_id, entry in graph.items():
        dynprompt.add_ephemeral_node(str(node_id), entry, parent_id,
                                     str(entry.get("override_display_id") or parent_id))
    return added


def dependency_order(added: dict[str, Node]) -> list[str]:
    """The new nodes, producers first; a cycle among them is a DependencyCycleError."""
    order: list[str] = []
    state: dict[str, int] = {}     # 1 visiting, 2 done
    for root in added:
        if root in state:
            continue
        stack = [(root, iter(_producers(added[root], added)))]
        state[root] = 1
        while stack:
            node_id, pending = stack[-1]
            for producer in pending:
                seen = state.get(producer)
                if seen == 1:
                    path = [n for n, _ in stack]
                    raise DependencyCycleError(path[path.index(producer):])
                if seen is None:
                    state[producer] = 1
                    stack.append((producer, iter(_producers(added[producer], added))))
                    break
            else:
                stack.pop()
                state[node_id] = 2
                order.append(node_id)
    return order


def _producers(node: Node, within: dict) -> list[str]:
    return [v.node_id for v in node.inputs.values() if type(v) is Link and v.node_id in within]


def result_links(values: Any) -> list[str]:
    return [str(v[0]) for v in values if is_link(v)] if isinstance(values, (list, tuple)) else []


def resolve(spec, calls: list[tuple[bool, Any]], results: dict, collect) -> list[list]:
    """Per output slot, the values of all calls: linked results take their producer's whole list."""
    outputs: list[list] = [[] for _ in spec.return_types]
    for expanded, answer in calls:
        if not expanded:
            for slot, values in zip(outputs, collect(spec, [answer])[0]):
                slot.extend(values)
            continue
        if len(answer) < len(outputs):
            raise ExpansionError(f"an expanding node returned {len(answer)} results; RETURN_TYPES declares "
                                 f"{len(outputs)}")
        for index, slot in enumerate(outputs):
            value = answer[index]
            if is_link(value):
                slot.extend(results[str(value[0])].outputs[int(value[1])])
            elif spec.output_is_list[index] and isinstance(value, (list, tuple)):
                slot.extend(value)
            else:
                slot.append(value)
    return outputs
