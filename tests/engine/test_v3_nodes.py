"""V3 nodes (comfy_api.latest.io): schema-declared classes load, describe themselves and run as V1."""
import textwrap

import pytest

from vidgraph.engine.executor import Executor
from vidgraph.engine.registry import NodeRegistry

V3_PACK = '''
from comfy_api.latest import ComfyExtension, io, ui


class Repeat(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Repeat", display_name="Repeat (V3)", category="v3",
                         inputs=[io.String.Input("text", default="ab"),
                                 io.Int.Input("times", default=2, min=1, max=5),
                                 io.Combo.Input("sep", options=["-", "+"]),
                                 io.String.Input("suffix", optional=True)],
                         outputs=[io.String.Output(display_name="joined"), io.Int.Output("length")],
                         hidden=[io.Hidden.unique_id], is_output_node=True)

    @classmethod
    def validate_inputs(cls, times):
        return times != 4 or "no fours"

    @classmethod
    async def execute(cls, text, times, sep, suffix=""):
        joined = sep.join([text] * times) + suffix + "@" + cls.hidden.unique_id
        return io.NodeOutput(joined, len(joined), ui=ui.PreviewText(joined))


class Blocked(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="V3Blocked", inputs=[io.AnyType.Input("value")], outputs=[io.AnyType.Output()])

    @classmethod
    def execute(cls, value):
        return io.NodeOutput(block_execution="stopped by V3")


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [Repeat, Blocked]


async def comfy_entrypoint():
    return Extension()
'''


def registry_with(folders, pack_dir, name: str, source: str) -> NodeRegistry:
    pack_dir.mkdir()
    (pack_dir / f"{name}.py").write_text(source)
    registry = NodeRegistry(folders)
    registry.load_module_pack("vidgraph.nodes.core")
    registry.load_custom_node_dirs([pack_dir])
    assert not registry.load_errors, registry.load_errors
    return registry


@pytest.fixture
def v3(folders, tmp_path):
    return registry_with(folders, tmp_path / "packs", "v3_pack", V3_PACK)


def test_a_v3_pack_loads_through_its_entrypoint_and_describes_its_nodes(v3):
    info = v3.object_info("V3Repeat")["V3Repeat"]
    assert info["display_name"] == "Repeat (V3)" and info["category"] == "v3" and info["output_node"]
    assert info["input"]["required"]["times"] == ["INT", {"default": 2, "min": 1, "max": 5}]
    assert info["input"]["required"]["sep"] == [["-", "+"]]
    assert info["input"]["optional"]["suffix"] == ["STRING"]
    assert info["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert info["output"] == ["STRING", "INT"] and info["output_name"] == ["joined", "length"]


def test_a_v3_node_validates_runs_and_blocks_like_a_v1_node(v3):
    def prompt(times):
        return {"1": {"class_type": "V3Repeat", "inputs": {"text": "ab", "times": times, "sep": "-"}},
                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}},
                "3": {"class_type": "V3Blocked", "inputs": {"value": ["1", 0]}},
                "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}

    executor = Executor(v3)
    result = executor.run(prompt(3))
    assert result.status == "error" and "stopped by V3" in result.error["exception_message"]
    del_blocked = {k: v for k, v in prompt(3).items() if k in ("1", "2")}
    result = executor.run(del_blocked)
    assert result.status == "success", result.error
    assert result.outputs["1"] == {"text": ["ab-ab-ab@1"]} and result.outputs["2"]["text"] == ["10"]
    refused = executor.run(prompt(4))
    assert refused.invalid and "no fours" in str(refused.error)
    # validate_inputs names `times`, so it owns that input's range (ComfyUI's rule); `sep` is still checked
    assert executor.run({"1": {"class_type": "V3Repeat", "inputs": {"text": "ab", "times": 9, "sep": "-"}}}).status == "success"
    assert executor.run({"1": {"class_type": "V3Repeat", "inputs": {"text": "ab", "times": 2, "sep": "*"}}}).invalid


DYNAMIC_PACK = '''
from comfy_api.latest import io


class Dynamic(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        numbers = io.MatchType.Template("numbers", [io.Int, io.Float])
        grow = io.Autogrow.TemplateNames(input=io.MultiType.Input("var", [io.Int, io.Float], optional=True),
                                         names=["a", "b", "c"], min=2)
        return io.Schema(node_id="V3Dynamic", category="v3", is_output_node=True, accept_all_inputs=True,
                         inputs=[io.MatchType.Input("value", numbers),
                                 io.Autogrow.Input("terms", template=grow),
                                 io.DynamicCombo.Input("op", options=[
                                     io.DynamicCombo.Option("scale", [io.Float.Input("factor", default=2.0, max=10.0)]),
                                     io.DynamicCombo.Option("shift", [io.Float.Input("factor", default=1.0, min=-5.0),
                                                                      io.Int.Input("times", default=1)])])],
                         outputs=[io.MatchType.Output(numbers, display_name="result")])

    @classmethod
    def execute(cls, value, terms, op, **rest):
        total = value + sum(terms.values())
        if op["op"] == "scale":
            total = total * op["factor"]
        else:
            total = total + op["factor"] * op["times"]
        return io.NodeOutput(total, ui={"text": [repr((sorted(terms), op, sorted(rest)))]})


NODE_CLASS_MAPPINGS = {"V3Dynamic": Dynamic}
'''


def test_dynamic_v3_inputs_declare_flat_v1_inputs_and_nest_for_execute(folders, tmp_path):
    registry = registry_with(folders, tmp_path / "dynamic", "dynamic_pack", DYNAMIC_PACK)
    info = registry.object_info("V3Dynamic")["V3Dynamic"]
    required, optional = info["input"]["required"], info["input"]["optional"]
    assert required["value"] == ["INT,FLOAT"] and info["output"] == ["INT,FLOAT"]
    assert required["terms.a"] == required["terms.b"] == ["INT,FLOAT"] and optional["terms.c"] == ["INT,FLOAT"]
    assert required["op"] == [["scale", "shift"]]
    assert optional["op.factor"] == ["FLOAT", {"default": 2.0}]   # the widest range: each bound unset in one option
    assert optional["op.times"] == ["INT", {"default": 1}]

    executor = Executor(registry)
    scaled = executor.run({"1": {"class_type": "V3Dynamic", "inputs": {
        "value": 1, "terms.a": 2, "terms.b": 3, "op": "scale", "extra": "kept"}}})
    assert scaled.status == "success", scaled.error
    assert scaled.outputs["1"]["text"] == [repr((["a", "b"], {"op": "scale", "factor": 2.0}, ["extra"]))]
    shifted = executor.run({"1": {"class_type": "V3Dynamic", "inputs": {
        "value": 1, "terms.a": 2, "terms.b": 3, "terms.c": 4, "op": "shift", "op.factor": -1.5, "op.times": 2}}})
    assert shifted.status == "success", shifted.error
    assert shifted.outputs["1"]["text"] == [repr((["a", "b", "c"], {"op": "shift", "factor": -1.5, "times": 2}, []))]
    assert executor.run({"1": {"class_type": "V3Dynamic", "inputs": {"value": 1, "terms.a": 2, "op": "scale"}}}).invalid
