import asyncio
import math
import threading

import pytest

from vidgraph.engine.cache import CacheLimits
from vidgraph.engine.context import current_context
from vidgraph.engine.executor import Executor
from vidgraph.engine.interrupt import InterruptFlag
from vidgraph.engine.nodecall import ExecutionBlocker


def link(node_id, output=0):
    return [str(node_id), output]


def diamond():
    """1 -> 2 -> 4 -> 5(show);  1 -> 3 -> 4;  6(show) alone."""
    return {"1": {"class_type": "Number", "inputs": {"value": 1}},
            "2": {"class_type": "Add", "inputs": {"a": link(1), "b": 10}},
            "3": {"class_type": "Add", "inputs": {"a": link(1), "b": 20}},
            "4": {"class_type": "Add", "inputs": {"a": link(2), "b": link(3)}},
            "5": {"class_type": "Show", "inputs": {"value": link(4)}},
            "7": {"class_type": "Number", "inputs": {"value": 99}},   # needed by nothing
            "6": {"class_type": "Show", "inputs": {"value": "alone"}}}


def test_runs_needed_nodes_once_in_dependency_order(executor, calls):
    result = executor.run(diamond())
    assert result.status == "success" and result.error is None
    assert result.outputs == {"5": {"text": ["32"]}, "6": {"text": ["'alone'"]}}
    assert sorted(result.executed) == ["1", "2", "3", "4", "5", "6"]  # never 7
    order = result.executed
    assert order.index("1") < order.index("2") < order.index("4") < order.index("5")
    assert order.index("3") < order.index("4")
    assert calls.names().count("Number") == 1


def test_unchanged_rerun_executes_nothing_but_reports_cached_ui(executor, calls):
    executor.run(diamond())
    calls.log.clear()
    events = []
    result = executor.run(diamond(), on_event=lambda e, d: events.append((e, d)))
    assert result.executed == [] and calls.log == []
    assert sorted(result.cached) == ["1", "2", "3", "4", "5", "6"]
    assert result.outputs["5"] == {"text": ["32"]}
    executed = [d for e, d in events if e == "executed"]
    assert {d["node"] for d in executed} == {"5", "6"} and executed[0]["output"]["text"]
    cached = next(d for e, d in events if e == "execution_cached")
    assert sorted(cached["nodes"]) == sorted(result.cached)


def test_one_widget_change_reruns_only_that_node_and_descendants(executor):
    executor.run(diamond())
    prompt = diamond()
    prompt["3"]["inputs"]["b"] = 21
    result = executor.run(prompt)
    assert sorted(result.executed) == ["3", "4", "5"]
    assert result.outputs["5"] == {"text": ["33"]}
    # and the old variant is still cached: switching back executes nothing
    assert executor.run(diamond()).executed == []


def test_identical_subgraphs_share_results_across_node_ids(executor, calls):
    executor.run({"1": {"class_type": "Add", "inputs": {"a": 2, "b": 3}},
                  "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    calls.log.clear()
    result = executor.run({"9": {"class_type": "Add", "inputs": {"b": 3, "a": 2}},
                           "8": {"class_type": "Show", "inputs": {"value": link(9)}}})
    assert result.executed == [] and calls.log == []


def test_unique_id_hidden_input_makes_the_key_per_node(executor, calls):
    executor.run({"1": {"class_type": "Number", "inputs": {"value": 1}},
                  "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    result = executor.run({"3": {"class_type": "Number", "inputs": {"value": 1}},
                           "2": {"class_type": "Show", "inputs": {"value": link(3)}}})
    assert result.executed == ["3", "2"]
    assert ("Number", "3") in calls.log  # UNIQUE_ID hidden input delivered


def test_is_changed_nan_always_reruns(executor, calls):
    prompt = {"1": {"class_type": "Volatile", "inputs": {"value": 4}},
              "2": {"class_type": "Show", "inputs": {"value": link(1)}}}
    executor.run(prompt)
    result = executor.run(prompt)
    assert result.executed == ["1", "2"]
    assert calls.names().count("Volatile") == 2


def test_is_changed_value_and_exception(registry, executor, calls):
    state = {"stamp": 1}

    class FileLike:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"path": ("STRING", {}), "src": ("INT", {})}}

        @classmethod
        def IS_CHANGED(cls, path, src):
            assert src is None  # linked inputs arrive as None
            if state["stamp"] < 0:
                raise OSError("gone")
            return state["stamp"]

        def f(self, path, src):
            calls.add("FileLike")
            return (src,)

    registry.register("FileLike", FileLike)
    prompt = {"0": {"class_type": "Number", "inputs": {"value": 1}},
              "1": {"class_type": "FileLike", "inputs": {"path": "a", "src": link(0)}},
              "2": {"class_type": "Show", "inputs": {"value": link(1)}}}
    executor.run(prompt)
    assert executor.run(prompt).executed == []
    state["stamp"] = 2
    assert executor.run(prompt).executed == ["1", "2"]
    state["stamp"] = -1  # raising counts as NaN: always re-run
    assert executor.run(prompt).executed == ["1", "2"]
    assert executor.run(prompt).executed == ["1", "2"]


def test_cache_is_bounded_by_entries_lru(registry):
    executor = Executor(registry, cache=CacheLimits(max_entries=3, max_bytes=None))
    for v in range(5):
        executor.run({"1": {"class_type": "Add", "inputs": {"a": v, "b": 0}},
                      "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    assert len(executor.cache) == 3
    # the oldest results were dropped, the newest kept
    assert executor.run({"1": {"class_type": "Add", "inputs": {"a": 4, "b": 0}},
                         "2": {"class_type": "Show", "inputs": {"value": link(1)}}}).executed == []
    assert executor.run({"1": {"class_type": "Add", "inputs": {"a": 0, "b": 0}},
                         "2": {"class_type": "Show", "inputs": {"value": link(1)}}}).executed == ["1", "2"]


def test_cache_is_bounded_by_bytes(registry, tensor_like):
    Blob = tensor_like  # the cache sizes it through element_size() * numel()

    class MakeBlob:
        RETURN_TYPES = ("BLOB",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"n": ("INT", {})}}

        def f(self, n):
            return (Blob(n),)

    class Consume:  # always re-runs, so it always needs the blob (cached or not)
        OUTPUT_NODE = True
        RETURN_TYPES = ()
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"blob": ("BLOB", {})}}

        @classmethod
        def IS_CHANGED(cls, blob):
            return math.nan

        def f(self, blob):
            return {}

    registry.register("MakeBlob", MakeBlob)
    registry.register("Consume", Consume)
    executor = Executor(registry, cache=CacheLimits(max_entries=1000, max_bytes=1000))

    def run(n):
        return executor.run({"1": {"class_type": "MakeBlob", "inputs": {"n": n}},
                             "2": {"class_type": "Consume", "inputs": {"blob": link(1)}}}).executed

    assert run(100) == ["1", "2"] and run(100) == ["2"]  # 400 bytes, cached
    run(50)                                                # +200 bytes
    assert run(1000) == ["1", "2"] and run(1000) == ["1", "2"]  # 4000 bytes: never stored
    assert executor.cache.total_bytes == 600
    run(200)                                               # 800 bytes: the oldest (400) goes
    assert executor.cache.total_bytes == 1000
    assert run(50) == ["2"]                                # still cached
    assert run(100) == ["1", "2"]                          # evicted, so computed again


def test_list_semantics(executor, calls):
    prompt = {"1": {"class_type": "MakeList", "inputs": {"count": 3}},
              "2": {"class_type": "Add", "inputs": {"a": link(1), "b": 10}},       # mapped 3 times
              "3": {"class_type": "SumList", "inputs": {"values": link(2)}},       # INPUT_IS_LIST: once
              "4": {"class_type": "Show", "inputs": {"value": link(3)}},
              "5": {"class_type": "Show", "inputs": {"value": link(2)}}}           # ui merged
    result = executor.run(prompt)
    assert calls.names().count("Add") == 3 and ("SumList", [10, 11, 12]) in calls.log
    assert result.outputs["4"] == {"text": ["33"]}
    assert result.outputs["5"] == {"text": ["10", "11", "12"]}


def test_shorter_lists_repeat_their_last_element(executor, calls):
    prompt = {"1": {"class_type": "MakeList", "inputs": {"count": 3}},
              "2": {"class_type": "MakeList", "inputs": {"count": 2}},
              "3": {"class_type": "Add", "inputs": {"a": link(1), "b": link(2)}},
              "4": {"class_type": "Show", "inputs": {"value": link(3)}}}
    assert executor.run(prompt).outputs["4"] == {"text": ["0", "2", "3"]}


def test_lazy_switch_never_runs_the_unneeded_branch(executor, calls):
    prompt = {"1": {"class_type": "Boom", "inputs": {"value": 1}},
              "2": {"class_type": "Number", "inputs": {"value": 5}},
              "3": {"class_type": "Switch", "inputs": {"condition": False, "on_true": link(1),
                                                       "on_false": link(2)}},
              "4": {"class_type": "Show", "inputs": {"value": link(3)}}}
    result = executor.run(prompt)
    assert result.status == "success", result.error
    assert "Boom" not in calls.names() and result.outputs["4"] == {"text": ["5"]}
    assert "1" not in result.executed


def test_node_error_reports_fields_and_keeps_cached_results(executor, calls):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 3}},
              "2": {"class_type": "Boom", "inputs": {"value": link(1)}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}},
              "4": {"class_type": "Show", "inputs": {"value": "independent"}}}
    events = []
    result = executor.run(prompt, prompt_id="p1", on_event=lambda e, d: events.append((e, d)))
    assert result.status == "error"
    error = result.error
    assert error["prompt_id"] == "p1" and error["node_id"] == "2" and error["node_type"] == "Boom"
    assert error["exception_type"] == "RuntimeError" and error["exception_message"] == "boom on 3"
    assert any("boom on" in line for line in error["traceback"])
    assert error["current_inputs"] == {"value": ["3"]}
    assert "1" in error["executed"] and "1" in error["current_outputs"]
    assert set(error) >= {"timestamp"}
    assert events[-1] == ("execution_error", error)
    assert ("execution_error", error) in result.messages
    assert result.to_json()["error"] == error
    calls.log.clear()
    prompt["2"] = {"class_type": "Add", "inputs": {"a": link(1), "b": 1}}
    again = executor.run(prompt)
    assert again.status == "success" and "1" in again.cached and "Number" not in calls.names()


def test_bad_return_value_is_a_clear_node_error(registry, executor):
    class Wrong:
        RETURN_TYPES = ("INT", "INT")
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {}

        def f(self):
            return (1,)

    registry.register("Wrong", Wrong)
    result = executor.run({"1": {"class_type": "Wrong", "inputs": {}},
                           "2": {"class_type": "Show", "inputs": {"value": link(1, 1)}}})
    assert result.error["node_id"] == "1"
    assert "returned 1 outputs; RETURN_TYPES declares 2" in result.error["exception_message"]


def test_interrupt_from_another_thread_stops_a_long_node(registry, executor):
    Slow = registry.classes["Slow"]
    Slow.started.clear()
    flag = InterruptFlag()
    prompt = {"1": {"class_type": "Slow", "inputs": {"steps": 2000}},
              "2": {"class_type": "Add", "inputs": {"a": link(1), "b": 1}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}}}
    events = []
    threading.Thread(target=lambda: Slow.started.wait(10) and flag.set(), daemon=True).start()
    result = executor.run(prompt, on_event=lambda e, d: events.append((e, d)), interrupt=flag)
    assert result.status == "interrupted" and result.executed == []
    progress = [d for e, d in events if e == "progress"]
    assert 1 <= len(progress) < 2000 and progress[0]["node"] == "1" and progress[0]["max"] == 2000
    name, data = events[-1]
    assert name == "execution_interrupted" and data["node_id"] == "1" and data["node_type"] == "Slow"
    assert not flag.is_set()  # cleared once seen, so the next prompt runs
    assert executor.run({"1": {"class_type": "Show", "inputs": {"value": 1}}}).status == "success"


def test_executor_interrupt_between_nodes(registry, executor, calls):
    class Stopper:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"v": ("INT", {})}}

        def f(self, v):
            executor.interrupt()  # e.g. the server's /interrupt arriving mid-node
            return (v,)

    registry.register("Stopper", Stopper)
    result = executor.run({"1": {"class_type": "Stopper", "inputs": {"v": 1}},
                           "2": {"class_type": "Add", "inputs": {"a": link(1), "b": 1}},
                           "3": {"class_type": "Show", "inputs": {"value": link(2)}}})
    assert result.status == "interrupted" and result.executed == ["1"] and "Add" not in calls.names()


def test_events_order_and_fields(executor):
    events = []
    executor.run(diamond(), prompt_id="pid", client_id="c1", on_event=lambda e, d: events.append((e, d)))
    names = [e for e, _ in events]
    assert names[0] == "execution_start" and names[1] == "execution_cached"
    assert names[-1] == "execution_success"
    assert set(events[0][1]) == {"prompt_id", "timestamp"}
    executing = [d for e, d in events if e == "executing"]
    assert all(set(d) == {"node", "display_node", "prompt_id"} for d in executing)
    shown = [d for e, d in events if e == "executed"]
    assert all(set(d) == {"node", "display_node", "output", "prompt_id"} for d in shown)
    for d in shown:  # `executed` comes after that node's `executing`
        assert names.index("executed") > [x["node"] for x in executing].index(d["node"])
    assert all(d["prompt_id"] == "pid" for _, d in events)


def test_hidden_prompt_extra_pnginfo_and_context(registry, executor, tmp_path):
    seen = {}

    class Hidden:
        RETURN_TYPES = ()
        OUTPUT_NODE = True
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}, "hidden": {"prompt": "PROMPT", "info": "EXTRA_PNGINFO",
                                               "uid": "UNIQUE_ID", "ctx": ["NODE_CONTEXT"]}}

        def f(self, prompt, info, uid, ctx):
            seen.update(prompt=prompt, info=info, uid=uid, ctx=ctx)
            ctx.send("custom_event", {"hello": uid})
            return {"ui": {"done": [True]}, "result": ()}

    registry.register("Hidden", Hidden)
    prompt = {"h": {"class_type": "Hidden", "inputs": {}}}
    events = []
    result = executor.run(prompt, prompt_id="p", extra_data={"extra_pnginfo": {"workflow": {"x": 1}}},
                          on_event=lambda e, d: events.append((e, d)))
    assert result.outputs == {"h": {"done": [True]}}
    assert seen["prompt"] == prompt and seen["info"] == {"workflow": {"x": 1}} and seen["uid"] == "h"
    ctx = seen["ctx"]
    assert (ctx.prompt_id, ctx.node_id, ctx.class_type) == ("p", "h", "Hidden")
    assert ctx.folders is executor.folders and ctx.resources is executor.resources
    assert ("custom_event", {"hello": "h"}) in events


def test_partial_execution_targets(executor):
    result = executor.run(diamond(), partial_targets=["6"])
    assert result.executed == ["6"] and list(result.outputs) == ["6"]


def test_invalid_prompt_gives_400_shape_in_result(executor):
    result = executor.run({"1": {"class_type": "Show", "inputs": {}}})
    assert result.status == "error" and result.invalid
    assert result.error["error"]["type"] == "prompt_outputs_failed_validation"
    assert result.error["node_errors"]["1"]["errors"][0]["type"] == "required_input_missing"
    assert set(result.to_json()) == {"prompt_id", "status", "outputs", "executed", "cached", "error"}


def test_async_function_runs_to_completion(registry, executor):
    class Later:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"v": ("INT", {})}}

        async def f(self, v):
            await asyncio.sleep(0)
            return (v * 2,)

    registry.register("Later", Later)
    result = executor.run({"1": {"class_type": "Later", "inputs": {"v": 21}},
                           "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    assert result.outputs["2"] == {"text": ["42"]}


def test_execution_blocker(registry, executor, calls):
    class Gate:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"v": ("INT", {}), "message": ("STRING", {})}}

        def f(self, v, message):
            return (ExecutionBlocker(message or None),)

    registry.register("Gate", Gate)
    quiet = executor.run({"1": {"class_type": "Gate", "inputs": {"v": 1, "message": ""}},
                          "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    assert quiet.status == "success" and "Show" not in calls.names() and quiet.outputs == {}
    loud = executor.run({"1": {"class_type": "Gate", "inputs": {"v": 1, "message": "no input image"}},
                         "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    assert loud.status == "error" and loud.error["node_id"] == "2"
    assert loud.error["exception_type"] == "ExecutionBlocked"
    assert loud.error["exception_message"] == "Execution Blocked: no input image"


def test_free_clears_results_and_releases_models(executor):
    released = []
    executor.resources.add_release_hook(lambda k, v: released.append(k))
    executor.resources.get_or_load("model", lambda: object())
    executor.run(diamond())
    executor.free(free_memory=True)
    assert len(executor.cache) == 0 and released == ["model"]
    assert sorted(executor.run(diamond()).executed) == ["1", "2", "3", "4", "5", "6"]


def test_node_instances_persist_between_prompts(registry, executor):
    class Counter:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"v": ("INT", {})}}

        @classmethod
        def IS_CHANGED(cls, v):
            return math.nan

        def f(self, v):
            self.n = getattr(self, "n", 0) + 1
            return (self.n,)

    registry.register("Counter", Counter)
    prompt = {"1": {"class_type": "Counter", "inputs": {"v": 0}},
              "2": {"class_type": "Show", "inputs": {"value": link(1)}}}
    executor.run(prompt)
    assert executor.run(prompt).outputs["2"] == {"text": ["2"]}


def test_subscriber_errors_do_not_break_the_prompt(executor):
    def broken(event, data):
        raise ValueError("subscriber bug")

    assert executor.run(diamond(), on_event=broken).status == "success"


@pytest.mark.parametrize("prompt_id", [None, "given"])
def test_prompt_id(executor, prompt_id):
    result = executor.run({"1": {"class_type": "Show", "inputs": {"value": 1}}}, prompt_id=prompt_id)
    assert result.prompt_id == (prompt_id or result.prompt_id) and len(result.prompt_id) > 0


def test_context_reaches_input_types_validate_inputs_and_is_changed(registry, executor, folders):
    seen = {}

    class FileNode:
        RETURN_TYPES = ("STRING",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):  # called with no argument, as ComfyUI does: the folders come in the context
            seen["input_types"] = current_context().folders
            return {"required": {"name": ("STRING", {})}, "hidden": {"context": "NODE_CONTEXT"}}

        @classmethod
        def VALIDATE_INPUTS(cls, name, context=None):
            seen["validate"] = context
            return True

        @classmethod
        def IS_CHANGED(cls, name, context=None):
            seen["changed"] = context
            return name

        def f(self, name, context):
            return (name,)

    registry.register("FileNode", FileNode)
    result = executor.run({"1": {"class_type": "FileNode", "inputs": {"name": "a.png"}},
                           "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    assert result.status == "success", result.error
    assert seen["input_types"] is folders
    assert seen["validate"].folders is folders and seen["validate"].node_id == "1"
    assert seen["changed"].folders is folders and seen["changed"].class_type == "FileNode"


def test_a_caller_flag_set_before_the_run_stops_it_at_once(executor, calls):
    flag = InterruptFlag()
    flag.set()  # e.g. a job cancelled between being dequeued and starting
    result = executor.run(diamond(), interrupt=flag)
    assert result.status == "interrupted" and result.executed == [] and calls.log == []
    executor.interrupt()  # the executor's own flag, with nothing running: dropped at the next run
    assert executor.run(diamond()).status == "success"


def test_runs_the_valid_output_when_another_is_behind_a_cycle_or_an_error(executor):
    prompt = {"1": {"class_type": "Add", "inputs": {"a": link(2), "b": 1}},
              "2": {"class_type": "Add", "inputs": {"a": link(1), "b": 1}},
              "3": {"class_type": "Add", "inputs": {"a": link(2), "b": 1}},
              "4": {"class_type": "Show", "inputs": {"value": link(3)}},
              "5": {"class_type": "Number", "inputs": {"value": 1000}},
              "6": {"class_type": "Show", "inputs": {"value": link(5)}},
              "7": {"class_type": "Show", "inputs": {"value": "fine"}}}
    result = executor.run(prompt)
    assert result.status == "success" and result.executed == ["7"]
    assert set(result.validation.node_errors) == {"1", "2", "5"}


def test_keys_are_fixed_size_digests_computed_once_per_node(registry, executor, monkeypatch):
    from vidgraph.engine import cache, executor as executor_module

    made = []
    real = cache.node_key

    def counting(spec, node, upstream, changed, per_node):
        key = real(spec, node, upstream, changed, per_node)
        made.append(key)
        return key

    monkeypatch.setattr(executor_module, "node_key", counting)
    prompt = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 0}}}
    for i in range(1, 3000):
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "b": 1, "operation": "add"}}
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["2999", 0]}}
    executor.run(prompt)
    # one key per node, each 16 bytes however deep the node sits: linear in the graph size
    assert len(made) == 3001 and {len(k) for k in made} == {16} and len(set(made)) == 3001


def test_undeclared_linked_inputs_reach_the_node_as_keyword_arguments(registry, executor, calls):
    """ComfyUI passes links not named in INPUT_TYPES on as kwargs (packs with dynamic inputs rely on
    it); undeclared constants are dropped. A change upstream of such a link re-runs the node."""
    class Variadic:
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"a": ("INT", {"default": 0})}}

        def run(self, a, **more):
            calls.add("Variadic", dict(more))
            if 13 in more.values():
                raise ValueError("unlucky")
            return (a + sum(more.values()),)

    registry.register("Variadic", Variadic)
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 5}},
              "2": {"class_type": "Variadic", "inputs": {"a": 1, "input_2": link(1), "junk": 7}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}}}
    result = executor.run(prompt)
    assert result.status == "success", result.error
    assert ("Variadic", {"input_2": 5}) in calls.log and result.outputs["3"] == {"text": ["6"]}
    prompt["1"]["inputs"]["value"] = 6
    again = executor.run(prompt)
    assert again.executed == ["1", "2", "3"] and again.outputs["3"] == {"text": ["7"]}
    prompt["1"]["inputs"]["value"] = 13
    failed = executor.run(prompt)
    assert failed.status == "error" and failed.error["exception_message"] == "unlucky"
    assert failed.error["current_inputs"] == {"a": ["1"], "input_2": ["13"]}


def test_output_is_list_shorter_than_return_types_means_the_rest_are_not_lists(registry, executor):
    class Split:
        RETURN_TYPES = ("INT", "INT")
        OUTPUT_IS_LIST = (True,)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {}

        def f(self):
            return ([1, 2, 3], 40)

    registry.register("Split", Split)
    result = executor.run({"1": {"class_type": "Split", "inputs": {}},
                           "2": {"class_type": "Add", "inputs": {"a": link(1, 0), "b": link(1, 1)}},
                           "3": {"class_type": "Show", "inputs": {"value": link(2)}}})
    assert result.status == "success", result.error
    assert result.outputs["3"] == {"text": ["41", "42", "43"]}
    assert registry.get("Split").info()["output_is_list"] == [True, False]


def test_an_output_node_may_return_only_ui_while_declaring_outputs(registry, executor):
    """ComfyUI accepts {"ui": ...} without "result" from a node with RETURN_TYPES (preview nodes
    in packs do this); only a consumer of the missing outputs fails, naming the producer."""
    class PreviewPassthrough:
        OUTPUT_NODE = True
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"v": ("INT", {})}}

        def f(self, v):
            return {"ui": {"text": [str(v)]}}

    registry.register("PreviewPassthrough", PreviewPassthrough)
    alone = executor.run({"1": {"class_type": "PreviewPassthrough", "inputs": {"v": 4}}})
    assert alone.status == "success", alone.error
    assert alone.outputs == {"1": {"text": ["4"]}}
    consumed = executor.run({"1": {"class_type": "PreviewPassthrough", "inputs": {"v": 5}},
                             "2": {"class_type": "Show", "inputs": {"value": link(1)}}})
    assert consumed.status == "error" and consumed.error["node_id"] == "2"
    assert "PreviewPassthrough" in consumed.error["exception_message"]
    assert "'result'" in consumed.error["exception_message"]


def test_async_is_changed_is_awaited(registry, executor, calls):
    """ComfyUI awaits an async IS_CHANGED; its value, not a coroutine object, goes into the key."""
    state = {"stamp": 1}

    class AsyncStamp:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"v": ("INT", {})}}

        @classmethod
        async def IS_CHANGED(cls, v):
            return state["stamp"]

        def f(self, v):
            calls.add("AsyncStamp")
            return (v,)

    registry.register("AsyncStamp", AsyncStamp)
    prompt = {"1": {"class_type": "AsyncStamp", "inputs": {"v": 1}},
              "2": {"class_type": "Show", "inputs": {"value": link(1)}}}
    assert executor.run(prompt).executed == ["1", "2"]
    assert executor.run(prompt).executed == []
    state["stamp"] = 2
    assert executor.run(prompt).executed == ["1", "2"]


def test_check_lazy_status_runs_in_the_nodes_context_and_reports_its_inputs(registry, executor, calls):
    """As ComfyUI does, the lazy check runs inside the node's context (so comfy.* compatibility
    calls find it), and an error there reports the inputs it was given."""
    from vidgraph.engine.context import current_context

    class PickyLazy:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"mode": ("INT", {}), "value": ("INT", {"lazy": True})}}

        def check_lazy_status(self, mode, value=None):
            ctx = current_context()
            calls.add("check", ctx.node_id if ctx else None)
            if mode < 0:
                raise ValueError("bad mode")
            return ["value"]

        def f(self, mode, value=None):
            return (value,)

    registry.register("PickyLazy", PickyLazy)
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 3}},
              "2": {"class_type": "PickyLazy", "inputs": {"mode": 1, "value": link(1)}},
              "3": {"class_type": "Show", "inputs": {"value": link(2)}}}
    assert executor.run(prompt).outputs["3"] == {"text": ["3"]}
    assert ("check", "2") in calls.log
    prompt["2"]["inputs"]["mode"] = -1
    failed = executor.run(prompt)
    assert failed.status == "error" and failed.error["node_id"] == "2"
    assert failed.error["current_inputs"] == {"mode": ["-1"], "value": ["None"]}
