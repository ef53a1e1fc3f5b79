"""The core (non-ML) nodes, run through the engine like any workflow."""
import pytest

from vidgraph.nodes import core


def link(node_id, output=0):
    return [str(node_id), output]


def run_value(executor, nodes):
    prompt = dict(nodes)
    last = list(prompt)[-1]
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": link(last)}}
    result = executor.run(prompt)
    assert result.status == "success", result.error
    return result.outputs["out"]["text"][0]


def test_comfyui_primitive_names_and_display_names():
    for name, shown in (("PrimitiveInt", "Int"), ("PrimitiveFloat", "Float"), ("PrimitiveString", "String"),
                        ("PrimitiveStringMultiline", "String (Multiline)"), ("PrimitiveBoolean", "Boolean"),
                        ("PreviewAny", "Preview Any"), ("StringConcatenate", "Concatenate")):
        assert name in core.NODE_CLASS_MAPPINGS and core.NODE_DISPLAY_NAME_MAPPINGS[name] == shown
    assert set(core.NODE_CLASS_MAPPINGS) == set(core.NODE_DISPLAY_NAME_MAPPINGS)


@pytest.mark.parametrize("kind, a, b, op, expected", [
    ("IntMath", 7, 2, "divide", "3"), ("IntMath", -7, 2, "divide", "-4"), ("IntMath", 2, 10, "power", "1024"),
    ("IntMath", 3, 9, "max", "9"), ("FloatMath", 1, 4, "divide", "0.25"), ("FloatMath", 2, 3, "multiply", "6.0"),
])
def test_math(executor, kind, a, b, op, expected):
    assert run_value(executor, {"1": {"class_type": kind, "inputs": {"a": a, "b": b, "operation": op}}}) == expected


def test_division_by_zero_names_the_input(executor):
    result = executor.run({"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 0, "operation": "modulo"}},
                           "2": {"class_type": "PreviewAny", "inputs": {"source": link(1)}}})
    assert result.error["node_id"] == "1" and "input 'b' is 0" in result.error["exception_message"]


def test_compare_accepts_ints_and_floats(executor):
    nodes = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
             "2": {"class_type": "Compare", "inputs": {"a": link(1), "b": 2.5, "operation": ">"}}}
    assert run_value(executor, nodes) == "true"


def test_strings(executor):
    nodes = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "video"}},
             "2": {"class_type": "StringConcatenate", "inputs": {"string_a": link(1), "string_b": "graph",
                                                                "delimiter": "-"}},
             "3": {"class_type": "StringReplace", "inputs": {"string": link(2), "find": "-", "replace": "+"}},
             "4": {"class_type": "StringLength", "inputs": {"string": link(3)}}}
    assert run_value(executor, nodes) == "11"


def test_switch_picks_a_branch_lazily(executor, calls):
    nodes = {"1": {"class_type": "PrimitiveBoolean", "inputs": {"value": True}},
             "2": {"class_type": "PrimitiveString", "inputs": {"value": "yes"}},
             "3": {"class_type": "Boom", "inputs": {"value": 1}},
             "4": {"class_type": "Switch", "inputs": {"condition": link(1), "on_true": link(2),
                                                      "on_false": link(3)}}}
    assert run_value(executor, nodes) == "yes" and "Boom" not in calls.names()


def test_to_string_formats(executor):
    assert core.as_text({"a": [1, 2]}).startswith("{") and core.as_text(2.0) == "2.0"
    assert core.as_text(None) == "null" and core.as_text(object).startswith("<class")
    assert run_value(executor, {"1": {"class_type": "ToString", "inputs": {"value": 5}}}) == "5"
