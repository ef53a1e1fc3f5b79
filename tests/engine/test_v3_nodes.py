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


@pytest.fixture
def v3(folders, tmp_path):
    pack = tmp_path / "packs"
    pack.mkdir()
    (pack / "v3_pack.py").write_text(V3_PACK)
    registry = NodeRegistry(folders)
    registry.load_module_pack("vidgraph.nodes.core")
    registry.load_custom_node_dirs([pack])
    assert not registry.load_errors, registry.load_errors
    return registry


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
