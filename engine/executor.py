"""Running a validated prompt: only what the outputs need, each node once, results cached.

The walk is an explicit stack (no recursion) from the output nodes upstream; a node whose key
is in the result cache stops the walk, so an unchanged workflow executes nothing. Events carry
the fields of ComfyUI's websocket messages.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .cache import CachedResult, CacheLimits, ResultCache, fingerprint, node_key
from .context import NodeContext, enter_context, leave_context
from .expansion import (DependencyCycleError, DynamicPrompt, Expansion, ExpansionError, dependency_order,
                        new_nodes, resolve, result_links)
from .folders import Folders
from .interrupt import Interrupted, InterruptFlag
from .nodecall import (ExecutionBlocked, ExecutionBlocker, call_over_lists, collect_results,
                       gather_inputs, lazy_requests, merge_ui, pending_lazy)
from .resources import ResourceCache, default_budget
from .validation import Link, Node, Validation, validate_prompt

log = logging.getLogger(__name__)

OnEvent = Callable[[str, dict], None]
STATUS_EVENTS = ("execution_start", "execution_cached", "execution_error", "execution_interrupted",
                 "execution_success")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class RunResult:
    prompt_id: str
    status: str = "success"                 # success | error | interrupted
    outputs: dict[str, dict] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: dict | None = None
    messages: list[tuple[str, dict]] = field(default_factory=list)
    validation: Validation | None = None    # set; `.ok` False means the prompt was invalid

    @property
    def invalid(self) -> bool:
        return self.validation is not None and not self.validation.ok

    def to_json(self) -> dict:
        """The `vidgraph run --json` line for this prompt."""
        return {"prompt_id": self.prompt_id, "status": self.status, "outputs": self.outputs,
                "executed": self.executed, "cached": self.cached, "error": self.error}


class _PromptRun:
    """State of one prompt while it runs (nodes added by expansions included)."""

    def __init__(self, executor: "Executor", validation: Validation, prompt: dict, prompt_id: str,
                 extra_data: dict, on_event: OnEvent | None, flag: InterruptFlag):
        self.executor = executor
        self.v = validation
        self.prompt = prompt
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self.on_event = on_event
        self.flag = flag
        self.result = RunResult(prompt_id, validation=validation)
        self.nodes: dict[str, Node] = validation.nodes
        self.specs = validation.specs
        self.defs = validation.input_defs
        self.results: dict[str, CachedResult] = {}
        self.keys: dict[str, bytes] = {}
        self.current: str | None = None
        self.expansions: dict[str, Expansion] = {}
        self._dynprompt: DynamicPrompt | None = None
        self._owned: tuple[int, set[int]] = (-1, set())

    @property
    def dynprompt(self) -> DynamicPrompt:
        if self._dynprompt is None:
            self._dynprompt = DynamicPrompt(self.prompt)
        return self._dynprompt

    def emit(self, event: str, data: dict) -> None:
        if event in STATUS_EVENTS:
            self.result.messages.append((event, data))
        if self.on_event is not None:
            try:
                self.on_event(event, data)
            except Exception:  # a broken subscriber must not break the prompt
                log.exception("event subscriber failed on %s", event)

    def spec_defs(self, class_type: str):
        """The spec and input definitions of a class (read once per prompt)."""
        spec = self.specs.get(class_type)
        if spec is None:
            spec = self.specs[class_type] = self.executor.registry.get(class_type)
            self.defs[class_type] = spec.input_defs()
        return spec, self.defs[class_type]

    def compute_keys(self, order: list[str]) -> None:
        """Keys in dependency order, so each one digests its producers' finished keys."""
        per_class: dict[str, tuple] = {}
        for node_id in order:
            node = self.nodes[node_id]
            known = per_class.get(node.class_type)
            if known is None:
                spec, defs = self.spec_defs(node.class_type)
                per_node = spec.not_idempotent or any(
                    d.section == "hidden" and d.type == "UNIQUE_ID" for d in defs.values())
                known = per_class[node.class_type] = (spec, defs, per_node)
            spec, defs, per_node = known
            changed = (fingerprint(spec, node, defs, self.context(node_id, node.class_type),
                                   self.executor.run_coroutine) if spec.is_changed is not None else None)
            self.keys[node_id] = node_key(spec, node, self.keys, changed, per_node)

    def run(self) -> RunResult:
        cache = self.executor.cache
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": now_ms()})
        self.compute_keys(self.v.order)
        self.result.cached = [n for n in self.v.order if self.keys[n] in cache]
        self.emit("execution_cached", {"nodes": list(self.result.cached), "prompt_id": self.prompt_id,
                                       "timestamp": now_ms()})
        try:
            self.walk()
        except Interrupted:
            self.result.status = "interrupted"
            self.flag.clear()
            node = self.nodes.get(self.current) if self.current else None
            self.emit("execution_interrupted", {
                "prompt_id": self.prompt_id, "node_id": self.current,
                "node_type": node.class_type if node else None,
                "executed": list(self.result.executed), "timestamp": now_ms()})
        except _NodeFailed as failure:
            self.result.status = "error"
            self.result.error = failure.data
            self.emit("execution_error", failure.data)
        else:
            self.emit("execution_success", {"prompt_id": self.prompt_id, "timestamp": now_ms()})
        return self.result

    def walk(self) -> None:
        """Depth first from each output; the stack is the path of nodes waiting on the one above,
        so a node met again on it is a cycle (only expansions can make one at this point)."""
        requested: dict[str, list[str]] = {}
        for root in self.v.outputs:
            if root in self.results:
                continue
            stack, on_path = [root], {root}
            while stack:
                node_id = stack[-1]
                needed = self.step(node_id, requested)
                if needed is None:
                    stack.pop()
                    on_path.discard(node_id)
                elif needed == node_id:
                    continue
                elif needed in on_path:
                    raise _NodeFailed(self.cycle_error(stack[stack.index(needed):]))
                else:
                    stack.append(needed)
                    on_path.add(needed)

    def step(self, node_id: str, requested: dict[str, list[str]]) -> str | None:
        """Advance one node: None when its result is ready, else the node to compute first (the
        node itself when it asked for lazy inputs or expanded: look at it again)."""
        if node_id in self.results:
            return None
        expansion = self.expansions.get(node_id)
        if expansion is not None:
            waiting = next((n for n in expansion.waits_for if n not in self.results), None)
            if waiting is None:
                self.finish_expansion(node_id, expansion)
            return waiting
        cached = self.executor.cache.get(self.keys[node_id])
        if cached is not None:
            self.results[node_id] = cached
            self.report_ui(node_id, cached.ui)
            return None
        node = self.nodes[node_id]
        defs = self.defs[node.class_type]
        wanted = requested.get(node_id, ())
        for name, v in node.inputs.items():
            if type(v) is Link and v.node_id not in self.results:
                d = defs.get(name)
                if d is None or not d.lazy or name in wanted:
                    return v.node_id
        if self.request_lazy(node_id, requested):
            return node_id
        self.execute(node_id)
        return None if node_id in self.results else node_id

    def request_lazy(self, node_id: str, requested: dict[str, list[str]]) -> bool:
        node = self.nodes[node_id]
        spec = self.specs[node.class_type]
        if not spec.has_lazy_check:
            return False
        defs = self.defs[node.class_type]
        pending = pending_lazy(node, defs, self.results)
        if not pending:
            return False
        self.current = node_id
        inputs: dict = {}
        try:
            inputs = gather_inputs(node, defs, self.results, self.hidden_for(node_id, node.class_type))
            check = self.executor.instance(node_id, spec).check_lazy_status
            wanted = lazy_requests(self.call(node_id, spec, check, inputs), pending)
        except Interrupted:
            raise
        except Exception as e:
            raise _NodeFailed(self.error_data(node_id, e, inputs)) from e
        if not wanted:
            return False
        requested.setdefault(node_id, []).extend(wanted)
        return True

    def hidden_for(self, node_id: str, class_type: str) -> Callable[[str], Any]:
        def hidden(kind: str):
            if kind == "UNIQUE_ID":
                return node_id
            if kind == "PROMPT":
                return self.prompt
            if kind == "DYNPROMPT":
                return self.dynprompt
            if kind == "EXTRA_PNGINFO":
                return self.extra_data.get("extra_pnginfo")
            if kind == "NODE_CONTEXT":
                return self.context(node_id, class_type)
            return self.extra_data.get(kind.lower())
        return hidden

    def context(self, node_id: str, class_type: str) -> NodeContext:
        ex = self.executor
        return NodeContext(self.prompt_id, node_id, class_type, ex.folders, ex.resources, ex.settings,
                           self.flag, self.emit)

    def display_of(self, node_id: str) -> str:
        return node_id if self._dynprompt is None else self._dynprompt.get_display_node_id(node_id)

    def execute(self, node_id: str) -> None:
        node = self.nodes[node_id]
        spec = self.specs[node.class_type]
        defs = self.defs[node.class_type]
        self.current = node_id
        self.flag.check()
        self.emit("executing", {"node": node_id, "display_node": self.display_of(node_id),
                                "prompt_id": self.prompt_id})
        inputs: dict = {}
        try:
            inputs = gather_inputs(node, defs, self.results, self.hidden_for(node_id, node.class_type))
            returned = self.call(node_id, spec, getattr(self.executor.instance(node_id, spec), spec.function),
                                 inputs)
            for blocked in returned:
                if type(blocked) is ExecutionBlocker and blocked.message:
                    raise ExecutionBlocked(f"Execution Blocked: {blocked.message}")
            if _expands(returned):
                self.expand(node_id, returned)
                self.result.executed.append(node_id)
                return
            outputs, ui = collect_results(spec, returned)
        except (Interrupted, _NodeFailed):
            raise
        except Exception as e:
            raise _NodeFailed(self.error_data(node_id, e, inputs)) from e
        self.result.executed.append(node_id)
        self.store(node_id, CachedResult(outputs, ui))

    def store(self, node_id: str, entry: CachedResult) -> None:
        self.results[node_id] = entry
        self.executor.cache.put(self.keys[node_id], entry, skip_ids=self.models_ids())
        self.report_ui(node_id, entry.ui)

    def expand(self, node_id: str, returned: list) -> None:
        """Splice in the subgraphs this node's calls returned; it finishes when they have run."""
        calls, uis, graph = [], [], {}
        for answer in returned:
            if type(answer) is dict and answer.get("expand") is not None:
                sub = answer["expand"]
                if isinstance(sub, dict):
                    clash = next((k for k in sub if k in graph), None)
                    if clash is not None:
                        raise ExpansionError(f"Attempt to add duplicate node {clash}.", "DuplicateNodeError")
                    graph.update(sub)
                calls.append((True, tuple(answer.get("result") or ())))
                if answer.get("ui") is not None:
                    uis.append(answer["ui"])
            else:
                calls.append((False, answer))
        added = new_nodes(graph, self.dynprompt, node_id, self.nodes, self.executor.registry.classes)
        order = dependency_order(added)
        if self.nodes is self.v.nodes:   # the validated prompt stays as it was submitted
            self.nodes = dict(self.nodes)
        self.nodes.update(added)
        self.compute_keys(order)
        waits = [n for expanded, answer in calls if expanded for n in result_links(answer)]
        waits += [n for n in order if self.specs[added[n].class_type].output_node]
        self.expansions[node_id] = Expansion(calls, uis, waits)

    def finish_expansion(self, node_id: str, expansion: Expansion) -> None:
        spec = self.specs[self.nodes[node_id].class_type]
        try:
            outputs = resolve(spec, expansion.calls, self.results, collect_results)
        except Exception as e:
            raise _NodeFailed(self.error_data(node_id, e, {})) from e
        del self.expansions[node_id]
        self.store(node_id, CachedResult(outputs, merge_ui(expansion.ui)))

    def cycle_error(self, members: list[str]) -> dict:
        """ComfyUI blames the first node of the cycle that an expansion made, shown as its display node."""
        blamed = next((self.display_of(n) for n in members if self.display_of(n) != n), members[0])
        return self.error_data(blamed, DependencyCycleError(members), {})

    def call(self, node_id: str, spec, method: Callable, inputs: dict) -> list:
        """`method` of the node over its input lists, in the node's context (for the compatibility
        modules), checking for an interrupt before each call; expansions get ids under the node's."""
        token = enter_context(self.context(node_id, spec.name))
        try:
            return call_over_lists(spec, method, inputs, self.flag.check, self.executor.run_coroutine)
        finally:
            leave_context(token)

    def models_ids(self) -> set[int]:
        """ids of objects the model cache owns (not counted again in the result cache)."""
        resources = self.executor.resources
        if self._owned[0] != resources.generation:
            self._owned = (resources.generation, resources.owned_ids())
        return self._owned[1]

    def report_ui(self, node_id: str, ui: dict | None) -> None:
        if ui is None:
            return
        self.result.outputs[node_id] = ui
        self.emit("executed", {"node": node_id, "display_node": self.display_of(node_id), "output": ui,
                               "prompt_id": self.prompt_id})

    def error_data(self, node_id: str, exc: BaseException, inputs: dict) -> dict:
        """ComfyUI's execution_error fields; a node an expansion made is reported as its submitted node."""
        shown = node_id if self._dynprompt is None else self._dynprompt.get_real_node_id(node_id)
        hidden = {name for name, d in self.defs[self.nodes[node_id].class_type].items() if d.section == "hidden"}
        return {
            "prompt_id": self.prompt_id, "node_id": shown, "node_type": self.nodes[shown].class_type,
            "executed": list(self.result.executed),
            "exception_message": str(exc) or type(exc).__name__,
            "exception_type": _type_name(exc),
            "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__),
            "current_inputs": {name: [_shown(v) for v in values] for name, values in inputs.items()
                               if name not in hidden},
            "current_outputs": list(self.results),
            "timestamp": now_ms(),
        }


def _expands(returned: list) -> bool:
    for answer in returned:
        if type(answer) is dict and answer.get("expand") is not None:
            return True
    return False


class _NodeFailed(Exception):
    def __init__(self, data: dict):
        super().__init__(data["exception_message"])
        self.data = data


def _type_name(exc: BaseException) -> str:
    if isinstance(exc, ExecutionBlocked):
        return "ExecutionBlocked"  # ComfyUI's literal name for it
    if isinstance(exc, ExpansionError):
        return exc.exception_type
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _shown(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


@contextlib.contextmanager
def _fewer_gc_passes(first_generation: int = 50_000):
    """Collect young objects less often while a prompt runs.

    A big graph allocates many small objects; with torch loaded, the default threshold (700)
    triggers collections that scan every live object and cost ~40% of a 10,000-node run.
    Reference counting still frees everything acyclic at once; the threshold comes back after.
    """
    previous = gc.get_threshold()
    gc.set_threshold(max(first_generation, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


class Executor:
    def __init__(self, registry, folders: Folders | None = None, settings: Mapping[str, Any] | None = None,
                 cache: CacheLimits | None = None, resources: ResourceCache | None = None):
        self.registry = registry
        self.folders = folders if folders is not None else registry.folders
        self.settings = dict(settings or {})
        self.cache = ResultCache(cache)
        self.resources = resources if resources is not None else ResourceCache(default_budget())
        self._flag = InterruptFlag()
        self._running_flag: InterruptFlag | None = None
        self._instances: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, prompt: dict, prompt_id: str | None = None, client_id: str | None = None,
            extra_data: dict | None = None, partial_targets=None, on_event: OnEvent | None = None,
            interrupt: InterruptFlag | None = None) -> RunResult:
        prompt_id = prompt_id or str(uuid.uuid4())
        extra_data = dict(extra_data or {})
        if client_id is not None:
            extra_data.setdefault("client_id", client_id)
        flag = interrupt if interrupt is not None else self._flag
        with self._lock, _fewer_gc_passes():
            validation = validate_prompt(self.registry, prompt, partial_targets)
            if not validation.ok:
                return RunResult(prompt_id, status="error", error=validation.to_json(), validation=validation)
            if interrupt is None:
                flag.clear()  # an earlier interrupt() with nothing running is dropped, as in ComfyUI
            self._running_flag = flag
            try:
                result = _PromptRun(self, validation, prompt, prompt_id, extra_data, on_event, flag).run()
            finally:
                self._running_flag = None
            self._keep_instances(validation)
        return result

    def interrupt(self) -> None:
        """Stop the running prompt at its next node boundary or progress point."""
        (self._running_flag or self._flag).set()

    def free(self, unload_models: bool = False, free_memory: bool = False) -> None:
        """Drop cached results (free_memory) and loaded models (unload_models); both when neither."""
        if not unload_models and not free_memory:
            unload_models = free_memory = True
        if free_memory:
            self.cache.clear()
            self._instances.clear()
        if unload_models or free_memory:
            self.resources.release()

    def instance(self, node_id: str, spec) -> Any:
        """Node objects persist across prompts per (node id, class), as in ComfyUI."""
        key = (node_id, spec.name)
        obj = self._instances.get(key)
        if obj is None:
            obj = self._instances[key] = spec.cls()
        return obj

    def _keep_instances(self, validation: Validation) -> None:
        wanted = {(n.id, n.class_type) for n in validation.nodes.values()}
        for key in [k for k in self._instances if k not in wanted]:
            del self._instances[key]

    def run_coroutine(self, coroutine) -> Any:
        """Async FUNCTIONs run to completion on the executor's own event loop."""
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coroutine)
