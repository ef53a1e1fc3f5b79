"""Shared fixtures: a registry holding the core nodes plus small instrumented test nodes."""
from __future__ import annotations

import math
import threading

import pytest

from vidgraph.engine.executor import Executor
from vidgraph.engine.folders import Folders
from vidgraph.engine.registry import NodeRegistry

from int_node import IntNode


class Calls:
    """Which test nodes ran, in order (reset per test)."""

    def __init__(self):
        self.log: list[tuple[str, object]] = []
        self.lock = threading.Lock()

    def add(self, name, value=None):
        with self.lock:
            self.log.append((name, value))

    def names(self):
        return [n for n, _ in self.log]


CALLS = Calls()


class Number:
    """INT source that records each execution."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -100, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, value, unique_id):
        CALLS.add("Number", unique_id)
        return (value,)


class Add:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0})}}

    def run(self, a, b):
        CALLS.add("Add", (a, b))
        return (a + b,)


class Show:
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {})}}

    def run(self, value):
        CALLS.add("Show", value)
        return {"ui": {"text": [repr(value)]}}


class Volatile(IntNode):
    """IS_CHANGED NaN: always re-runs."""

    @classmethod
    def IS_CHANGED(cls, value):
        return math.nan

    def run(self, value):
        CALLS.add("Volatile", value)
        return (value,)


class Boom(IntNode):
    def run(self, value):
        CALLS.add("Boom", value)
        raise RuntimeError(f"boom on {value}")


class Slow:
    """Reports progress through the context and stops when interrupted."""
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    started = threading.Event()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 1000})}, "hidden": {"context": "NODE_CONTEXT"}}

    def run(self, steps, context):
        for i in range(steps):
            context.progress(i + 1, steps)
            Slow.started.set()
            threading.Event().wait(0.005)
        return (steps,)


class MakeList:
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3})}}

    def run(self, count):
        return (list(range(count)),)


class SumList:
    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {})}}

    def run(self, values):
        CALLS.add("SumList", list(values))
        return (sum(values),)


class TensorLike:
    """Sized like a tensor (element_size() * numel()) without importing torch."""

    def __init__(self, n):
        self.n = n

    def element_size(self):
        return 4

    def numel(self):
        return self.n


@pytest.fixture
def tensor_like():
    return TensorLike


TEST_NODES = {"Number": Number, "Add": Add, "Show": Show, "Volatile": Volatile, "Boom": Boom,
              "Slow": Slow, "MakeList": MakeList, "SumList": SumList}


@pytest.fixture
def calls():
    CALLS.log.clear()
    return CALLS


@pytest.fixture
def folders(tmp_path):
    return Folders(base_dir=tmp_path)


@pytest.fixture
def registry(folders):
    reg = NodeRegistry(folders)
    assert reg.load_module_pack("vidgraph.nodes.core"), reg.load_errors
    assert reg.register_pack("tests", TEST_NODES), reg.load_errors
    return reg


@pytest.fixture
def executor(registry, folders):
    return Executor(registry, folders)
