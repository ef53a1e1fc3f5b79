"""Core nodes without ML: primitives, arithmetic, strings, comparison, a lazy switch, text preview.

Primitive and string node names are ComfyUI's own (PrimitiveInt, StringConcatenate, PreviewAny,
...), so workflows that use them load unchanged.
"""
from __future__ import annotations

import json
import math
import operator
import sys

from .common import NodeInputError

BIG = sys.maxsize


class AnyType(str):
    """A socket type that matches every other type (packs use the same trick)."""

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


ANY = AnyType("*")


def _primitive(name: str, type_name: str, options: dict, doc: str):
    class Primitive:
        DESCRIPTION = doc
        CATEGORY = "utils/primitive"
        RETURN_TYPES = (type_name,)
        FUNCTION = "execute"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": (type_name, dict(options))}}

        def execute(self, value):
            return (value,)

    Primitive.__name__ = Primitive.__qualname__ = name
    return Primitive


PrimitiveInt = _primitive("PrimitiveInt", "INT",
                          {"default": 0, "min": -BIG, "max": BIG, "control_after_generate": True},
                          "An integer constant.")
PrimitiveFloat = _primitive("PrimitiveFloat", "FLOAT", {"default": 0.0, "min": -BIG, "max": BIG, "step": 0.01},
                            "A floating-point constant.")
PrimitiveString = _primitive("PrimitiveString", "STRING", {"default": ""}, "A one-line string constant.")
PrimitiveStringMultiline = _primitive("PrimitiveStringMultiline", "STRING", {"default": "", "multiline": True},
                                      "A multi-line string constant.")
PrimitiveBoolean = _primitive("PrimitiveBoolean", "BOOLEAN", {"default": False}, "A true/false constant.")


ARITHMETIC = {
    "add": operator.add,
    "subtract": operator.sub,
    "multiply": operator.mul,
    "divide": operator.truediv,
    "modulo": operator.mod,
    "power": operator.pow,
    "min": min,
    "max": max,
}


def _math_node(name: str, type_name: str, cast):
    class Math:
        DESCRIPTION = f"Arithmetic on two {type_name} values (integer division rounds toward minus infinity)."
        CATEGORY = "utils/math"
        RETURN_TYPES = (type_name,)
        FUNCTION = "calculate"

        @classmethod
        def INPUT_TYPES(cls):
            number = {"default": 0, "min": -BIG, "max": BIG} if type_name == "INT" else \
                {"default": 0.0, "min": -BIG, "max": BIG, "step": 0.01}
            return {"required": {"a": (type_name, dict(number)), "b": (type_name, dict(number)),
                                 "operation": (list(ARITHMETIC), {"default": "add"})}}

        def calculate(self, a, b, operation):
            if operation in ("divide", "modulo") and b == 0:
                raise ZeroDivisionError(f"{operation} by zero (input 'b' is 0)")
            if operation == "power" and a == 0 and b < 0:
                raise NodeInputError(name, "b", "0 cannot be raised to a negative power")
            if type_name == "INT" and operation == "power" and abs(a) > 1 and b > 64:
                # |a| >= 2 to a power past 64 overflows: refuse before Python builds a huge number
                raise NodeInputError(name, "b", f"{a} ** {b} is outside the INT range")
            try:
                result = a // b if type_name == "INT" and operation == "divide" else ARITHMETIC[operation](a, b)
            except OverflowError:
                result = math.inf
            if isinstance(result, complex):
                raise NodeInputError(name, "b", f"{a} ** {b} is not a real number")
            result = cast(result)
            if not (math.isfinite(result) if type_name == "FLOAT" else -BIG <= result <= BIG):
                raise NodeInputError(name, "b", f"{a} {operation} {b} is outside the {type_name} range")
            return (result,)

    Math.__name__ = Math.__qualname__ = name
    return Math


IntMath = _math_node("IntMath", "INT", int)
FloatMath = _math_node("FloatMath", "FLOAT", float)


COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
               ">": operator.gt, ">=": operator.ge}


class Compare:
    DESCRIPTION = "Compare two numbers."
    CATEGORY = "utils/logic"
    RETURN_TYPES = ("BOOLEAN",)
    FUNCTION = "compare"

    @classmethod
    def INPUT_TYPES(cls):
        number = {"default": 0.0, "min": -BIG, "max": BIG, "step": 0.01}
        return {"required": {"a": ("FLOAT,INT", dict(number)), "b": ("FLOAT,INT", dict(number)),
                             "operation": (list(COMPARISONS), {"default": "=="})}}

    def compare(self, a, b, operation):
        return (COMPARISONS[operation](a, b),)


class Switch:
    DESCRIPTION = "Pass on_true or on_false; only the chosen branch is computed."
    CATEGORY = "utils/logic"
    RETURN_TYPES = (ANY,)
    RETURN_NAMES = ("value",)
    FUNCTION = "switch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"condition": ("BOOLEAN", {"default": True}),
                             "on_true": (ANY, {"lazy": True}),
                             "on_false": (ANY, {"lazy": True})}}

    def check_lazy_status(self, condition, on_true=None, on_false=None):
        return ["on_true"] if condition else ["on_false"]

    def switch(self, condition, on_true=None, on_false=None):
        return (on_true if condition else on_false,)


class StringConcatenate:
    DESCRIPTION = "Join two strings with a delimiter."
    CATEGORY = "utils/string"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string_a": ("STRING", {"multiline": True}),
                             "string_b": ("STRING", {"multiline": True}),
                             "delimiter": ("STRING", {"default": ""})}}

    def execute(self, string_a, string_b, delimiter):
        return (delimiter.join((string_a, string_b)),)


class StringReplace:
    DESCRIPTION = "Replace every occurrence of find with replace."
    CATEGORY = "utils/string"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string": ("STRING", {"multiline": True}),
                             "find": ("STRING", {"multiline": True}),
                             "replace": ("STRING", {"multiline": True})}}

    def execute(self, string, find, replace):
        return (string.replace(find, replace),)


class StringLength:
    DESCRIPTION = "Number of characters in a string."
    CATEGORY = "utils/string"
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("length",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"string": ("STRING", {"multiline": True})}}

    def execute(self, string):
        return (len(string),)


class ToString:
    DESCRIPTION = "Any value as text (numbers and JSON-able values formatted, others with str())."
    CATEGORY = "utils/string"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": (ANY, {})}}

    def execute(self, value):
        return (as_text(value),)


def as_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return repr(value)
    if isinstance(value, (dict, list, tuple, bool, int, float)) or value is None:
        try:
            return json.dumps(value, indent=2) if isinstance(value, (dict, list, tuple)) else json.dumps(value)
        except (TypeError, ValueError):
            pass
    return str(value)


class PreviewAny:
    DESCRIPTION = "Show any value as text in the editor and in the run's outputs."
    CATEGORY = "utils"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "preview"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": (ANY, {})}}

    def preview(self, source):
        return {"ui": {"text": [as_text(source)]}, "result": ()}


NODE_CLASS_MAPPINGS = {
    "PrimitiveInt": PrimitiveInt,
    "PrimitiveFloat": PrimitiveFloat,
    "PrimitiveString": PrimitiveString,
    "PrimitiveStringMultiline": PrimitiveStringMultiline,
    "PrimitiveBoolean": PrimitiveBoolean,
    "IntMath": IntMath,
    "FloatMath": FloatMath,
    "Compare": Compare,
    "Switch": Switch,
    "StringConcatenate": StringConcatenate,
    "StringReplace": StringReplace,
    "StringLength": StringLength,
    "ToString": ToString,
    "PreviewAny": PreviewAny,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PrimitiveInt": "Int",
    "PrimitiveFloat": "Float",
    "PrimitiveString": "String",
    "PrimitiveStringMultiline": "String (Multiline)",
    "PrimitiveBoolean": "Boolean",
    "IntMath": "Int Math",
    "FloatMath": "Float Math",
    "Compare": "Compare",
    "Switch": "Switch",
    "StringConcatenate": "Concatenate",
    "StringReplace": "Replace",
    "StringLength": "Length",
    "ToString": "To String",
    "PreviewAny": "Preview Any",
}
