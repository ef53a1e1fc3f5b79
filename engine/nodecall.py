"""Calling one node the ComfyUI way: gather inputs, map over lists, normalise what it returns.

Every value travels as a list (ComfyUI's list semantics): a constant is a one-element list, a
link brings the producer's output list. A node is called once per element (shorter lists repeat
their last element) unless it sets INPUT_IS_LIST; OUTPUT_IS_LIST outputs are flattened.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .context import current_context
from .spec import InputDef, NodeSpec
from .validation import Link, Node


# Hidden inputs the executor fills in; a hidden input of another type takes the prompt's value.
HIDDEN_KINDS = frozenset({"PROMPT", "DYNPROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "NODE_CONTEXT",
                          "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"})


class ExecutionBlocker:
    """Returned as an output value to stop the nodes that consume it.

    With a message they fail with "Execution Blocked: <message>"; with None they are skipped.
    """

    def __init__(self, message: str | None):
        self.message = message


class ExecutionBlocked(Exception):
    pass


class NodeOutputError(TypeError):
    """A node returned something that is not a valid result for its RETURN_TYPES."""


def gather_inputs(node: Node, defs: dict[str, InputDef], results: dict, hidden: Callable[[str], Any]) -> dict:
    """The node's inputs as lists; unevaluated lazy links come as [None].

    Links under names INPUT_TYPES does not declare are passed on too (ComfyUI's rule, which
    nodes with dynamic inputs rely on); undeclared constants only when the optional section claims
    every name (`defs.takes_undeclared`). Deferred values reach only
    the inputs that declare `"stream": True`; every other input gets them materialised.
    """
    inputs: dict[str, list] = {}
    for name, d in defs.items():
        if name in node.inputs:
            value = node.inputs[name]
            if isinstance(value, Link):
                inputs[name] = ([[value.node_id, value.output]] if d.raw_link else
                                _linked(value, results, d.options.get("stream") is True))
            else:
                inputs[name] = [value]
        if d.section == "hidden":
            if d.type_name in HIDDEN_KINDS:
                inputs[name] = [hidden(d.type_name)]
            elif name not in node.inputs:
                value = hidden(d.type_name)
                if value is not None:
                    inputs[name] = [value]
    if not defs.keys() >= node.inputs.keys():
        takes_undeclared = getattr(defs, "takes_undeclared", False)
        for name, value in node.inputs.items():
            if name not in defs and isinstance(value, Link):
                inputs[name] = _linked(value, results, False)
            elif name not in defs and takes_undeclared:
                inputs[name] = [value]
    return inputs


def _linked(link: Link, results: dict, takes_deferred: bool) -> list:
    produced = results.get(link.node_id)
    if produced is None:
        return [None]
    values = produced.outputs[link.output]
    return values if takes_deferred else [materialized(v) for v in values]


def materialized(value: Any) -> Any:
    """A deferred value (one whose class has `vidgraph_materialize()`, e.g. frames kept in a file)
    as the plain value nodes expect; anything else unchanged."""
    materialize = getattr(type(value), "vidgraph_materialize", None)
    return value.vidgraph_materialize() if materialize is not None else value


def call_over_lists(spec: NodeSpec, method: Callable, inputs: dict[str, list], before_call: Callable[[], None],
                    run_coroutine: Callable[[Any], Any]) -> list:
    """Call `method` once, or once per list element; a call fed a blocker yields the blocker.

    The running context learns which call it is, so GraphBuilders made during call i name their
    nodes "<node id>.<i>.<graph number>.<id>" and expansions never clash."""
    if spec.input_is_list:
        calls = [inputs]
    else:
        lengths = [len(v) for v in inputs.values()]
        count = 0 if 0 in lengths else max(lengths, default=1)
        if count == 1:  # the usual case
            calls = [{k: v[0] for k, v in inputs.items()}]
        else:
            calls = [{k: v[i] if i < len(v) else v[-1] for k, v in inputs.items()} for i in range(count)]
    returned = []
    context = current_context() if len(calls) > 1 else None
    for index, kwargs in enumerate(calls):
        before_call()
        if context is not None:
            context.list_index, context.graphs_made = index, 0
        blocker = _find_blocker(kwargs.values(), spec.input_is_list)
        if blocker is not None:
            returned.append(blocker)
            continue
        result = method(**kwargs)
        if inspect.isawaitable(result):
            result = run_coroutine(result)
        returned.append(result)
    return returned


def _find_blocker(values, nested: bool) -> ExecutionBlocker | None:
    for value in values:
        for item in (value if nested and isinstance(value, list) else (value,)):
            if isinstance(item, ExecutionBlocker):
                return item
    return None


def collect_results(spec: NodeSpec, returned: list) -> tuple[list[list], dict | None]:
    """Per output slot, the list of values; and the merged ui dict (or None)."""
    slots = len(spec.return_types)
    outputs: list[list] = [[] for _ in range(slots)]
    uis = []
    for result in returned:
        if isinstance(result, ExecutionBlocker):
            for slot in outputs:
                slot.append(result)
            continue
        if isinstance(result, dict):
            if "expand" in result:
                raise NodeOutputError("node expansion (returning 'expand') is not supported by vidgraph")
            if result.get("ui") is not None:
                uis.append(result["ui"])
            if result.get("result") is None and slots:
                # ComfyUI takes a ui-only answer; only what consumes the outputs fails, and says why
                missing = ExecutionBlocker(f"{spec.name} returned no 'result' for its outputs "
                                           f"({', '.join(map(str, spec.return_types))})")
                for slot in outputs:
                    slot.append(missing)
                continue
            values = result.get("result", ())
        else:
            values = result
        if values is None:
            values = ()
        if not isinstance(values, (tuple, list)):
            raise NodeOutputError(f"returned a {type(values).__name__}; expected a tuple of {slots} "
                                  f"outputs or a {{'ui': ..., 'result': ...}} dict")
        if len(values) < slots:
            raise NodeOutputError(f"returned {len(values)} outputs; RETURN_TYPES declares {slots}")
        for slot in range(slots):
            if spec.output_is_list[slot]:
                if not isinstance(values[slot], (list, tuple)):
                    raise NodeOutputError(f"output {slot} is declared OUTPUT_IS_LIST but the node returned "
                                          f"a {type(values[slot]).__name__}")
                outputs[slot].extend(values[slot])
            else:
                outputs[slot].append(values[slot])
    return outputs, merge_ui(uis)


def merge_ui(uis: list[dict]) -> dict | None:
    if not uis:
        return None
    if len(uis) == 1:
        return uis[0]
    merged: dict = {}
    for ui in uis:
        for key, value in ui.items():
            if isinstance(value, list) and isinstance(merged.get(key, []), list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return merged


def pending_lazy(node: Node, defs: dict[str, InputDef], results: dict) -> set[str]:
    """Names of the lazy linked inputs not evaluated yet."""
    return {name for name, d in defs.items() if d.lazy and isinstance(node.inputs.get(name), Link)
            and node.inputs[name].node_id not in results}


def lazy_requests(answers: list, pending: set[str]) -> list[str]:
    """The pending lazy inputs that check_lazy_status's answers (one per call) ask for."""
    wanted: list[str] = []
    for answer in answers:
        if isinstance(answer, ExecutionBlocker) or not answer:
            continue
        for name in ([answer] if isinstance(answer, str) else answer):
            if name in pending and name not in wanted:
                wanted.append(name)
    return wanted
