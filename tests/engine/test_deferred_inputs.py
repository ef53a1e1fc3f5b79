"""Deferred values (frames kept in a file, ...) reach only the inputs that declare "stream": True;
every other input, declared or not, gets the value materialised."""
from vidgraph.engine.executor import Executor
from vidgraph.engine.registry import NodeRegistry


class Deferred:
    """Stands for a clip kept in a file: counts how often it was turned into the plain value."""
    materialized = 0

    def vidgraph_materialize(self):
        Deferred.materialized += 1
        return ["frame"] * 3


SEEN = {}


class MakeDeferred:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return (Deferred(),)


class Consumer:
    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"streamed": ("IMAGE", {"stream": True}), "plain": ("IMAGE",)}}

    def run(self, streamed, plain, **undeclared):
        SEEN.update(streamed=streamed, plain=plain, **undeclared)
        return {"ui": {"text": ["ok"]}}


def test_only_stream_inputs_get_the_deferred_value(tmp_path):
    from vidgraph.engine.folders import Folders
    folders = Folders(base_dir=tmp_path)
    registry = NodeRegistry(folders)
    assert registry.register_pack("tests", {"MakeDeferred": MakeDeferred, "Consumer": Consumer})
    prompt = {"1": {"class_type": "MakeDeferred", "inputs": {}},
              "2": {"class_type": "Consumer", "inputs": {"streamed": ["1", 0], "plain": ["1", 0],
                                                          "extra": ["1", 0]}}}
    Deferred.materialized = 0
    result = Executor(registry, folders).run(prompt)
    assert result.status == "success", result.error
    assert isinstance(SEEN["streamed"], Deferred)
    assert SEEN["plain"] == ["frame"] * 3 and SEEN["extra"] == ["frame"] * 3
    assert Deferred.materialized == 2
