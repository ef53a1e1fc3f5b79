"""Node expansion: a node answering {"result", "expand"} grows the running prompt (ComfyUI's model)."""
from __future__ import annotations

import pytest

from vidgraph.engine.graph_builder import GraphBuilder, add_graph_prefix, is_link
from vidgraph.engine.nodecall import ExecutionBlocker

from int_node import IntNode


def link(node_id, output=0):
    return [str(node_id), output]


class AddThree(IntNode):
    """Expands into Number -> Add(+3): its output is the Add's."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, value, unique_id):
        g = GraphBuilder()
        three = g.node("Number", value=3)
        total = g.node("Add", a=value, b=three.out(0))
        return {"result": (total.out(0),), "expand": g.finalize()}


class PlusThree(IntNode):
    def run(self, value):
        g = GraphBuilder()
        return {"result": (g.node("Add", a=value, b=3).out(0),), "expand": g.finalize()}


class Repeat(IntNode):
    """A loop: adds 1 `times` times by expanding into Add -> Repeat(times - 1)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {}), "times": ("INT", {"min": 0})}}

    def run(self, value, times):
        if times == 0:
            return (value,)
        g = GraphBuilder()
        step = g.node("Add", a=value, b=1)
        again = g.node("Repeat", value=step.out(0), times=times - 1)
        return {"result": (again.out(0),), "expand": g.finalize()}


class Nested(IntNode):
    """Expands into an AddThree, which expands again."""

    def run(self, value):
        g = GraphBuilder()
        inner = g.node("AddThree", value=value)
        return {"result": (inner.out(0),), "expand": g.finalize()}


class Mixed(IntNode):
    """Per list element: a literal answer, or an expansion (list semantics through expansions)."""
    RETURN_TYPES = ("INT", "STRING")

    def run(self, value):
        if value % 2 == 0:
            return (value * 10, "literal")
        g = GraphBuilder()
        total = g.node("Add", a=value, b=100)
        return {"result": (total.out(0), "expanded"), "expand": g.finalize()}


class Cyclic(IntNode):
    def run(self, value):
        g = GraphBuilder()
        first = g.node("Add", a=value)
        second = g.node("Add", a=first.out(0))
        first.set_input("b", second.out(0))
        return {"result": (second.out(0),), "expand": g.finalize()}


class Duplicate(IntNode):
    def run(self, value):
        graph = {"1": {"class_type": "Number", "inputs": {"value": value}}}   # "1" is a submitted id
        return {"result": (["1", 0],), "expand": graph}


class BlockInside(IntNode):
    """Expands into a node that answers an ExecutionBlocker (silent: its consumers are skipped)."""

    def run(self, value):
        g = GraphBuilder()
        blocked = g.node("Blocker", value=value)
        return {"result": (blocked.out(0),), "expand": g.finalize()}


class Blocker(IntNode):
    def run(self, value):
        return (ExecutionBlocker(None),)


class ShowInside(IntNode):
    """Expands into an output node (it runs and reports its ui) and passes the value on."""

    def run(self, value):
        g = GraphBuilder()
        g.node("Show", value=value)
        return {"result": (value,), "expand": g.finalize()}


class RawLink(IntNode):
    """A rawLink input gets the link itself; its producer still runs first. A hidden input of a
    type the executor does not fill takes the prompt's value, and is absent when not given."""
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": ("INT", {"rawLink": True})},
                "hidden": {"extra": ("*",), "dynprompt": "DYNPROMPT", "unique_id": "UNIQUE_ID"}}

    def run(self, source, dynprompt, unique_id, **kwargs):
        producer = dynprompt.get_node(source[0])["class_type"]
        return (f"{source}|{producer}|{kwargs.get('extra', 'absent')}",)


NODES = {"AddThree": AddThree, "PlusThree": PlusThree, "Repeat": Repeat, "Nested": Nested, "Mixed": Mixed, "Cyclic": Cyclic,
         "Duplicate": Duplicate, "BlockInside": BlockInside, "Blocker": Blocker, "ShowInside": ShowInside,
         "RawLink": RawLink}


@pytest.fixture
def expanding(registry, executor):
    assert registry.register_pack("expansion-tests", NODES), registry.load_errors
    return executor


def run_to_show(executor, node, **kw):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 4}},
              "2": {"class_type": node, "inputs": {"value": link(1), **kw}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}}}
    return executor.run(prompt), prompt


def test_expansion_runs_the_subgraph_and_takes_the_outputs_from_its_links(expanding, calls):
    result, _ = run_to_show(expanding, "AddThree")
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"text": ["7"]}
    # the subgraph's nodes are named under the expanding node and call: "<id>.<call>.<graph>.<n>"
    assert {"2.0.0.1", "2.0.0.2"} <= set(result.executed)
    assert ("Number", "2.0.0.1") in calls.log   # UNIQUE_ID of a subgraph node is its own id


def test_an_unchanged_rerun_takes_the_expanding_node_and_its_subgraph_from_the_cache(expanding, calls):
    _, prompt = run_to_show(expanding, "AddThree")
    calls.log.clear()
    again = expanding.run(prompt)
    assert again.executed == [] and calls.log == []
    assert again.outputs["3"] == {"text": ["7"]}


def test_expanding_nodes_are_cached_by_the_same_key_rules(expanding, calls):
    """Keys digest class and inputs, not ids: another node with the same inputs is served from
    the cache with its resolved outputs (a node taking its UNIQUE_ID would not be shared)."""
    run_to_show(expanding, "PlusThree")
    calls.log.clear()
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 4}},
              "9": {"class_type": "PlusThree", "inputs": {"value": link(1)}},
              "3": {"class_type": "Show", "inputs": {"value": link(9)}}}
    result = expanding.run(prompt)
    assert result.outputs["3"] == {"text": ["7"]}
    assert calls.log == [] and result.executed == []


def test_a_loop_built_from_expansions(expanding):
    result, _ = run_to_show(expanding, "Repeat", times=5)
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"text": ["9"]}
    assert len(set(result.executed)) == len(result.executed)   # every id unique


def test_expansion_inside_expansion(expanding):
    result, _ = run_to_show(expanding, "Nested")
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"text": ["7"]}
    assert any(n.startswith("2.0.0.1.0.0.") for n in result.executed)


def test_lists_through_expansions_keep_their_order(expanding):
    prompt = {"1": {"class_type": "MakeList", "inputs": {"count": 4}},
              "2": {"class_type": "Mixed", "inputs": {"value": link(1)}},
              "3": {"class_type": "Show", "inputs": {"value": link(2, 0)}},
              "4": {"class_type": "Show", "inputs": {"value": link(2, 1)}}}
    result = expanding.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"text": ["0", "101", "20", "103"]}
    assert result.outputs["4"] == {"text": ["'literal'", "'expanded'"] * 2}
    # each call's subgraph has its own ids
    assert {"2.1.0.1", "2.3.0.1"} <= set(result.executed)


def test_a_cycle_made_by_an_expansion_is_reported_on_the_expanding_node(expanding):
    result, _ = run_to_show(expanding, "Cyclic")
    assert result.status == "error"
    assert result.error["node_id"] == "2"
    assert result.error["exception_type"] == "graph.DependencyCycleError"


def test_expanded_ids_that_clash_with_the_prompt_are_refused(expanding):
    result, _ = run_to_show(expanding, "Duplicate")
    assert result.status == "error" and result.error["node_id"] == "2"
    assert "duplicate node 1" in result.error["exception_message"]


def test_an_execution_blocker_inside_an_expansion_blocks_the_consumers(expanding, calls):
    result, _ = run_to_show(expanding, "BlockInside")
    assert result.status == "success", result.error
    assert "3" not in result.outputs and "Show" not in calls.names()


def test_output_nodes_in_a_subgraph_run_and_report(expanding):
    result, _ = run_to_show(expanding, "ShowInside")
    assert result.status == "success", result.error
    assert result.outputs["2.0.0.1"] == {"text": ["4"]} and result.outputs["3"] == {"text": ["4"]}


def test_raw_link_and_hidden_inputs(expanding):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 4}},
              "2": {"class_type": "RawLink", "inputs": {"source": link(1)}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}},
              "4": {"class_type": "RawLink", "inputs": {"source": link(1), "extra": 5}},
              "5": {"class_type": "Show", "inputs": {"value": link(4)}}}
    result = expanding.run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"text": ["\"['1', 0]|Number|absent\""]}
    assert result.outputs["5"] == {"text": ["\"['1', 0]|Number|5\""]}
    assert "1" in result.executed


def test_graph_builder_api():
    GraphBuilder.set_default_prefix("7", 2)
    g = GraphBuilder()
    assert g.prefix == "7.2.0." and GraphBuilder().prefix == "7.2.1."
    a = g.node("Number", value=1)
    b = g.node("Add", id="sum", a=a.out(0), b=2)
    assert g.lookup_node("sum") is b and g.node("Add", id="sum") is b
    b.set_input("b", None)
    assert "b" not in b.inputs
    b.set_override_display_id("3")
    g.replace_node_output("1", 0, 5)
    assert g.finalize() == {"7.2.0.1": {"class_type": "Number", "inputs": {"value": 1}},
                            "7.2.0.sum": {"class_type": "Add", "inputs": {"a": 5},
                                          "override_display_id": "3"}}
    assert is_link(["x", 0]) and not is_link(["x", "0"]) and not is_link(("x", 0))
    graph, outputs = add_graph_prefix({"1": {"class_type": "Add", "inputs": {"a": ["2", 0]}}},
                                      (["1", 0], 4), "p.")
    assert graph == {"p.1": {"class_type": "Add", "inputs": {"a": ["p.2", 0]}}} and outputs == (["p.1", 0], 4)
