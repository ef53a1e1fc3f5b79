import math

import pytest

from vidgraph.engine.validation import validate_prompt



def link(node_id, output=0):
    return [str(node_id), output]


def only_error(v, node_id):
    errors = v.node_errors[node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_prompt_is_normalised(registry):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": "7"}},
              "2": {"class_type": "FloatMath", "inputs": {"a": 1, "b": {"__value__": 2}, "operation": "add"}},
              "3": {"class_type": "Show", "inputs": {"value": link(1)}}}
    v = validate_prompt(registry, prompt)
    assert v.ok and v.outputs == ["3"] and v.node_errors == {} and v.error is None
    assert v.nodes["1"].inputs["value"] == 7  # coerced like ComfyUI
    assert v.order.index("1") < v.order.index("3") and "2" not in v.order  # not needed
    assert prompt["1"]["inputs"]["value"] == "7"  # the caller's prompt is untouched


@pytest.mark.parametrize("prompt, message", [
    ({"1": {"inputs": {}}}, "missing the class_type property"),
    ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, "node NoSuchNode does not exist"),
    ({"1": {"class_type": "Show", "inputs": []}}, "malformed node"),
    ([1, 2], "not an object"),
])
def test_invalid_prompt(registry, prompt, message):
    v = validate_prompt(registry, prompt)
    assert not v.ok and v.error["type"] == "invalid_prompt" and message in v.error["message"]
    assert v.to_json()["node_errors"] == {}


def test_no_outputs(registry):
    v = validate_prompt(registry, {"1": {"class_type": "Number", "inputs": {"value": 1}}})
    assert v.error == {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                       "extra_info": {}}
    v = validate_prompt(registry, {"1": {"class_type": "Show", "inputs": {"value": 1}}}, partial_targets=[])
    assert v.error["type"] == "prompt_no_outputs"


def test_all_errors_at_once_with_comfyui_types(registry):
    prompt = {
        "1": {"class_type": "Number", "inputs": {"value": 500}},                        # > max
        "2": {"class_type": "Number", "inputs": {"value": -500}},                       # < min
        "3": {"class_type": "IntMath", "inputs": {"a": 1, "b": 2, "operation": "nope"}},  # combo
        "4": {"class_type": "Add", "inputs": {"a": "x"}},                               # type + missing
        "5": {"class_type": "Add", "inputs": {"a": ["1"], "b": ["99", 0]}},             # bad links
        "6": {"class_type": "Add", "inputs": {"a": link("3"), "b": link("1", 3)}},      # bad slot
        "7": {"class_type": "Add", "inputs": {"a": link("3"), "b": link("10")}},        # type mismatch
        "10": {"class_type": "PrimitiveString", "inputs": {"value": "s"}},
        "8": {"class_type": "Show", "inputs": {}},                                       # missing
        "9": {"class_type": "Show", "inputs": {"value": link("7")}},
        "11": {"class_type": "Show", "inputs": {"value": link("2")}},
        "12": {"class_type": "Show", "inputs": {"value": link("4")}},
        "13": {"class_type": "Show", "inputs": {"value": link("5")}},
        "14": {"class_type": "Show", "inputs": {"value": link("6")}},
    }
    v = validate_prompt(registry, prompt)
    assert not v.ok and v.error["type"] == "prompt_outputs_failed_validation"
    assert v.error["details"] == "Required input is missing: value"  # only errors on output nodes
    assert only_error(v, "1") == {
        "type": "value_bigger_than_max", "message": "Value 500 bigger than max of 100", "details": "value",
        "extra_info": {"input_name": "value", "input_config": ["INT", {"default": 0, "min": -100, "max": 100}],
                       "received_value": 500}}
    assert only_error(v, "2")["type"] == "value_smaller_than_min"
    combo = only_error(v, "3")
    assert combo["type"] == "value_not_in_list" and combo["details"].startswith("operation: 'nope' not in [")
    assert {e["type"] for e in v.node_errors["4"]["errors"]} == {"invalid_input_type", "required_input_missing"}
    assert [e["type"] for e in v.node_errors["5"]["errors"]] == ["bad_linked_input", "bad_linked_input"]
    assert "does not exist" in v.node_errors["5"]["errors"][1]["message"]
    assert only_error(v, "6")["type"] == "bad_linked_input"
    mismatch = only_error(v, "7")
    assert mismatch["type"] == "return_type_mismatch"
    assert mismatch["details"] == "b, received_type(STRING) mismatch input_type(INT)"
    assert mismatch["extra_info"]["linked_node"] == ["10", 0]
    assert only_error(v, "8")["type"] == "required_input_missing"
    assert v.node_errors["7"]["dependent_outputs"] == ["9"] and v.node_errors["7"]["class_type"] == "Add"
    # only nodes with their own errors are listed, not the outputs that fail because of them
    assert "9" not in v.node_errors and "11" not in v.node_errors


def test_valid_outputs_run_even_when_others_fail(registry):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 500}},
              "2": {"class_type": "Show", "inputs": {"value": link(1)}},
              "3": {"class_type": "Show", "inputs": {"value": 5}}}
    v = validate_prompt(registry, prompt)
    assert v.ok and v.outputs == ["3"] and list(v.node_errors) == ["1"]


@pytest.mark.parametrize("value, kind", [(True, "invalid_input_type"), (math.nan, "invalid_input_type"),
                                         ("abc", "invalid_input_type"), ([1, 2, 3], "bad_linked_input")])
def test_bad_constants(registry, value, kind):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": value}},
              "2": {"class_type": "Show", "inputs": {"value": link(1)}}}
    assert only_error(validate_prompt(registry, prompt), "1")["type"] == kind


def test_float_infinity_and_long_combo_list_elided(registry):
    class Pick:
        RETURN_TYPES = ("STRING",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"name": ([f"m{i}" for i in range(30)],), "x": ("FLOAT", {})}}

        def f(self, name, x):
            return (name,)

    registry.register("Pick", Pick)
    v = validate_prompt(registry, {"1": {"class_type": "Pick", "inputs": {"name": "zz", "x": math.inf}},
                                   "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    by_type = {e["type"]: e for e in v.node_errors["1"]["errors"]}
    assert by_type["value_not_in_list"]["details"] == "name: 'zz' not in (list of length 30)"
    assert by_type["value_not_in_list"]["extra_info"]["input_config"] is None
    assert "invalid_input_type" in by_type


def test_validate_inputs_custom_and_input_types(registry):
    seen = {}

    class Checked:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"src": ("INT", {}), "name": (["a.png"],)}}

        @classmethod
        def VALIDATE_INPUTS(cls, name, input_types):
            seen.update(name=name, input_types=input_types)
            return True if name.endswith(".png") else f"Invalid image file: {name}"

        def f(self, src, name):
            return (src,)

    registry.register("Checked", Checked)
    prompt = {"1": {"class_type": "PrimitiveString", "inputs": {"value": "s"}},
              "2": {"class_type": "Checked", "inputs": {"src": link(1), "name": "other.png"}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}}}
    v = validate_prompt(registry, prompt)
    # VALIDATE_INPUTS takes `name`, so the combo list is not checked; it takes input_types,
    # so the STRING->INT link is left for it to judge.
    assert v.ok, v.node_errors
    assert seen == {"name": "other.png", "input_types": {"src": "STRING"}}
    prompt["2"]["inputs"]["name"] = "missing.txt"
    error = only_error(validate_prompt(registry, prompt), "2")
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == "name - Invalid image file: missing.txt"


def test_validate_inputs_that_raises(registry):
    class Raises:
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {})}}

        @classmethod
        def VALIDATE_INPUTS(cls, **kwargs):
            raise KeyError("nope")

        def f(self, x):
            return {}

    registry.register("Raises", Raises)
    error = only_error(validate_prompt(registry, {"1": {"class_type": "Raises", "inputs": {"x": 1}}}), "1")
    assert error["type"] == "exception_during_validation" and "KeyError" in error["details"]


@pytest.mark.parametrize("prompt, members", [
    ({"1": {"class_type": "Add", "inputs": {"a": link(2), "b": 1}},
      "2": {"class_type": "Add", "inputs": {"a": link(1), "b": 1}},
      "3": {"class_type": "Show", "inputs": {"value": link(2)}}}, {"1", "2"}),
    ({"1": {"class_type": "Add", "inputs": {"a": link(1), "b": 1}},
      "3": {"class_type": "Show", "inputs": {"value": link(1)}}}, {"1"}),
])
def test_cycles_are_errors(registry, prompt, members):
    v = validate_prompt(registry, prompt)
    assert not v.ok and v.error["type"] == "dependency_cycle"
    assert {n for n, e in v.node_errors.items() if e["errors"][0]["type"] == "dependency_cycle"} == members
    assert v.node_errors[min(members)]["dependent_outputs"] == ["3"]


def test_cycle_elsewhere_does_not_block_a_valid_output(registry):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": link(2), "b": 1}},
              "2": {"class_type": "Add", "inputs": {"a": link(1), "b": 1}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}},
              "4": {"class_type": "Show", "inputs": {"value": 1}}}
    v = validate_prompt(registry, prompt)
    assert v.ok and v.outputs == ["4"] and set(v.node_errors) == {"1", "2"}


def long_chain(n):
    prompt = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 0}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": link(i - 1), "b": 1, "operation": "add"}}
    prompt[str(n - 1)] = {"class_type": "PreviewAny", "inputs": {"source": link(n - 2)}}
    return prompt


def test_10k_chain_validates_and_runs_without_recursion(registry, executor):
    import sys
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # anything recursive over the chain would fail now
    try:
        prompt = long_chain(10_000)
        v = validate_prompt(registry, prompt)
        assert v.ok and len(v.order) == 10_000
        result = executor.run(prompt)
    finally:
        sys.setrecursionlimit(old)
    assert result.status == "success" and result.outputs["9999"] == {"text": ["9998"]}


def test_long_cycle_is_found_without_recursion(registry):
    prompt = long_chain(5000)
    prompt["0"] = {"class_type": "IntMath", "inputs": {"a": link(4998), "b": 1, "operation": "add"}}
    v = validate_prompt(registry, prompt)
    assert v.error["type"] == "dependency_cycle" and len(v.node_errors) == 4999


def test_partial_targets(registry):
    prompt = {"1": {"class_type": "Show", "inputs": {"value": 1}},
              "2": {"class_type": "Show", "inputs": {"value": 2}}}
    assert validate_prompt(registry, prompt, partial_targets=["2"]).outputs == ["2"]
    assert validate_prompt(registry, prompt, partial_targets=[1]).outputs == ["1"]


def test_any_type_that_equals_everything_does_not_coerce_constants(registry):
    class Everything(str):
        def __eq__(self, other):
            return True

        def __ne__(self, other):
            return False

        __hash__ = str.__hash__

    class Passthrough:
        RETURN_TYPES = (Everything("*"),)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"anything": (Everything("*"), {})}}

        def f(self, anything):
            return (anything,)

    registry.register("Passthrough", Passthrough)
    prompt = {"1": {"class_type": "Passthrough", "inputs": {"anything": "not a number"}},
              "2": {"class_type": "Add", "inputs": {"a": link(1), "b": 1}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}}}
    v = validate_prompt(registry, prompt)
    assert v.ok, v.node_errors
    assert v.nodes["1"].inputs["anything"] == "not a number"


def test_validate_inputs_returning_false_names_the_inputs_only(registry):
    """ComfyUI appends " - <reason>" only for a reason; a bare False gives just the input name."""
    class Refuses:
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {})}}

        @classmethod
        def VALIDATE_INPUTS(cls, x):
            return False

        def f(self, x):
            return {}

    registry.register("Refuses", Refuses)
    error = only_error(validate_prompt(registry, {"1": {"class_type": "Refuses", "inputs": {"x": 1}}}), "1")
    assert error["type"] == "custom_validation_failed" and error["details"] == "x"
    assert error["extra_info"]["input_name"] == "x"


def test_async_validate_inputs_is_awaited_even_inside_a_running_loop(registry):
    """ComfyUI awaits an async VALIDATE_INPUTS; the server validates on its event loop's thread."""
    import asyncio

    class AsyncChecked:
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {})}}

        @classmethod
        async def VALIDATE_INPUTS(cls, x):
            await asyncio.sleep(0)
            return True if x > 0 else "x must be positive"

        def f(self, x):
            return {}

    registry.register("AsyncChecked", AsyncChecked)

    def check(x):
        return validate_prompt(registry, {"1": {"class_type": "AsyncChecked", "inputs": {"x": x}}})

    assert check(1).ok
    assert only_error(check(-1), "1")["details"] == "x - x must be positive"

    async def on_a_loop():
        return check(1).ok, check(-1).ok

    assert asyncio.run(on_a_loop()) == (True, False)


def test_validate_inputs_with_kwargs_sees_undeclared_links_as_none(registry):
    """ComfyUI hands a **kwargs VALIDATE_INPUTS every link (None before anything runs), also those
    under names INPUT_TYPES does not declare; undeclared constants are dropped."""
    seen = {}

    class Dynamic:
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {})}}

        @classmethod
        def VALIDATE_INPUTS(cls, **kwargs):
            seen.update(kwargs)
            return True

        def f(self, x, **more):
            return {}

    registry.register("Dynamic", Dynamic)
    v = validate_prompt(registry, {"1": {"class_type": "Number", "inputs": {"value": 1}},
                                   "2": {"class_type": "Dynamic", "inputs": {"x": 2, "in_1": link(1), "junk": 3}}})
    assert v.ok and seen == {"x": 2, "in_1": None}


def test_validate_inputs_owns_the_range_and_list_checks_of_the_inputs_it_takes(registry):
    """ComfyUI: an input VALIDATE_INPUTS names (all of them with **kwargs) is not range- or
    list-checked by the engine; the others still are. Type conversion applies to all."""
    class Named:
        RETURN_TYPES = ("FLOAT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"a": ("FLOAT", {"min": 0.0, "max": 1.0}),
                                 "b": ("FLOAT", {"min": 0.0, "max": 1.0}),
                                 "pick": (["x", "y"],)}}

        @classmethod
        def VALIDATE_INPUTS(cls, a, pick):
            return a != 7.0 or "no sevens"

        def f(self, a, b, pick):
            return (a,)

    class Everything(Named):
        @classmethod
        def VALIDATE_INPUTS(cls, **kwargs):
            return True

    registry.register("Named", Named)
    registry.register("Everything", Everything)

    def check(class_type, **inputs):
        prompt = {"1": {"class_type": class_type, "inputs": {"a": 0.5, "b": 0.5, "pick": "x", **inputs}},
                  "2": {"class_type": "Show", "inputs": {"value": link(1)}}}
        return validate_prompt(registry, prompt)

    assert check("Named", a=5.0, pick="z").ok
    assert check("Named", a="0.25").nodes["1"].inputs["a"] == 0.25
    assert only_error(check("Named", b=5.0), "1")["type"] == "value_bigger_than_max"
    failed = only_error(check("Named", a=7.0), "1")
    assert failed["type"] == "custom_validation_failed" and "no sevens" in failed["details"]
    assert check("Everything", a=5.0, b=-3.0, pick="z").ok
    assert only_error(check("Everything", a="many"), "1")["type"] == "invalid_input_type"


def test_input_types_wrapped_as_args_is_called_without_arguments(registry):
    """Packs wrap INPUT_TYPES in decorators taking *args; ComfyUI calls it with none."""
    class Wrapped:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        def f(self, x):
            return (x,)

    def input_types(*args, **kwargs):
        assert args == () and kwargs == {}
        return {"required": {"x": ("INT", {"max": 3})}}

    Wrapped.INPUT_TYPES = staticmethod(input_types)
    registry.register("Wrapped", Wrapped)
    prompt = {"1": {"class_type": "Wrapped", "inputs": {"x": 9}},
              "2": {"class_type": "Show", "inputs": {"value": link(1)}}}
    assert only_error(validate_prompt(registry, prompt), "1")["type"] == "value_bigger_than_max"
    assert registry.object_info("Wrapped")["Wrapped"]["input"]["required"]["x"] == ["INT", {"max": 3}]
