"""Checking an API-format prompt before anything runs, reporting like ComfyUI's `/prompt` 400.

Every problem is collected in one pass (not the first one only). Nothing recurses, so a
10,000-node chain validates as easily as a short one; cycles are reported as `dependency_cycle`.
The checked prompt comes back normalised (constants coerced, links as `Link`) for the executor.
"""
from __future__ import annotations

import asyncio
import inspect
import math
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import networkx as nx

from .context import NodeContext
from .spec import InputDef, NodeSpec, context_is_hidden, types_match

PROMPT_SCHEMA = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "required": ["class_type"],
        "properties": {
            "class_type": {"type": "string"},
            "inputs": {"type": "object"},
            "_meta": {"type": "object"},
        },
    },
}
_PROMPT_VALIDATOR = jsonschema.Draft7Validator(PROMPT_SCHEMA)
LIST_SHOWN_UP_TO = 20
_PLAIN = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


class Link:
    """A linked input: output `output` of node `node_id` (a slotted class: cheaper than a NamedTuple)."""
    __slots__ = ("node_id", "output")

    def __init__(self, node_id: str, output: int):
        self.node_id = node_id
        self.output = output

    def __eq__(self, other):
        return isinstance(other, Link) and (self.node_id, self.output) == (other.node_id, other.output)

    def __hash__(self):
        return hash((self.node_id, self.output))

    def __repr__(self):
        return f"Link({self.node_id!r}, {self.output})"


class Node:
    """One node of a normalised prompt: constants coerced, links as Link."""
    __slots__ = ("id", "class_type", "inputs")

    def __init__(self, id: str, class_type: str, inputs: dict[str, Any]):
        self.id = id
        self.class_type = class_type
        self.inputs = inputs

    def __repr__(self):
        return f"Node({self.id!r}, {self.class_type!r}, {self.inputs!r})"


@dataclass
class Validation:
    ok: bool
    outputs: list[str] = field(default_factory=list)
    error: dict | None = None
    node_errors: dict = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    specs: dict[str, NodeSpec] = field(default_factory=dict)        # by class_type
    input_defs: dict[str, dict[str, InputDef]] = field(default_factory=dict)  # by class_type
    order: list[str] = field(default_factory=list)   # needed nodes, producers before consumers

    def to_json(self) -> dict:
        """ComfyUI's `/prompt` 400 body: {"error": ..., "node_errors": ...}."""
        return {"error": self.error, "node_errors": self.node_errors}


def class_method_arguments(node: Node, defs: dict[str, InputDef], params: tuple[set[str], bool],
                           context: Any = None) -> dict[str, Any]:
    """What VALIDATE_INPUTS / IS_CHANGED get before anything runs: the inputs they take
    (`params`: their parameter names, takes **kwargs), links as None (also those under undeclared
    names, as ComfyUI's), and the NODE_CONTEXT when they name a `context` parameter and the
    class has no real input so named."""
    names, takes_kwargs = params
    args = {name: (None if isinstance(value, Link) else value) for name, value in node.inputs.items()
            if (takes_kwargs or name in names) and (name in defs or isinstance(value, Link))}
    if context is not None and "context" in names and context_is_hidden(defs):
        args["context"] = context
    return args


def error(type_: str, message: str, details: str = "", **extra_info) -> dict:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info}


def validate_prompt(registry, prompt: Any, partial_targets=None) -> Validation:
    structural = _structure_errors(registry, prompt)
    if structural:
        first = structural[0]
        first["details"] = "\n".join(e["details"] for e in structural)
        return Validation(ok=False, error=first)

    nodes = {str(node_id): Node(str(node_id), entry["class_type"], dict(entry.get("inputs") or {}))
             for node_id, entry in prompt.items()}
    check = _Checker(registry, nodes)
    outputs = [n.id for n in nodes.values() if check.spec(n.class_type).output_node]
    if partial_targets is not None:
        targets = {str(t) for t in partial_targets}
        outputs = [o for o in outputs if o in targets]
    if not outputs:
        return Validation(ok=False, error=error("prompt_no_outputs", "Prompt has no outputs"))

    needed = check.ancestors(outputs)
    cycles = check.cycles(needed)
    own_errors: dict[str, list[dict]] = {}
    for node_id in needed:
        errors = cycles.get(node_id, []) + check.node(nodes[node_id])
        if errors:
            own_errors[node_id] = errors
    valid_outputs = check.valid_outputs(outputs, own_errors)
    if own_errors and valid_outputs:
        check.ancestors(valid_outputs)  # `order` then holds only what the runnable outputs need

    dependents = check.dependent_outputs(own_errors, needed, outputs) if own_errors else {}
    node_errors = {
        node_id: {"errors": errors, "dependent_outputs": dependents[node_id],
                  "class_type": nodes[node_id].class_type}
        for node_id, errors in own_errors.items()}
    result = Validation(ok=bool(valid_outputs), outputs=valid_outputs, node_errors=node_errors,
                        nodes=nodes, specs=check.specs, input_defs=check.defs, order=check.order)
    if not valid_outputs:
        if cycles:
            details = "; ".join(sorted({errs[0]["details"] for errs in cycles.values()}))
            result.error = error("dependency_cycle", "Dependency cycle detected", details)
        else:
            on_outputs = [f"{e['message']}: {e['details']}" for o in outputs for e in own_errors.get(o, ())]
            result.error = error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                                 "\n".join(on_outputs))
    return result


def _structure_errors(registry, prompt: Any) -> list[dict]:
    if not isinstance(prompt, dict):
        return [error("invalid_prompt", "Cannot execute because the prompt is not an object.",
                      f"got {type(prompt).__name__}")]
    found = []
    problems = () if _obviously_well_formed(prompt) else _PROMPT_VALIDATOR.iter_errors(prompt)
    for problem in problems:
        where = f"Node ID '#{problem.path[0]}'" if problem.path else "prompt"
        if problem.validator == "required":
            message = "Cannot execute because a node is missing the class_type property."
        else:
            message = f"Cannot execute because of a malformed node: {problem.message}"
        found.append(error("invalid_prompt", message, where))
    if found:
        return found
    for node_id, entry in prompt.items():
        if entry["class_type"] not in registry.classes:
            found.append(error("invalid_prompt",
                               f"Cannot execute because node {entry['class_type']} does not exist.",
                               f"Node ID '#{node_id}'"))
    return found


def _obviously_well_formed(prompt: dict) -> bool:
    """The same test as PROMPT_SCHEMA, hand-unrolled: jsonschema costs ~20 us a node, this ~0.2.

    When it fails, jsonschema runs to name the problems.
    """
    for entry in prompt.values():
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str):
            return False
        if "inputs" in entry and not isinstance(entry["inputs"], dict):
            return False
        if "_meta" in entry and not isinstance(entry["_meta"], dict):
            return False
    return True


class _Checker:
    """Per-validation memo of specs and input definitions, plus the graph of links."""

    def __init__(self, registry, nodes: dict[str, Node]):
        self.registry = registry
        self.nodes = nodes
        self.specs: dict[str, NodeSpec] = {}
        self.defs: dict[str, dict[str, InputDef]] = {}
        self.order: list[str] = []
        self.producers: dict[str, list[str]] = {}
        for node in nodes.values():
            self.producers[node.id] = [str(v[0]) for v in node.inputs.values()
                                       if type(v) is list and len(v) == 2 and str(v[0]) in nodes]
        self.cyclic = False
        self._graph: nx.DiGraph | None = None   # of the needed nodes, built when errors need it

    def spec(self, class_type: str) -> NodeSpec:
        if class_type not in self.specs:
            self.specs[class_type] = self.registry.get(class_type)
        return self.specs[class_type]

    def input_defs(self, class_type: str) -> dict[str, InputDef]:
        if class_type not in self.defs:
            self.defs[class_type] = self.spec(class_type).input_defs()
        return self.defs[class_type]

    def ancestors(self, outputs: list[str]) -> list[str]:
        """Every node the outputs need, producers first (iterative depth-first post-order).

        A link back to a node still being visited means a cycle; then the networkx graph of the
        needed nodes is built to find and report the cycles, and `order` skips their members.
        """
        producers = self.producers
        state: dict[str, bool] = {}      # False while visiting, True when done
        order: list[str] = []
        cyclic = False
        for root in outputs:
            if root in state:
                continue
            state[root] = False
            stack = [(root, iter(producers[root]))]
            while stack:
                node_id, pending = stack[-1]
                for producer in pending:
                    seen = state.get(producer)
                    if seen is None:
                        state[producer] = False
                        stack.append((producer, iter(producers[producer])))
                        break
                    cyclic = cyclic or seen is False
                else:
                    stack.pop()
                    state[node_id] = True
                    order.append(node_id)
        self.order = order
        self.cyclic = cyclic
        return order

    def graph(self, needed: list[str]) -> nx.DiGraph:
        if self._graph is None:
            self._graph = nx.DiGraph()
            self._graph.add_nodes_from(needed)
            self._graph.add_edges_from((p, n) for n in needed for p in self.producers[n])
        return self._graph

    def cycles(self, needed: list[str]) -> dict[str, list[dict]]:
        """dependency_cycle errors for the nodes on cycles (and `order` without them)."""
        if not self.cyclic:
            return {}
        graph = self.graph(needed)
        found: dict[str, list[dict]] = {}
        for component in nx.strongly_connected_components(graph):
            if len(component) == 1:
                only = next(iter(component))
                if not graph.has_edge(only, only):
                    continue
            members = sorted(component, key=id_order)
            details = " -> ".join(members + [members[0]])
            for node_id in members:
                found[node_id] = [error("dependency_cycle", "Dependency cycle detected",
                                        f"nodes {details}")]
        self.order = list(nx.topological_sort(graph.subgraph([n for n in graph if n not in found])))
        return found

    def valid_outputs(self, outputs, own_errors) -> list[str]:
        """Outputs whose whole upstream is free of errors (propagated in dependency order)."""
        if not own_errors:
            return outputs
        bad = set(own_errors)
        for node_id in self.order:
            if node_id not in bad and any(p in bad for p in self.producers[node_id]):
                bad.add(node_id)
        return [o for o in outputs if o not in bad]

    def dependent_outputs(self, failed, needed: list[str], outputs: list[str]) -> dict[str, list[str]]:
        """For each failed node, the outputs downstream of it (walking from the smaller side)."""
        graph = self.graph(needed)
        found: dict[str, list[str]] = {node_id: [] for node_id in failed}
        if len(failed) <= len(outputs):
            for node_id in failed:
                downstream = nx.descendants(graph, node_id) | {node_id}
                found[node_id] = [o for o in outputs if o in downstream]
        else:
            for output in outputs:
                for node_id in (nx.ancestors(graph, output) | {output}) & found.keys():
                    found[node_id].append(output)
        return found

    # -- one node ----------------------------------------------------------------------------

    def node(self, node: Node) -> list[dict]:
        spec = self.spec(node.class_type)
        defs = self.defs.get(node.class_type)
        if defs is None:
            try:
                defs = self.input_defs(node.class_type)
            except Exception as e:
                return [error("exception_during_validation", "Exception when reading the node's inputs",
                              f"{type(e).__name__}: {e}", exception_type=type(e).__name__)]
        accepted, takes_kwargs = spec.validate_params
        wants_types = "input_types" in accepted
        errors: list[dict] = []
        received_types: dict[str, Any] = {}
        for name, d in defs.items():
            if d.section == "hidden":
                continue
            if name not in node.inputs:
                if d.section == "required":
                    errors.append(error("required_input_missing", "Required input is missing", name,
                                        input_name=name))
                continue
            value = node.inputs[name]
            if isinstance(value, list):
                problem, received = self._link(name, d, value, check_type=not wants_types)
                if problem is None:
                    node.inputs[name] = Link(str(value[0]), int(value[1]))
                    received_types[name] = received
                else:
                    errors.append(problem)
                continue
            # ComfyUI: an input VALIDATE_INPUTS names (or all, with **kwargs) skips the built-in range
            # and list checks; the class checks it itself. The type conversion still applies.
            custom_checked = spec.validate_inputs is not None and (name in accepted or takes_kwargs)
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
            elif not custom_checked and _plainly_valid(d, value):
                continue
            value, problem = _constant(name, d, value, check_limits=not custom_checked)
            if problem is not None:
                errors.append(problem)
            else:
                node.inputs[name] = value
        undeclared = node.inputs.keys() - defs.keys()
        if undeclared:
            self._undeclared_links(node, undeclared)
        if spec.validate_inputs is not None and not errors:
            errors.extend(self._custom(spec, node, defs, wants_types, received_types))
        return errors

    def _undeclared_links(self, node: Node, names: set[str]) -> None:
        """Links under names INPUT_TYPES does not declare become Links too: ComfyUI runs their
        producers and passes the values on as keyword arguments (nodes with dynamic inputs rely on
        it). Nothing declares their type, so none is checked; a link to nothing is left out."""
        for name in names:
            value = node.inputs[name]
            if type(value) is not list or len(value) != 2 or type(value[1]) is not int:
                continue
            producer = self.nodes.get(str(value[0]))
            if producer is not None and 0 <= value[1] < len(self.spec(producer.class_type).return_types):
                node.inputs[name] = Link(str(value[0]), value[1])

    def _link(self, name: str, d: InputDef, value: list, check_type: bool):
        if len(value) != 2 or type(value[0]) not in (str, int) or type(value[1]) is not int:
            return error("bad_linked_input", "Bad linked input, must be a length-2 list of [string, int]",
                         name, input_name=name, input_config=d.config(), received_value=value), None
        producer = self.nodes.get(str(value[0]))
        if producer is None:
            return error("bad_linked_input", "Bad linked input, the linked node does not exist",
                         f"{name}: node {value[0]!r} is not in the prompt", input_name=name,
                         input_config=d.config(), received_value=value), None
        returns = self.spec(producer.class_type).return_types
        if not 0 <= value[1] < len(returns):
            return error("bad_linked_input", "Bad linked input, the linked output does not exist",
                         f"{name}: node {value[0]!r} ({producer.class_type}) has {len(returns)} outputs, "
                         f"not output {value[1]}", input_name=name, input_config=d.config(),
                         received_value=value), None
        received = returns[value[1]]
        if check_type and not types_match(received, d.type):
            shown = "COMBO" if isinstance(d.type, (list, tuple)) else d.type
            return error("return_type_mismatch", "Return type mismatch between linked nodes",
                         f"{name}, received_type({_type_str(received)}) mismatch input_type({shown})",
                         input_name=name, input_config=d.config(), received_type=_type_str(received),
                         linked_node=[str(value[0]), value[1]]), None
        return None, received

    def _custom(self, spec, node, defs, wants_types, received_types):
        # vidgraph nodes that check files need the folders: a context without a prompt.
        context = NodeContext("", node.id, spec.name, self.registry.folders, None)
        args = class_method_arguments(node, defs, spec.validate_params, context)
        if wants_types:
            args["input_types"] = received_types
        try:
            verdict = spec.validate_inputs(**args)
            if inspect.isawaitable(verdict):
                verdict = _run_to_completion(verdict)
        except Exception as e:
            return [error("exception_during_validation", "Exception when validating node",
                          f"{type(e).__name__}: {e}", exception_type=type(e).__name__,
                          traceback=traceback.format_exc().splitlines())]
        if verdict is True:
            return []
        names = [n for n in args if n not in ("input_types", "context")]
        reason = "" if verdict is False else f" - {verdict}"
        return [error("custom_validation_failed", "Custom validation failed for node",
                      f"{', '.join(names)}{reason}", input_name=names[0] if names else None)]


def _run_to_completion(awaitable) -> Any:
    """The result of an async VALIDATE_INPUTS, on a fresh event loop (in a helper thread when
    this thread already runs one, as the server's does)."""
    async def wait():
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def _plainly_valid(d: InputDef, value: Any) -> bool:
    """Already the declared widget type and in range: the common case, checked without copying."""
    if d.combo_options is not None:
        return value in d.combo_options
    if type(value) is not _PLAIN.get(d.type_name):
        return False
    if type(value) is float and not math.isfinite(value):
        return False
    low, high = d.options.get("min"), d.options.get("max")
    return (low is None or value >= low) and (high is None or value <= high)


def _type_str(t: Any) -> str:
    return "COMBO" if isinstance(t, (list, tuple)) else str.__str__(t) if isinstance(t, str) else str(t)


def id_order(node_id: str):
    """Sort key for node ids: numbers in numeric order, then the others ("12:5") by text."""
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _coerce(type_name: str, value: Any) -> Any:
    """Coerce a widget value the way ComfyUI does, refusing bools for numbers and NaN/infinity."""
    if type_name == "INT":
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            raise TypeError(f"a {type(value).__name__} is not an INT")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return int(value) if not isinstance(value, str) else int(float(value)) if "." in value else int(value)
    if type_name == "FLOAT":
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            raise TypeError(f"a {type(value).__name__} is not a FLOAT")
        result = float(value)
        if not math.isfinite(result):
            raise ValueError(f"{value} is not a finite number")
        return result
    if type_name == "STRING":
        if isinstance(value, (dict, list)) or value is None:
            raise TypeError(f"a {type(value).__name__} is not a STRING")
        return str(value)
    if type_name == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeError(f"{value!r} is not a BOOLEAN")
    return value


def _constant(name: str, d: InputDef, value: Any, check_limits: bool):
    """(coerced value, None) or (value, error dict) for one widget value."""
    type_name = d.type_name
    try:
        value = _coerce(type_name, value)
    except (TypeError, ValueError, OverflowError) as e:
        return value, error("invalid_input_type", f"Failed to convert an input value to a {type_name} value",
                            f"{name}, {value!r}, {e}", input_name=name, input_config=d.config(),
                            received_value=value)
    if not check_limits:
        return value, None
    if type_name in ("INT", "FLOAT"):
        low, high = d.options.get("min"), d.options.get("max")
        if low is not None and value < low:
            return value, error("value_smaller_than_min", f"Value {value} smaller than min of {low}", name,
                                input_name=name, input_config=d.config(), received_value=value)
        if high is not None and value > high:
            return value, error("value_bigger_than_max", f"Value {value} bigger than max of {high}", name,
                                input_name=name, input_config=d.config(), received_value=value)
    options = d.combo_options
    if options is not None and value not in options:
        shown, shown_config = (f"(list of length {len(options)})", None) if len(options) > LIST_SHOWN_UP_TO \
            else (str(options), d.config())
        return value, error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {shown}",
                            input_name=name, input_config=shown_config, received_value=value)
    return value, None
