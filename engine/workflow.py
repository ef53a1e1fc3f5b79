"""Workflow files in, API-format prompt out.

Two JSON formats exist (as ComfyUI writes them):

- API format, what ``POST /prompt`` takes: ``{node_id: {"class_type", "inputs", "_meta"?}}`` where
  a link is ``[node_id, output_index]``.
- UI format, what the editor saves (litegraph): ``nodes`` with positional ``widgets_values``,
  ``links`` as rows ``[id, origin_id, origin_slot, target_id, target_slot, type]`` (or objects in
  schema version 1), groups, and frontend-only nodes (PrimitiveNode, Reroute, Note).

ComfyUI converts UI to API only in the browser; here the conversion is server-side so that a
saved editor file, or a PNG/WEBP/MP4 carrying one, runs headless. Widget values are matched to
input names through the registry's input order, skipping the values of frontend-only widgets
(the seed's ``control_after_generate`` combo, the image upload button). Subgraphs (the
``definitions.subgraphs`` of newer editors) are flattened into "instance:node" ids as the editor does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .metadata import MetadataError, metadata_bytes, read_embedded_metadata, sniff_format
from .spec import InputDef, parse_input_types

__all__ = ["WorkflowError", "Workflow", "load_workflow", "read_workflow", "ui_to_api",
           "read_embedded_metadata", "is_ui_workflow", "is_api_prompt"]

MODE_MUTED = 2      # litegraph NEVER: the node and what only it feeds do not run
MODE_BYPASS = 4     # the node is skipped; its inputs are forwarded to matching outputs
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "mesh_upload")


class WorkflowError(ValueError):
    """A workflow that cannot be read or converted; names the node when one is at fault."""

    def __init__(self, message: str, node_id: Any = None):
        super().__init__(message)
        self.node_id = None if node_id is None else str(node_id)

    def to_json(self) -> dict:
        """ComfyUI's 400 body (``invalid_prompt``), so callers report it like a validation error."""
        return {"error": {"type": "invalid_prompt", "message": str(self),
                          "details": f"Node ID '#{self.node_id}'" if self.node_id else "",
                          "extra_info": {}},
                "node_errors": {}}


@dataclass
class Workflow:
    """A loaded workflow: the API prompt to run, and the UI graph when the source had one
    (it goes into ``extra_data.extra_pnginfo.workflow`` so saved outputs embed it)."""
    prompt: dict
    ui: dict | None = None
    source_format: str = "api"   # api | ui | png | webp | mp4 | safetensors


# ----------------------------------------------------------------------------------- loading

def load_workflow(source: Any, registry: Any) -> dict:
    """The API-format prompt from a path, bytes, JSON text or dict (API or UI format, or a
    PNG/WEBP/MP4/safetensors file with an embedded ``prompt`` or ``workflow``)."""
    return read_workflow(source, registry).prompt


def read_workflow(source: Any, registry: Any) -> Workflow:
    """Like `load_workflow`, keeping the UI graph and the source format."""
    if isinstance(source, Mapping):
        return _from_json(dict(source), registry)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), registry, "<bytes>")
    if isinstance(source, str) and source.lstrip().startswith(("{", "[")):
        return _from_json(_parse_json(source, "<text>"), registry)
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            # metadata_bytes reads only the moov box of a video, the whole file otherwise
            return _from_bytes(metadata_bytes(path), registry, str(path))
        except FileNotFoundError:
            raise WorkflowError(f"workflow file not found: {path}") from None
        except OSError as exc:
            raise WorkflowError(f"cannot read workflow file {path}: {exc.strerror or exc}") from None
        except MetadataError as exc:
            raise WorkflowError(f"{path}: {exc}") from None
    raise WorkflowError(f"cannot load a workflow from a {type(source).__name__}")


def _from_bytes(data: bytes, registry: Any, name: str) -> Workflow:
    kind = sniff_format(data)
    if kind is None:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise WorkflowError(f"{name}: neither JSON nor a PNG/WEBP/MP4 file") from None
        return _from_json(_parse_json(text, name), registry)
    try:
        embedded = read_embedded_metadata(data)
    except MetadataError as exc:
        raise WorkflowError(f"{name}: {exc}") from None
    prompt, ui = embedded.get("prompt"), embedded.get("workflow")
    if not isinstance(ui, dict):
        ui = None
    if isinstance(prompt, dict) and prompt:
        # The saved prompt is exactly what ran; prefer it over re-converting the graph.
        return Workflow(_api_prompt(prompt), ui, kind)
    if ui is not None:
        return Workflow(ui_to_api(ui, registry), ui, kind)
    raise WorkflowError(f"{name}: the {kind.upper()} file carries no embedded 'prompt' or 'workflow'")


def _parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise WorkflowError(f"{name}: not valid JSON: {exc}") from None


def _from_json(data: Any, registry: Any) -> Workflow:
    if not isinstance(data, dict):
        raise WorkflowError(f"a workflow must be a JSON object, got {type(data).__name__}")
    if is_ui_workflow(data):
        return Workflow(ui_to_api(data, registry), data, "ui")
    if isinstance(data.get("prompt"), dict) and not is_api_prompt(data):
        # A /prompt request body (or a saved one): {"prompt": ..., "extra_data": {...}}, or
        # embedded metadata saved as JSON: {"prompt": ..., "workflow": ...}
        ui = _dig(data, "extra_data", "extra_pnginfo", "workflow") or data.get("workflow")
        return Workflow(_api_prompt(data["prompt"]), ui if isinstance(ui, dict) else None, "api")
    if is_api_prompt(data):
        return Workflow(_api_prompt(data), None, "api")
    raise WorkflowError("not a workflow: expected the API format ({node_id: {class_type, inputs}}) "
                        "or the UI format (an object with 'nodes' and 'links')")


def _dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]... or None where a level is missing or not an object."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def is_ui_workflow(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def is_api_prompt(data: Any) -> bool:
    return (isinstance(data, dict) and bool(data)
            and all(isinstance(node, dict) for node in data.values())
            and any("class_type" in node or "inputs" in node for node in data.values()))


def _api_prompt(prompt: dict) -> dict:
    """Node ids as strings, and each node's inputs copied (so `--set` never edits the caller's
    dict); everything else is left to validation, which reports all problems at once."""
    return {str(node_id): dict(node, inputs=dict(node["inputs"]))
            if isinstance(node, dict) and isinstance(node.get("inputs"), dict) else node
            for node_id, node in prompt.items()}


# ------------------------------------------------------------------------------- UI → API

def ui_to_api(workflow: dict, registry: Any) -> dict:
    """Convert an editor (litegraph) workflow into an API-format prompt.

    ``registry`` is a NodeRegistry (its ``classes``) or a plain {class_type: class} mapping.
    Muted and bypassed nodes, and frontend-only nodes, do not appear in the result; links are
    followed through reroutes, bypassed nodes and subgraph boundaries, and a PrimitiveNode's value
    replaces the link. Nodes inside a subgraph get ids like the editor's: "12:5" (instance 12, node 5).
    """
    if not is_ui_workflow(workflow):
        raise WorkflowError("not a UI-format workflow: no 'nodes' list")
    classes = getattr(registry, "classes", registry)
    folders = getattr(registry, "folders", None)
    graph = _UiGraph(workflow)
    prompt: dict[str, dict] = {}
    for node_id, node in graph.nodes.items():
        node_type = node.get("type")
        if not isinstance(node_type, str):
            raise WorkflowError(f"node {node_id} has no type (got {node_type!r})", node_id)
        if (node_type in VIRTUAL_NODES or node_type in graph.definitions or node_id in graph.inactive
                or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS)):
            continue
        cls = classes.get(node_type)
        if cls is None:
            if node_type.startswith(("workflow>", "workflow/")):
                raise WorkflowError(f"node {node_id} is a legacy group node ({node_type}); convert it "
                                    "back to nodes in the editor first", node_id)
            raise WorkflowError(f"node {node_id} has type {node_type!r}, which is not a registered node "
                                "(is its node pack installed?)", node_id)
        inputs = _widget_inputs(node, cls, node_id, folders)
        for slot in node["inputs"]:
            if slot.get("link") is None:
                continue
            widget = slot.get("widget")
            name = (widget.get("name") if isinstance(widget, dict) else None) or slot.get("name")
            if not isinstance(name, str):
                raise WorkflowError(f"node {node_id} ({node_type}) has an input without a name", node_id)
            resolved = graph.resolve(slot["link"], slot.get("type"), node_id, name)
            if resolved is not None:
                inputs[name] = resolved
        title = node.get("title") or getattr(registry, "display_names", {}).get(node_type) or node_type
        prompt[node_id] = {"class_type": node_type, "inputs": inputs, "_meta": {"title": title}}
    # A link into a node that did not make it (a muted node's consumer keeps its link in the
    # editor, but ComfyUI drops such inputs); validation then names the missing input.
    for entry in prompt.values():
        for name, value in list(entry["inputs"].items()):
            if is_link(value) and value[0] not in prompt:
                del entry["inputs"][name]
    return prompt


def is_link(value: Any) -> bool:
    """An API-format link: [node id as a string, output index]."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE = -10, -20
MAX_SUBGRAPH_DEPTH = 32


@dataclass
class _Link:
    origin: str | None    # flat id of the origin node; None: the input boundary of subgraph `scope`
    origin_slot: int
    type: Any
    scope: str            # flat id of the subgraph instance the link lives in ("" at the top level)


class _UiGraph:
    """One UI workflow flattened: subgraph instances expanded into "instance:node" ids, link ids
    scoped per instance (each subgraph numbers its links afresh), and link resolution through
    frontend-only nodes, bypassed nodes and subgraph boundaries."""

    def __init__(self, workflow: dict):
        definitions = workflow.get("definitions")
        subgraphs = definitions.get("subgraphs") if isinstance(definitions, dict) else None
        self.definitions = {sg["id"]: sg for sg in _listed(subgraphs, "definitions.subgraphs")
                            if isinstance(sg, dict) and isinstance(sg.get("id"), str)}
        self.nodes: dict[str, dict] = {}
        self.links: dict[tuple[str, Any], _Link] = {}
        self.subgraph_outputs: dict[tuple[str, int], tuple[str, Any]] = {}  # (instance, slot) -> link key
        self.inactive: set[str] = set()   # nodes inside a muted or bypassed subgraph instance
        self._add_graph(workflow, "", (), False)

    def _add_graph(self, graph: dict, scope: str, stack: tuple, inactive: bool) -> None:
        where = f" in subgraph instance {scope}" if scope else ""
        if not isinstance(graph.get("nodes"), list):
            raise WorkflowError(f"the subgraph of node {scope} has no 'nodes' list", scope)
        for node in graph["nodes"]:
            if not isinstance(node, dict) or "id" not in node:
                raise WorkflowError(f"UI workflow has a node without an id{where}: {str(node)[:80]}", scope or None)
            flat_id = f"{scope}:{node['id']}" if scope else str(node["id"])
            if flat_id in self.nodes:
                raise WorkflowError(f"UI workflow has two nodes with id {node['id']}{where}", flat_id)
            slots = [self._scoped_slot(slot, scope, flat_id)
                     for slot in _listed(node.get("inputs"), f"node {flat_id} 'inputs'", flat_id)]
            self.nodes[flat_id] = dict(node, inputs=slots)
            if inactive:
                self.inactive.add(flat_id)
            definition = self.definitions.get(node.get("type")) if isinstance(node.get("type"), str) else None
            if definition is not None:
                if node["type"] in stack or len(stack) >= MAX_SUBGRAPH_DEPTH:
                    raise WorkflowError(f"node {flat_id}: subgraph {node['type']} contains itself", flat_id)
                self._add_graph(definition, flat_id, stack + (node["type"],),
                                inactive or node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS))
        for link in _listed(graph.get("links"), f"'links'{where}", scope or None):
            if link is None:  # some editors leave holes where a link was deleted
                continue
            link_id, origin_id, origin_slot, target_id, target_slot, link_type = _link_row(link)
            if scope and origin_id == SUBGRAPH_INPUT_NODE:
                origin = None
            else:
                origin = f"{scope}:{origin_id}" if scope else str(origin_id)
            self.links[(scope, link_id)] = _Link(origin, origin_slot, link_type, scope)
            if scope and target_id == SUBGRAPH_OUTPUT_NODE:
                self.subgraph_outputs[(scope, target_slot)] = (scope, link_id)

    @staticmethod
    def _scoped_slot(slot: Any, scope: str, node_id: str) -> dict:
        """An input slot whose link id is made unique across subgraph instances: (scope, id)."""
        if not isinstance(slot, dict):
            raise WorkflowError(f"node {node_id} has a malformed input slot: {str(slot)[:80]}", node_id)
        link = slot.get("link")
        if link is not None and not _is_id(link):
            raise WorkflowError(f"node {node_id} input {slot.get('name')!r}: link must be a link id, "
                                f"got {str(link)[:40]}", node_id)
        return dict(slot, link=None if link is None else (scope, link))

    def resolve(self, key: tuple[str, Any], want_type: Any, node_id: str, input_name: str) -> Any:
        """A link into (node_id, input_name): ``[origin, slot]``, a constant, or None (no value)."""
        seen = set()
        while True:
            if key in seen:
                raise WorkflowError(f"node {node_id} input '{input_name}': the link loops through "
                                    "reroutes or bypassed nodes", node_id)
            seen.add(key)
            link = self.links.get(key)
            if link is None:
                raise WorkflowError(f"node {node_id} input '{input_name}': link {key[1]} is not in the "
                                    "workflow's links", node_id)
            if link.origin is None:  # enters from the subgraph instance's input
                key = self._from_instance_input(link)
                if isinstance(key, _Value):
                    return key.value
            else:
                origin = self.nodes.get(link.origin)
                if origin is None:
                    raise WorkflowError(f"node {node_id} input '{input_name}': link {key[1]} comes from node "
                                        f"{link.origin}, which is not in the workflow", node_id)
                origin_type = origin.get("type")
                if origin_type == "PrimitiveNode":
                    values = origin.get("widgets_values")
                    if not isinstance(values, list) or not values:
                        raise WorkflowError(f"node {node_id} input '{input_name}': primitive node "
                                            f"{link.origin} has no value", node_id)
                    return _api_value(values[0])
                if origin.get("mode", 0) == MODE_MUTED:
                    return None
                if origin_type == "Reroute":
                    key = _input_link(origin, 0)
                elif origin.get("mode", 0) == MODE_BYPASS:
                    key = _bypass_link(origin, link.origin_slot, want_type or link.type)
                elif isinstance(origin_type, str) and origin_type in self.definitions:  # continue inside, at what feeds that output
                    key = self.subgraph_outputs.get((link.origin, link.origin_slot))
                else:
                    return [link.origin, int(link.origin_slot)]
            if key is None:
                return None

    def _from_instance_input(self, link: _Link) -> Any:
        """The outer link feeding the instance's input slot, or the value of the widget the
        editor promoted onto the instance node (a `_Value`), or None (the inner value stays)."""
        instance = self.nodes[link.scope]
        slots = [s for s in instance.get("inputs") or [] if isinstance(s, dict)]
        if not 0 <= link.origin_slot < len(slots):
            return None
        slot = slots[link.origin_slot]
        if slot.get("link") is not None:
            return slot["link"]
        widget_slots = [s for s in slots if s.get("widget")]
        values = instance.get("widgets_values")
        if slot.get("widget") and isinstance(values, list) and len(values) == len(widget_slots):
            return _Value(_api_value(values[next(i for i, s in enumerate(widget_slots) if s is slot)]))
        return None


@dataclass
class _Value:
    value: Any


def _link_row(link: Any) -> list:
    """[id, origin_id, origin_slot, target_id, target_slot, type] from a row or a v1 link object."""
    if isinstance(link, dict):
        try:
            row = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"],
                   link["target_slot"], link.get("type")]
        except KeyError as exc:
            raise WorkflowError(f"UI workflow link {link.get('id', '?')} lacks {exc.args[0]!r}") from None
    elif isinstance(link, list) and len(link) >= 5:
        row = list(link[:6]) + [None] * (6 - len(link[:6]))
    else:
        row = None
    if row is None or not _is_id(row[0]) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                     for v in (row[2], row[4])):
        raise WorkflowError(f"UI workflow has a malformed link: {str(link)[:80]} (expected "
                            "[id, origin_id, origin_slot, target_id, target_slot, type], slots as integers)")
    return row


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _listed(value: Any, what: str, node_id: Any = None) -> list:
    """A list field of the file, or [] when absent; anything else is a malformed file."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise WorkflowError(f"UI workflow {what} must be a list, got {type(value).__name__}", node_id)
    return value


def _input_link(node: dict, index: int) -> Any:
    slots = node.get("inputs") or []
    return slots[index].get("link") if index < len(slots) and isinstance(slots[index], dict) else None


def _bypass_link(node: dict, origin_slot: int, want_type: Any) -> Any:
    """A bypassed node passes through its first input whose type is the requested one,
    trying the input at the same index as the requested output first (ComfyUI's rule)."""
    slots = node.get("inputs") or []
    for index in [origin_slot, *range(len(slots))]:
        if isinstance(index, int) and 0 <= index < len(slots) and isinstance(slots[index], dict) \
                and slots[index].get("type") == want_type:
            return slots[index].get("link")
    return None


def _api_value(value: Any) -> Any:
    # A list constant would read as a link; ComfyUI wraps it and validation unwraps it.
    return {"__value__": value} if isinstance(value, list) else value


# ----------------------------------------------------------------------------- widgets

def _declared_widgets(cls: type, node_id: str, folders: Any) -> list[InputDef | None]:
    """The inputs the editor shows as widgets, in the order their values are saved; None stands
    for the frontend-only upload button, which has a saved value but no input.

    An upload option (``image_upload`` ...) adds an "upload" button widget whose value is saved
    too; the editor appends it after the required inputs (LoadImageMask saves
    ``["mask.png", "alpha", "image"]``), so it is placed there.
    """
    try:
        declared = parse_input_types(cls, folders)
    except Exception as exc:  # a pack's INPUT_TYPES raising is its bug, but name the node
        raise WorkflowError(f"node {node_id}: {cls.__name__}.INPUT_TYPES() raised "
                            f"{type(exc).__name__}: {exc}", node_id) from None
    widgets = []
    for section in ("required", "optional"):
        upload = False
        for d in declared.values():
            if d.section != section or not d.is_widget:
                continue
            upload = upload or any(d.options.get(key) for key in UPLOAD_OPTIONS)
            widgets.append(d)
        if upload:
            widgets.append(None)
    return widgets


def _is_control_value(value: Any) -> bool:
    return isinstance(value, str) and value in CONTROL_VALUES


def _widget_inputs(node: dict, cls: type, node_id: str, folders: Any) -> dict:
    widgets = _declared_widgets(cls, node_id, folders)
    values = node.get("widgets_values")
    if values is None:
        values = []
    inputs: dict[str, Any] = {}
    if isinstance(values, dict):  # some packs save {widget_name: value}
        for widget in widgets:
            if widget is not None and widget.name in values:
                inputs[widget.name] = _api_value(values[widget.name])
        return inputs
    if not isinstance(values, list):
        raise WorkflowError(f"node {node_id} ({node.get('type')}): widgets_values must be a list, "
                            f"got {type(values).__name__}", node_id)
    pos = 0
    for i, widget in enumerate(widgets):
        if widget is None:
            pos += _spare_text(values, pos, widgets[i + 1:])
            continue
        if pos < len(values):
            inputs[widget.name] = _api_value(values[pos])
            pos += 1
        elif "default" in widget.options:  # saved before the input existed: the editor uses the default
            inputs[widget.name] = widget.options["default"]
        if widget.control_values and pos < len(values) and _is_control_value(values[pos]):
            pos += 1
            if widget.control_values == 2:
                pos += _spare_text(values, pos, widgets[i + 1:])
    return inputs


def _spare_text(values: list, pos: int, widgets_left: list) -> int:
    """1 when values[pos] is a frontend-only text (the upload button's value, a combo control's
    filter) to skip, else 0. Files saved without one have nothing to skip, so only a surplus of
    values over the widgets left is skipped."""
    real_left = sum(1 for w in widgets_left if w is not None)
    return int(len(values) - pos > real_left and isinstance(values[pos], str))
