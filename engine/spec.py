"""A node class as the engine sees it: parsed inputs, outputs, and the `/object_info` entry.

Node classes are ComfyUI V1 classes; this module reads their attributes in one place so that
validation, the executor and the HTTP API agree on what a class declares.
"""
from __future__ import annotations

import enum
import inspect
from typing import Any

from .context import NodeContext, current_context, enter_context, leave_context

INPUT_SECTIONS = ("required", "optional", "hidden")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
LEGACY_SEED_NAMES = ("seed", "noise_seed")


class InvalidNodeClass(TypeError):
    """A class registered as a node lacks what every node must declare."""


class InputDef:
    """One declared input; derived facts are computed once because validation reads them per node."""
    __slots__ = ("name", "section", "type", "options", "type_name", "combo_options", "lazy", "raw_link")

    def __init__(self, name: str, section: str, type: Any, options: dict | None = None):
        self.name = name
        self.section = section          # required | optional | hidden
        self.type = type                # a type string, or the options list of a legacy combo
        self.options = options or {}
        is_list = isinstance(type, (list, tuple))
        # the socket type as a plain str: packs' "any" str subclasses may claim to equal everything
        self.type_name = "COMBO" if is_list else str.__str__(type) if isinstance(type, str) else type
        if is_list:
            self.combo_options = list(type)
        elif type == "COMBO" and isinstance(self.options.get("options"), (list, tuple)):
            self.combo_options = list(self.options["options"])
        else:
            self.combo_options = None
        self.lazy = bool(self.options.get("lazy", False))
        self.raw_link = bool(self.options.get("rawLink", False))   # gets the link itself, not the value

    def __repr__(self) -> str:
        return f"InputDef({self.name!r}, {self.section!r}, {self.type!r}, {self.options!r})"

    @property
    def is_widget(self) -> bool:
        """Edited on the node rather than fed by a socket, as the editors decide it."""
        if self.section == "hidden" or self.options.get("forceInput") or self.options.get("defaultInput"):
            return False
        return self.combo_options is not None or self.type_name in WIDGET_TYPES

    @property
    def control_values(self) -> int:
        """How many editor-only values follow this widget's in widgets_values (never sent to the
        API): a "control after generate" mode, and for a combo its filter text too. An INT named
        seed or noise_seed gets a control unless the input says otherwise (legacy files)."""
        control = self.options.get("control_after_generate")
        if control is None:
            control = self.type_name == "INT" and self.name in LEGACY_SEED_NAMES
        if not control:
            return 0
        return 2 if self.combo_options is not None or self.type_name == "COMBO" else 1

    def config(self) -> list:
        """ComfyUI's `input_config` as shown in validation errors: [type, options]."""
        return [self.type, self.options] if self.options else [self.type]


def declared_inputs(cls: type, folders: Any = None) -> Any:
    """The class's INPUT_TYPES(), called exactly as ComfyUI calls it: with no argument.

    File-list widgets (checkpoints, input images) need the folders outside any node call: when
    no node context is current, one holding `folders` is made current for the call, so such
    nodes find them through `current_context()` instead of a global folder registry.
    """
    if folders is None or current_context() is not None:
        return cls.INPUT_TYPES()
    token = enter_context(NodeContext("", "", getattr(cls, "__name__", "?"), folders, None))
    try:
        return cls.INPUT_TYPES()
    finally:
        leave_context(token)


class InputDefs(dict):
    """{input name: InputDef}, in declaration order; `takes_undeclared`: undeclared inputs are passed on."""
    takes_undeclared = False


def parse_input_types(cls: type, folders: Any = None) -> dict[str, InputDef]:
    """INPUT_TYPES() as ordered InputDefs; hidden entries may be "PROMPT" or ["PROMPT"]."""
    declared = declared_inputs(cls, folders)
    if not isinstance(declared, dict):
        raise InvalidNodeClass(f"{cls.__name__}.INPUT_TYPES() must return a dict, got {type(declared).__name__}")
    inputs = InputDefs()
    optional = declared.get("optional")
    # A pack's optional section may claim every name (rgthree's FlexibleOptionalInputType, V3's
    # accept_all_inputs): ComfyUI then passes undeclared constants on too, not only links.
    inputs.takes_undeclared = optional is not None and type(optional).__contains__ is not dict.__contains__
    for section in INPUT_SECTIONS:
        for name, entry in (declared.get(section) or {}).items():
            if isinstance(entry, (list, tuple)) and entry:
                input_type = entry[0]
                options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            else:
                input_type, options = entry, {}
            inputs[name] = InputDef(name, section, input_type, options)
    return inputs


def types_match(received: Any, expected: Any) -> bool:
    """Does an output of type `received` fit an input of type `expected`?

    Types are comma-separated sets that match on any overlap; "*" matches everything, and so do
    the str subclasses packs use for "any" (their __ne__ always returns False).
    """
    if not (received != expected):
        return True
    if isinstance(expected, (list, tuple)):  # a legacy combo input fed by a link
        return isinstance(received, (list, tuple)) or received in ("COMBO", "STRING", "*")
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _as_tuple(value, length: int, default) -> tuple:
    """One flag per output: a single bool applies to all; a short tuple leaves the rest `default`."""
    if value is None:
        return (default,) * length
    if isinstance(value, bool):
        return (value,) * length
    flags = tuple(value)
    return flags + (default,) * (length - len(flags))


class NodeSpec:
    """One registered node class and what it declares (class attributes read once)."""

    def __init__(self, name: str, cls: type, display_name: str | None = None, pack: str = "vidgraph",
                 python_module: str | None = None, folders: Any = None):
        for attr in ("INPUT_TYPES", "RETURN_TYPES", "FUNCTION"):
            if not hasattr(cls, attr):
                raise InvalidNodeClass(f"node {name!r} ({getattr(cls, '__name__', cls)!r}) has no {attr}")
        if not isinstance(cls.FUNCTION, str) or not hasattr(cls, cls.FUNCTION):
            raise InvalidNodeClass(f"node {name!r}: FUNCTION {cls.FUNCTION!r} is not a method of the class")
        self.name = name
        self.cls = cls
        self.folders = folders
        self.display_name = display_name or name
        self.pack = pack
        self.python_module = python_module or getattr(cls, "__module__", pack)
        self.return_types = tuple(cls.RETURN_TYPES or ())
        n = len(self.return_types)
        self.return_names = tuple(getattr(cls, "RETURN_NAMES", None) or self.return_types)
        self.output_is_list = _as_tuple(getattr(cls, "OUTPUT_IS_LIST", None), n, False)
        self.input_is_list = bool(getattr(cls, "INPUT_IS_LIST", False))
        self.function = cls.FUNCTION
        self.output_node = bool(getattr(cls, "OUTPUT_NODE", False))
        self.category = getattr(cls, "CATEGORY", "sd")
        self.description = getattr(cls, "DESCRIPTION", "") or ""
        self.not_idempotent = bool(getattr(cls, "NOT_IDEMPOTENT", False))
        self.is_changed = getattr(cls, "IS_CHANGED", None)
        self.validate_inputs = getattr(cls, "VALIDATE_INPUTS", None)
        self.has_lazy_check = callable(getattr(cls, "check_lazy_status", None))
        # (keyword parameter names, takes **kwargs) of the two class methods called before running
        no_method = (set(), False)
        self.validate_params = no_method if self.validate_inputs is None else call_parameters(self.validate_inputs)
        self.is_changed_params = no_method if self.is_changed is None else call_parameters(self.is_changed)

    def input_defs(self) -> dict[str, InputDef]:
        """Parsed INPUT_TYPES(); called afresh because model/file lists change between prompts."""
        return parse_input_types(self.cls, self.folders)


    def info(self) -> dict:
        """The `/object_info` entry (ComfyUI's V1 shape)."""
        declared = declared_inputs(self.cls, self.folders)
        entry: dict[str, Any] = {
            "input": to_json(declared),
            "input_order": {section: list(declared[section]) for section in INPUT_SECTIONS
                            if section in declared and declared[section] is not None},
            "output": to_json(list(self.return_types)),
            "output_is_list": list(self.output_is_list),
            "output_name": to_json(list(self.return_names)),
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        tooltips = getattr(self.cls, "OUTPUT_TOOLTIPS", None)
        if tooltips:
            entry["output_tooltips"] = list(tooltips)
        for attr, key in (("DEPRECATED", "deprecated"), ("EXPERIMENTAL", "experimental"),
                          ("API_NODE", "api_node")):
            if getattr(self.cls, attr, False):
                entry[key] = True
        return entry


def to_json(value: Any) -> Any:
    """Make a declared spec JSON-safe: tuples become lists, "any" str subclasses plain strings."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    return str(value)


def context_is_hidden(defs: dict[str, InputDef]) -> bool:
    """A `context` parameter means vidgraph's NODE_CONTEXT unless the class has a real input so named."""
    declared = defs.get("context")
    return declared is None or declared.section == "hidden"


def call_parameters(fn) -> tuple[set[str], bool]:
    """(keyword-passable parameter names, takes **kwargs) of a callable."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params.values())
