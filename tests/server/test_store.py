"""The SQLite store and the worker, without HTTP: idempotency, crash recovery, history order."""
import asyncio
import json
import sqlite3

import pytest

from vidgraph.server.store import PromptIdConflict, Store, body_hash
from vidgraph.server.worker import Worker

PROMPT = {"1": {"class_type": "TestStamp", "inputs": {"tag": "a"}}}


def submit(store, prompt_id, prompt=PROMPT, **kw):
    return store.submit(prompt_id, prompt, {"client_id": "c"}, ["1"], None, "c", **kw)


def test_submit_is_idempotent_per_body_and_numbers_increase(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    assert submit(store, "a") == (1, True)
    assert submit(store, "a") == (1, False)
    with pytest.raises(PromptIdConflict):
        submit(store, "a", {"1": {"class_type": "Other", "inputs": {}}})
    assert submit(store, "b") == (2, True)
    assert submit(store, "c", front=True) == (-3, True)
    assert submit(store, "d", number=0.5) == (0.5, True)
    running, pending = store.queue()
    assert running == [] and [item[1] for item in pending] == ["c", "d", "a", "b"]
    store.close()
    reopened = Store(tmp_path / "q.sqlite3")
    assert submit(reopened, "e") == (4, True)  # the counter continues after a restart
    assert reopened.submit("s", PROMPT, {"api_key_comfy_org": "secret"}, ["1"], None, None)[1]
    assert reopened.find("s")[0] == body_hash(PROMPT, {"api_key_comfy_org": "other"}, None)
    assert "secret" not in (tmp_path / "q.sqlite3").read_bytes().decode("latin-1") + \
        (tmp_path / "q.sqlite3-wal").read_bytes().decode("latin-1")


def test_wal_mode_and_recovery_of_cut_off_jobs(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = Store(path, max_attempts=2)
    submit(store, "a")
    submit(store, "b")
    assert store.claim_next().prompt_id == "a"
    # the process dies here: no finish(); a new process opens the same file
    store = Store(path, max_attempts=2)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.recover() == (["a"], [])
    assert store.status_of("a")["status"] == "queued" and store.status_of("a")["interruptions"] == 1
    job = store.claim_next()
    assert (job.prompt_id, job.attempts, job.interruptions) == ("a", 2, 1)
    store = Store(path, max_attempts=2)  # dies again: out of attempts
    assert store.recover() == ([], ["a"])
    entry = store.history(prompt_id="a")["a"]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][0][0] == "execution_interrupted"
    assert [item[1] for item in store.queue()[1]] == ["b"]


class FakeExecutor:
    def __init__(self):
        self.ran = []

    def run(self, prompt, prompt_id=None, client_id=None, extra_data=None, partial_targets=None,
            on_event=None, interrupt=None):
        self.ran.append(prompt_id)
        on_event("execution_start", {"prompt_id": prompt_id, "timestamp": 1})
        on_event("executing", {"node": "1", "display_node": "1", "prompt_id": prompt_id})
        on_event("executed", {"node": "1", "display_node": "1", "output": {"n": [1]},
                              "prompt_id": prompt_id})
        on_event("execution_success", {"prompt_id": prompt_id, "timestamp": 2})

        class Result:
            status = "success"
            outputs = {"1": {"n": [1]}}
        return Result()

    def free(self, **kw):
        pass


def run_worker(store, executor, deliver, until, tries=200, settle=0.0, retry_delay=None):
    """Run a Worker on a fresh event loop until `until()` holds (or the tries run out), then
    stop it."""
    async def scenario():
        loop = asyncio.get_running_loop()
        worker = Worker(store, executor, deliver, lambda: None, loop)
        if retry_delay is not None:
            worker.retry_delay = retry_delay
        worker.start()
        for _ in range(tries):
            if until():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(settle)
        await loop.run_in_executor(None, worker.stop)
    asyncio.run(scenario())


def test_worker_writes_history_before_done_and_notes_requeues(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    submit(store, "a")
    store.claim_next()
    store = Store(tmp_path / "q.sqlite3")
    store.recover()
    submit(store, "b")
    delivered = []
    seen_history_at_done = []

    def deliver(client_id, event, data):
        delivered.append((client_id, event, data))
        if event == "executing" and data["node"] is None:
            seen_history_at_done.append(bool(store.history(prompt_id=data["prompt_id"])))

    run_worker(store, FakeExecutor(), deliver,
               lambda: len(store.history()) == 2 and len(seen_history_at_done) == 2)
    assert seen_history_at_done == [True, True]
    history = store.history()
    assert list(history) == ["a", "b"]
    assert history["a"]["status"]["messages"][0][0] == "vidgraph_requeued"
    assert history["b"]["status"]["messages"][0][0] == "execution_start"
    assert history["b"]["meta"] == {"1": {"node_id": "1", "display_node": "1",
                                          "parent_node": None, "real_node_id": "1"}}
    assert all(client == "c" for client, _, _ in delivered)


def test_history_windows_follow_comfyui(tmp_path):
    store = Store(tmp_path / "q.sqlite3")
    for name in "abcde":
        submit(store, name)
        store.claim_next()
        store.finish(name, "success", {}, {"status_str": "success", "completed": True,
                                           "messages": []}, {})
    assert list(store.history()) == list("abcde")
    assert list(store.history(max_items=2)) == ["d", "e"]  # the newest, oldest first
    assert list(store.history(max_items=2, offset=1)) == ["b", "c"]  # offset from the oldest
    assert list(store.history(offset=3)) == ["d", "e"]
    assert store.delete_history(["b", "zz"]) == 1
    assert list(store.history()) == list("acde")


def test_worker_reports_failures_outside_nodes(tmp_path):
    class Invalid:
        status, outputs, invalid = "error", {}, True
        error = {"error": {"type": "prompt_outputs_failed_validation"}, "node_errors": {}}

    class Broken(FakeExecutor):
        def run(self, prompt, prompt_id=None, **kw):
            if prompt_id == "a":
                return Invalid()
            raise RuntimeError("engine bug")

    store = Store(tmp_path / "q.sqlite3")
    submit(store, "a")
    submit(store, "b")
    delivered = []

    run_worker(store, Broken(), lambda *a: delivered.append(a),
               lambda: len(store.history()) == 2, settle=0.05)
    history = store.history()
    for prompt_id, kind in (("a", "ValidationError"), ("b", "RuntimeError")):
        messages = history[prompt_id]["status"]["messages"]
        assert history[prompt_id]["status"]["status_str"] == "error"
        assert messages[-1][0] == "execution_error" and messages[-1][1]["exception_type"] == kind
    assert [a[1] for a in delivered] == ["execution_error", "executing"] * 2


def test_history_is_capped_like_comfyuis_and_the_queue_is_untouched(tmp_path):
    store = Store(tmp_path / "q.sqlite3", max_history=3)
    for name in "abcde":
        submit(store, name)
        store.claim_next()
        store.finish(name, "success", {}, {"status_str": "success", "completed": True,
                                           "messages": []}, {})
    submit(store, "queued")
    assert list(store.history()) == ["c", "d", "e"]  # the oldest entries go first
    assert store.status_of("a") is None and store.status_of("queued")["status"] == "queued"


def test_worker_survives_a_store_error_while_taking_a_job(tmp_path):
    """A failing read of the queue (disk full, a lock held too long) must not end the worker
    thread: the server would accept prompts and never run them."""
    class Flaky(Store):
        failures = 1

        def claim_next(self):
            if self.failures:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            return super().claim_next()

    store = Flaky(tmp_path / "q.sqlite3")
    submit(store, "a")

    run_worker(store, FakeExecutor(), lambda *a: None, lambda: bool(store.history()), tries=300,
               retry_delay=0.01)
    assert list(store.history()) == ["a"]


def test_a_nan_in_a_nodes_output_never_poisons_the_history(tmp_path):
    """Browsers cannot parse NaN: stored as null, or every later GET /history would fail."""
    store = Store(tmp_path / "q.sqlite3")
    submit(store, "a")
    store.claim_next()
    store.finish("a", "success", {"1": {"value": [float("nan"), float("inf"), 1.5]}},
                 {"status_str": "success", "completed": True, "messages": []}, {})
    history = store.history()
    json.dumps(history, allow_nan=False)
    assert history["a"]["outputs"]["1"]["value"] == [None, None, 1.5]


def test_pause_move_and_cap_in_the_store(tmp_path):
    from vidgraph.server.store import NotPending, QueueFull

    store = Store(tmp_path / "q.sqlite3")
    store.set_paused(True)
    for name in "abc":
        submit(store, name)
    assert store.claim_next() is None  # paused: nothing starts
    assert store.move("c", 0) == 0 and store.move("a", 7) == 2 and store.move("b", 1) == 1
    assert [item[1] for item in store.queue()[1]] == ["c", "b", "a"]
    assert [store.status_of(p)["position"] for p in "cba"] == [0, 1, 2]
    with pytest.raises(QueueFull):
        submit(store, "d", max_queue=3)
    assert submit(store, "a", max_queue=3) == (store.find("a")[1], False)  # existing: no cap
    store.close()
    store = Store(tmp_path / "q.sqlite3")
    assert store.paused is True  # kept across a restart
    store.set_paused(False)
    job = store.claim_next()
    assert job.prompt_id == "c"
    with pytest.raises(NotPending):
        store.move("c", 1)
    with pytest.raises(KeyError):
        store.move("zz", 0)
    assert store.status_of("c")["state"] == "running" and store.status_of("c")["position"] is None
