"""One worker thread that takes jobs from the store and runs them with the engine's Executor.

The event loop never runs a node: events cross back with `loop.call_soon_threadsafe`. The final
`executing {node: null}` ("done") is held back until the history row is written, so a client
that reacts to it by reading /history always finds the entry.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from vidgraph.engine.interrupt import InterruptFlag

from .store import Job, Store

log = logging.getLogger("vidgraph.server")

# Events that end up in a history entry's status.messages (ComfyUI keeps the same ones).
HISTORY_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success",
                            "execution_error", "execution_interrupted"})

Deliver = Callable[[str | None, str, dict], None]  # (client_id, event, data), on the loop


class Worker:
    def __init__(self, store: Store, executor, deliver: Deliver, on_queue_change: Callable[[], None],
                 loop):
        self.store = store
        self.executor = executor
        self.loop = loop
        self._deliver = deliver
        self._on_queue_change = on_queue_change
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: Job | None = None
        self._flag: InterruptFlag | None = None
        self._current_node: str | None = None
        self._pending_free: dict | None = None
        self._cancel_requested: set[str] = set()  # claimed jobs to stop as soon as they start
        self.retry_delay = 1.0  # seconds between tries after the store failed
        self._thread = threading.Thread(target=self._loop, name="vidgraph-worker", daemon=True)

    # -- called from the event loop -------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.interrupt()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt (only if it is `prompt_id`, when given)."""
        with self._lock:
            if self._running is None or self._flag is None:
                return False
            if prompt_id is not None and self._running.prompt_id != prompt_id:
                return False
            self._flag.set()
            return True

    def cancel(self, prompt_id: str) -> None:
        """Interrupt `prompt_id` now if it runs, or the moment it starts (it may be claimed
        and not yet handed to the executor)."""
        with self._lock:
            if self._running is not None and self._running.prompt_id == prompt_id:
                self._flag.set()
            else:
                self._cancel_requested.add(prompt_id)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Applied between prompts, never under a running node."""
        with self._lock:
            pending = self._pending_free or {"unload_models": False, "free_memory": False}
            pending["unload_models"] |= unload_models
            pending["free_memory"] |= free_memory
            self._pending_free = pending
        self._wake.set()

    def current_node(self, client_id: str) -> dict | None:
        with self._lock:
            job = self._running
            if job is None or job.client_id != client_id or self._current_node is None:
                return None
            return {"node": self._current_node, "display_node": self._current_node,
                    "prompt_id": job.prompt_id}

    @property
    def running_prompt_id(self) -> str | None:
        with self._lock:
            return self._running.prompt_id if self._running else None

    # -- the thread ----------------------------------------------------------------------

    def _post(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server is going down
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._apply_free()
            try:
                job = self.store.claim_next()
            except Exception:  # a locked or full disk: the thread must outlive it
                log.exception("worker could not take the next job; retrying")
                self._stop.wait(self.retry_delay)
                continue
            if job is None:
                with self._lock:
                    self._cancel_requested.clear()  # nothing is claimed: those jobs have ended
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            flag = InterruptFlag()
            with self._lock:
                self._running, self._flag, self._current_node = job, flag, None
                if job.prompt_id in self._cancel_requested:
                    self._cancel_requested.discard(job.prompt_id)
                    flag.set()
            self._post(self._on_queue_change)
            try:
                self._run(job, flag)
            except Exception:  # a store failure: log it and keep serving the queue
                log.exception("worker failed while finishing %s", job.prompt_id)
            finally:
                with self._lock:
                    self._running = self._flag = self._current_node = None
                self._post(self._on_queue_change)

    def _run(self, job: Job, flag: InterruptFlag) -> None:
        def on_node(node):
            with self._lock:
                self._current_node = node

        outcome = execute(self.executor, job, flag,
                          lambda event, data: self._post(self._deliver, job.client_id, event, data),
                          on_node)
        if outcome.status == "interrupted" and self._stop.is_set():
            # Stopped by a shutdown, not by a user: the job runs again after the restart.
            self.store.requeue(job.prompt_id)
            return
        self.store.finish(job.prompt_id, outcome.status, outcome.outputs, outcome.status_obj,
                          outcome.meta)
        self._post(self._deliver, job.client_id, "executing", outcome.done)

    def _apply_free(self) -> None:
        with self._lock:
            pending, self._pending_free = self._pending_free, None
        if pending:
            try:
                self.executor.free(**pending)
            except Exception:
                log.exception("executor.free failed")


@dataclass
class Outcome:
    """A finished run, ready for the history: what `execute` returns."""
    status: str                 # success | error | interrupted
    outputs: dict               # node id -> ui
    status_obj: dict            # ComfyUI's history "status" (status_str, completed, messages)
    meta: dict
    done: dict                  # the final `executing {node: null}` data, sent after the history


def execute(executor, job: Job, flag: InterruptFlag, forward: Callable[[str, dict], None],
            on_node: Callable[[str | None], None] = lambda node: None) -> Outcome:
    """Run one job with the engine's Executor (both queue backends' workers do it this way).

    Events go to `forward(event, data)` as they happen, except the final `executing {node: null}`,
    which the caller sends once the history is written; `on_node` hears the node that runs.
    """
    messages: list = []
    if job.interruptions:  # cut off by a crash before: say so in the history entry
        messages.append(["vidgraph_requeued", {
            "prompt_id": job.prompt_id, "interruptions": job.interruptions,
            "attempt": job.attempts, "timestamp": int(time.time() * 1000)}])
    done_event: list = []

    def on_event(event: str, data: dict) -> None:
        if event in HISTORY_EVENTS:
            messages.append([event, data])
        if event == "executing":
            node = data.get("node")
            on_node(node)
            if node is None:
                done_event.append(data)
                return
        forward(event, data)

    try:
        result = executor.run(
            job.prompt, prompt_id=job.prompt_id, client_id=job.client_id,
            extra_data=job.extra_data, partial_targets=job.partial_targets,
            on_event=on_event, interrupt=flag)
        status, outputs = result.status, dict(result.outputs or {})
        if getattr(result, "invalid", False):
            # Valid when queued, not when run (say, an input file was deleted in between).
            on_event("execution_error", _run_error(
                job.prompt_id, "Prompt failed validation when it was run",
                "ValidationError", [json.dumps(result.error, default=str)]))
    except Exception as e:
        # The executor reports node failures in its result; reaching here is an engine bug.
        log.exception("executor raised for prompt %s", job.prompt_id)
        status, outputs = "error", {}
        on_event("execution_error", _run_error(job.prompt_id, str(e), type(e).__name__,
                                               traceback.format_exception(e)))
    if status not in ("success", "error", "interrupted"):
        status = "error"
    status_obj = {"status_str": "success" if status == "success" else "error",
                  "completed": status == "success", "messages": messages}
    meta = {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                      "real_node_id": node_id} for node_id in outputs}
    done = done_event[0] if done_event else {"node": None, "prompt_id": job.prompt_id}
    return Outcome(status, outputs, status_obj, meta, done)


def _run_error(prompt_id: str, message: str, exception_type: str, details: list[str]) -> dict:
    """An `execution_error` for a failure outside any node (ComfyUI's fields)."""
    return {"prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
            "exception_message": message, "exception_type": exception_type,
            "traceback": details, "current_inputs": {}, "current_outputs": [],
            "timestamp": int(time.time() * 1000)}
