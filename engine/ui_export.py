"""API format → ComfyUI's UI ("workflow", litegraph) format, with a readable automatic layout.

The reverse of `workflow.ui_to_api`: it lets an API-format workflow (a bundled one, or one
written by a script) open in the editor and in ComfyUI's frontend. Widget order and the seed's
extra "control after generate" value follow the node classes' INPUT_TYPES, as the frontends do.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

from .spec import InputDef, parse_input_types
from .workflow import is_link

COLUMN_WIDTH = 360
ROW_GAP = 40
NODE_WIDTH = 300
SLOT_HEIGHT = 22
PREVIEW_HEIGHT = 180


def _visible_inputs(cls) -> list[InputDef]:
    return [spec for spec in parse_input_types(cls).values() if spec.section != "hidden"]


def _depths(prompt: Mapping[str, dict]) -> dict[str, int]:
    """Longest distance from a source node, computed without recursion."""
    parents = {nid: {v[0] for v in node.get("inputs", {}).values() if is_link(v) and v[0] in prompt}
               for nid, node in prompt.items()}
    depth: dict[str, int] = {}
    remaining = dict(parents)
    while remaining:
        ready = [nid for nid, ps in remaining.items() if all(p in depth for p in ps)]
        if not ready:  # a cycle: place the rest in one more column rather than fail
            ready = list(remaining)
        for nid in ready:
            depth[nid] = 1 + max((depth.get(p, 0) for p in remaining[nid]), default=-1)
            del remaining[nid]
    return depth


def api_to_ui(prompt: Mapping[str, dict], classes: Mapping[str, type]) -> dict:
    """Build a UI-format workflow from an API-format prompt, using `classes` for slot order."""
    numeric = {nid: int(nid) if str(nid).isdigit() else i + 10_000
               for i, nid in enumerate(sorted(prompt, key=str))}
    depths = _depths(prompt)
    column_y: dict[int, float] = defaultdict(float)
    links: list[list] = []
    nodes: list[dict] = []
    outputs_links: dict[tuple[str, int], list[int]] = defaultdict(list)

    # Links first, so every node's output knows its link ids.
    pending_inputs: dict[str, list[tuple[InputDef, Any]]] = {}
    for nid, node in prompt.items():
        cls = classes.get(node["class_type"])
        specs = _visible_inputs(cls) if cls is not None else [
            InputDef(name, "required", "*") for name in node.get("inputs", {})]
        declared = {spec.name for spec in specs}
        # links under names the class does not declare (dynamic inputs) become plain "*" sockets
        specs += [InputDef(name, "optional", "*") for name, value in node.get("inputs", {}).items()
                  if name not in declared and is_link(value)]
        pending_inputs[nid] = [(spec, node.get("inputs", {}).get(spec.name)) for spec in specs]

    for order, nid in enumerate(sorted(prompt, key=lambda n: (depths[n], numeric[n]))):
        node = prompt[nid]
        cls = classes.get(node["class_type"])
        inputs, widgets_values = [], []
        for spec, value in pending_inputs[nid]:
            name, type_, options = spec.name, spec.type_name, spec.options
            widget = spec.is_widget
            if is_link(value) and value[0] in prompt:
                link_id = len(links) + 1
                src_cls = classes.get(prompt[value[0]]["class_type"])
                link_type = (src_cls.RETURN_TYPES[value[1]] if src_cls is not None
                             and value[1] < len(src_cls.RETURN_TYPES) else "*")
                links.append([link_id, numeric[value[0]], value[1], numeric[nid], len(inputs),
                              link_type])
                outputs_links[(value[0], value[1])].append(link_id)
                entry = {"name": name, "type": type_, "link": link_id}
                if widget:
                    entry["widget"] = {"name": name}
                inputs.append(entry)
                value = options.get("default")  # the widget keeps a value under the link
            elif not widget:
                inputs.append({"name": name, "type": type_, "link": None})
                continue
            if widget:
                if value is None:
                    combo = spec.combo_options
                    value = options.get("default", combo[0] if combo else None)
                widgets_values.append(value)
                widgets_values.extend(["fixed", ""][:spec.control_values])
        return_types = list(getattr(cls, "RETURN_TYPES", ()) or ())
        return_names = list(getattr(cls, "RETURN_NAMES", None) or return_types)
        height = 60 + SLOT_HEIGHT * (max(len(inputs), len(return_types)) + len(widgets_values))
        if getattr(cls, "OUTPUT_NODE", False):
            height += PREVIEW_HEIGHT  # room for the image or video the node will show
        column = depths[nid]
        entry = {
            "id": numeric[nid], "type": node["class_type"],
            "pos": [40 + column * COLUMN_WIDTH, 40 + column_y[column]],
            "size": [NODE_WIDTH, height], "flags": {}, "order": order, "mode": 0,
            "inputs": inputs,
            "outputs": [{"name": name, "type": type_, "links": None, "slot_index": i}
                        for i, (name, type_) in enumerate(zip(return_names, return_types))],
            "properties": {"Node name for S&R": node["class_type"]},
            "widgets_values": widgets_values,
        }
        title = (node.get("_meta") or {}).get("title")
        if title:
            entry["title"] = title
        column_y[column] += height + ROW_GAP
        nodes.append(entry)

    by_id = {n["id"]: n for n in nodes}
    for (src, slot), ids in outputs_links.items():
        outputs = by_id[numeric[src]]["outputs"]
        if slot < len(outputs):
            outputs[slot]["links"] = ids
    return {
        "last_node_id": max((n["id"] for n in nodes), default=0),
        "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
        "config": {}, "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4,
    }
