"""`comfy_execution.*`, `comfy_api.*` and `execution`: the executor's API as ComfyUI packs see it."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..context import current_context
from .module import compat_module
from ..expansion import DependencyCycleError, DynamicPrompt, ExpansionError
from ..graph_builder import GraphBuilder, GraphNode, add_graph_prefix, is_link
from ..nodecall import ExecutionBlocker
from .v3_io import io_module, ui_module




class NodeInputError(Exception):
    pass


class NodeNotFoundError(Exception):
    pass


@dataclass
class ExecutionContext:
    """comfy_execution.utils.ExecutionContext: which prompt and node are running."""
    prompt_id: str
    node_id: str
    list_index: int | None = None


def get_executing_context() -> ExecutionContext | None:
    ctx = current_context()
    if ctx is None or not ctx.node_id:
        return None
    return ExecutionContext(ctx.prompt_id, ctx.node_id)


def graph_modules(root: Path) -> dict[str, ModuleType]:
    package = compat_module("comfy_execution", root, package=True)
    graph = compat_module("comfy_execution.graph", root)
    graph.ExecutionBlocker = ExecutionBlocker
    graph.DynamicPrompt = DynamicPrompt
    graph.DependencyCycleError = DependencyCycleError
    graph.NodeInputError = NodeInputError
    graph.NodeNotFoundError = NodeNotFoundError
    graph.ExpansionError = ExpansionError
    utils = compat_module("comfy_execution.graph_utils", root)
    utils.GraphBuilder = GraphBuilder
    utils.Node = GraphNode
    utils.is_link = is_link
    utils.add_graph_prefix = add_graph_prefix
    utils.ExecutionBlocker = ExecutionBlocker
    execution_utils = compat_module("comfy_execution.utils", root)
    execution_utils.ExecutionContext = ExecutionContext
    execution_utils.get_executing_context = get_executing_context
    return {"comfy_execution": package, "comfy_execution.graph": graph,
            "comfy_execution.graph_utils": utils, "comfy_execution.utils": execution_utils}


# -- comfy_api ---------------------------------------------------------------------------------

def _report_progress(value: float, max_value: float, node_id: str | None = None, preview_image=None,
                     ignore_size_limit: bool = False) -> None:
    ctx = current_context()
    if ctx is None:
        if node_id is None:
            raise ValueError("node_id must be provided if not in executing context")
        return  # outside any prompt there is nobody to tell
    ctx.progress(value, max_value)


class _Execution:
    async def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                           preview_image=None, ignore_size_limit: bool = False) -> None:
        """Report the running node's progress (value of max_value), as ComfyUI's API does."""
        _report_progress(value, max_value, node_id, preview_image, ignore_size_limit)


class _ExecutionSync:
    def set_progress(self, value: float, max_value: float, node_id: str | None = None,
                     preview_image=None, ignore_size_limit: bool = False) -> None:
        _report_progress(value, max_value, node_id, preview_image, ignore_size_limit)


class ComfyAPI:
    """comfy_api's async entry point: `api.execution.set_progress(...)`."""

    def __init__(self):
        self.execution = _Execution()


class ComfyAPISync:
    def __init__(self):
        self.execution = _ExecutionSync()


class ComfyExtension:
    """A V3 pack's extension object (returned by `comfy_entrypoint()`)."""

    async def on_load(self) -> None:
        return None

    async def get_node_list(self) -> list[type]:
        return []


API_VERSIONS = ("v0_0_1", "v0_0_2", "latest")


def api_modules(root: Path) -> dict[str, ModuleType]:
    modules = {"comfy_api": compat_module("comfy_api", root, package=True)}
    for version in API_VERSIONS:
        name = f"comfy_api.{version}"
        module = modules[name] = compat_module(name, root, package=True)
        module.ComfyAPI = ComfyAPI
        module.ComfyAPISync = ComfyAPISync
        module.ComfyExtension = ComfyExtension
        module.io = modules[f"{name}.io"] = io_module(root, f"{name}.io")
        module.ui = modules[f"{name}.ui"] = ui_module(root, f"{name}.ui")
    return modules


def execution_module(root: Path) -> ModuleType:
    """`execution`: what packs import from ComfyUI's executor module by name."""
    module = compat_module("execution", root)
    module.ExecutionBlocker = ExecutionBlocker
    module.DynamicPrompt = DynamicPrompt
    module.get_executing_context = get_executing_context

    class ExecutionResult:
        SUCCESS = 0
        FAILURE = 1
        PENDING = 2

    module.ExecutionResult = ExecutionResult
    module.IsChangedCache = type("IsChangedCache", (), {})
    module.asyncio = asyncio
    return module
