"""`vidgraph worker --queue redis://...`: one process per GPU that runs prompts from Redis Streams.

The main thread takes a job and runs it with the engine's Executor; a heartbeat thread keeps the
worker's liveness key, its warm model sets and its job's lease; a control thread listens for
interrupts and /free. How jobs are bound to stream tokens, reclaimed and finished exactly once is
in docs/ARCHITECTURE.md ("Redis Streams backend") and redis_log.py.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

try:
    import redis
except ImportError:  # an optional extra: `vidgraph worker` says how to install it
    redis = None

from vidgraph.engine.interrupt import InterruptFlag
from vidgraph.runtime import UsageError, add_runtime_options, build_runtime

from .output_staging import JobOutputs, has_output_files
from .redis_log import GROUP, Keys, client_options, dumps, job_from_hash, register_scripts
from .store import Job
from .worker import execute

log = logging.getLogger("vidgraph.worker")


@dataclass
class Work:
    pool: str
    entry: str
    job: Job
    model_set: str
    max_attempts: int
    deliveries: int = 1
    cancelled: bool = False


@dataclass
class WorkerOptions:
    lease: float = 30.0           # seconds a silent worker keeps its job before others reclaim it
    steal_after: float = 2.0      # seconds a job waits for a warm worker before a cold one takes it
    warm_slots: int = 2           # model sets a worker advertises as loaded
    block: float = 0.5            # seconds one blocking read waits
    heartbeat: float = 1.0
    max_history: int = 10_000


class RedisWorker:
    def __init__(self, url: str, executor, worker_id: str | None = None, device: str = "auto",
                 options: WorkerOptions | None = None, prefix: str | None = None):
        self.options = options or WorkerOptions()
        self.keys = Keys(prefix) if prefix else Keys()
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.device = device
        self.executor = executor
        self.base_folders = executor.folders
        self.redis = redis.Redis.from_url(url, decode_responses=True, **client_options())
        self.scripts = register_scripts(self.redis)
        self.warm: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.pools: set[str] = {"any"}
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._work: Work | None = None
        self._flag: InterruptFlag | None = None
        self._pending_free: dict | None = None
        self._next_reclaim = 0.0
        # Tokens in this worker's own pending list that it may have lost track of: a reply lost in a
        # Redis restart, or a restart of this worker under the same id. Checked at start and after
        # every outage.
        self._check_own_tokens = True
        self._threads: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> None:
        """Take and run jobs until `stop()`; Redis outages are waited out."""
        self._ensure_pool("any")
        for target in (self._heartbeat_loop, self._control_loop):
            thread = threading.Thread(target=target, name=f"vidgraph-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker %s on %s takes jobs from %s", self.id, self.device, self.keys.prefix)
        try:
            while not self.stop_event.is_set():
                self._apply_free()
                try:
                    work = self._next()
                except redis.RedisError as e:
                    log.warning("worker %s: redis unavailable (%s); retrying", self.id, e)
                    self._check_own_tokens = True
                    self.stop_event.wait(0.5)
                    continue
                if work is None:
                    continue
                try:
                    self._run(work)
                except Exception:  # a full disk while publishing, say: the job is tried again
                    log.exception("worker %s: could not finish %s", self.id, work.job.prompt_id)
                    self._check_own_tokens = True
        finally:
            self.stop_event.set()
            for thread in self._threads:
                thread.join(5)
            try:
                self.redis.hdel(self.keys.workers, self.id)
                self.redis.delete(self.keys.alive(self.id))
            except redis.RedisError:
                pass

    def stop(self) -> None:
        """Stop after the running job; it is interrupted and goes back to the queue."""
        self.stop_event.set()
        with self._lock:
            if self._flag is not None:
                self._flag.set()

    # -- taking a job --------------------------------------------------------------------

    def _ensure_pool(self, pool: str) -> None:
        try:
            self.redis.xgroup_create(self.keys.stream(pool), GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self.redis.sadd(self.keys.pools, pool)

    def _next(self) -> Work | None:
        if self.redis.get(self.keys.paused) == "1":
            self.stop_event.wait(0.25)
            return None
        self.pools = set(self.redis.smembers(self.keys.pools)) | {"any"}
        if self._check_own_tokens:
            self._check_own_tokens = False
            work = self._own_tokens()
            if work is not None:
                return work
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + min(1.0, self.options.lease / 4)
            work = self._reclaim()
            if work is not None:
                return work
        warm = [f"m:{s}" for s in reversed(self.warm) if f"m:{s}" in self.pools]
        streams = {self.keys.stream(pool): ">" for pool in warm + ["any"]}
        reply = self.redis.xreadgroup(GROUP, self.id, streams, count=1,
                                      block=int(self.options.block * 1000))
        tokens = [(self._pool_of(stream), entry_id) for stream, entries in reply or []
                  for entry_id, _ in entries]
        tokens.sort(key=lambda t: t[0] == "any")  # a warm pool's job first
        work = None
        for pool, entry in tokens:
            if work is None:
                work = self._bind(pool, entry)
            else:  # read together with the chosen one: back to its stream for another worker
                self.scripts["requeue_token"](args=[self.keys.prefix, pool, entry, "keep"])
        return work if work is not None or tokens else self._steal()

    def _pool_of(self, stream: str) -> str:
        return stream[len(self.keys.stream("")):]

    def _bind(self, pool: str, entry: str) -> Work | None:
        answer = self.scripts["bind"](args=[self.keys.prefix, pool, entry, self.id, time.time()])
        return self._work_for(pool, entry, answer[1], 1) if answer[0] == "bound" else None

    def _work_for(self, pool: str, entry: str, prompt_id: str, deliveries: int) -> Work | None:
        h = self.redis.hgetall(self.keys.job(prompt_id))
        if not h:
            return None
        return Work(pool, entry, job_from_hash(h), h.get("model_set", ""),
                    int(h.get("max_attempts") or 1), deliveries, h.get("cancel") == "1")

    def _steal(self) -> Work | None:
        """Idle: take from a cold pool whose front job has waited `steal_after` for its warm worker."""
        for pool in sorted(self.pools - {"any"} - {f"m:{s}" for s in self.warm}):
            front = self.redis.zrange(self.keys.pool(pool), 0, 0)
            if not front:
                continue
            enqueued = self.redis.hget(self.keys.job(front[0]), "enqueued_at")
            if enqueued is None or time.time() - float(enqueued) < self.options.steal_after:
                continue
            reply = self.redis.xreadgroup(GROUP, self.id, {self.keys.stream(pool): ">"}, count=1)
            for _, entries in reply or []:
                for entry_id, _ in entries:
                    work = self._bind(pool, entry_id)
                    if work is not None:
                        return work
        return None

    def _reclaim(self) -> Work | None:
        """Take over tokens whose worker went silent for a lease; bury jobs out of attempts."""
        lease_ms = int(self.options.lease * 1000)
        for pool in sorted(self.pools):
            stream = self.keys.stream(pool)
            try:
                _, claimed, *_ = self.redis.xautoclaim(stream, GROUP, self.id, lease_ms, "0-0",
                                                       count=1, justid=False)
            except redis.ResponseError:  # the stream or group is gone (a flushed Redis)
                continue
            for entry_id, _ in claimed:
                work = self._take_over(pool, entry_id)
                if work is not None:
                    return work
        return None

    def _own_tokens(self) -> Work | None:
        """Run (or hand back) what this worker holds in its pending lists but is not running."""
        for pool in sorted(self.pools):
            try:
                rows = self.redis.xpending_range(self.keys.stream(pool), GROUP, "-", "+", 100,
                                                 consumername=self.id)
            except redis.ResponseError:
                continue
            for row in rows:
                # a new delivery (the count goes up), so a job that kills a worker restarted under
                # the same id still reaches the dead-letter list
                self.redis.xclaim(self.keys.stream(pool), GROUP, self.id, 0, [row["message_id"]])
                work = self._take_over(pool, row["message_id"])
                if work is not None:
                    self._check_own_tokens = True  # there may be more: look again next time
                    return work
        return None

    def _take_over(self, pool: str, entry: str) -> Work | None:
        stream = self.keys.stream(pool)
        pending = self.redis.xpending_range(stream, GROUP, entry, entry, 1)
        deliveries = pending[0]["times_delivered"] if pending else 1
        prompt_id = self.redis.hget(f"{self.keys.prefix}bound:{pool}", entry)
        if prompt_id is None:  # read but never bound: the worker died in between
            return self._bind(pool, entry)
        work = self._work_for(pool, entry, prompt_id, deliveries)
        if work is None:
            self.scripts["requeue_token"](args=[self.keys.prefix, pool, entry, "drop"])
            return None
        log.warning("worker %s: took over %s (delivery %s of %s)", self.id, prompt_id, deliveries,
                    work.max_attempts)
        if deliveries > work.max_attempts:
            self._bury(work)
            return None
        if self.scripts["rebind"](args=[self.keys.prefix, pool, entry, self.id])[0] != "bound":
            return None
        work.job.attempts += 1
        work.job.interruptions += 1
        return work

    def _bury(self, work: Work) -> None:
        """Dead-letter a job that took its workers down `max_attempts` times."""
        reason = (f"the worker running it stopped answering {work.deliveries - 1} times "
                  f"(out of {work.max_attempts} attempts); moved to the dead-letter list")
        message = ["execution_error", {
            "prompt_id": work.job.prompt_id, "node_id": None, "node_type": None, "executed": [],
            "exception_message": reason, "exception_type": "WorkerLost", "traceback": [],
            "current_inputs": {}, "current_outputs": [], "timestamp": int(time.time() * 1000)}]
        status_obj = {"status_str": "error", "completed": False, "messages": [message]}
        self._finish(work, "error", {}, status_obj, {}, dead_reason=reason)
        self._publish(work.job.client_id, "execution_error", message[1])
        self._publish(work.job.client_id, "executing", {"node": None,
                                                        "prompt_id": work.job.prompt_id})

    # -- running a job -------------------------------------------------------------------

    def _run(self, work: Work) -> None:
        job = work.job
        flag = InterruptFlag()
        if work.cancelled:
            flag.set()
        with self._lock:
            self._work, self._flag = work, flag
            if self.stop_event.is_set():  # stopped between taking the job and here: hand it back
                flag.set()
        self._publish(None, "vidgraph_queue", {})
        outputs = JobOutputs(self.base_folders.output_dir, job.prompt_id,
                             f"{self.id}-{work.entry}-{work.deliveries}")
        outputs.undo_other_deliveries()
        self.executor.folders = outputs.folders(self.base_folders)
        held: list[dict] = []  # `executed` naming output files: sent once the files are in place

        def forward(event: str, data: dict) -> None:
            if event == "executed" and has_output_files(data.get("output")):
                held.append(data)
            else:
                self._publish(job.client_id, event, data)

        try:
            outcome = execute(self.executor, job, flag, forward)
        finally:
            self.executor.folders = self.base_folders
        try:
            if outcome.status == "interrupted" and self.stop_event.is_set():
                self._retry(lambda: self.scripts["requeue"](
                    args=[self.keys.prefix, job.prompt_id, work.pool, work.entry, self.id]))
                outputs.discard()
                return
            outputs.publish(outcome.outputs)
            for data in held:
                self._publish(job.client_id, "executed", data)
            answer = self._finish(work, outcome.status, outcome.outputs, outcome.status_obj,
                                  outcome.meta)
            if answer == "lost":  # another worker took the job over: its files win
                log.warning("worker %s: lost %s to another worker; its outputs are undone",
                            self.id, job.prompt_id)
                outputs.undo()
            outputs.discard()
            if answer == "done":
                self._publish(job.client_id, "executing", outcome.done)
                if work.model_set and outcome.status == "success":
                    self._mark_warm(work.model_set)
        finally:
            with self._lock:
                self._work = self._flag = None
            self._publish(None, "vidgraph_queue", {})

    def _finish(self, work: Work, status, outputs, status_obj, meta, dead_reason="") -> str:
        return self._retry(lambda: self.scripts["finish"](args=[
            self.keys.prefix, work.job.prompt_id, work.pool, work.entry, self.id, status,
            dumps(outputs), dumps(status_obj), dumps(meta), time.time(),
            self.options.max_history, dead_reason]))

    def _retry(self, call):
        """A finished job's record must reach Redis: wait out an outage (the lease then decides)."""
        while True:
            try:
                return call()
            except redis.ConnectionError as e:
                log.warning("worker %s: redis unavailable while finishing (%s); retrying", self.id, e)
                time.sleep(0.5)

    def _mark_warm(self, model_set: str) -> None:
        with self._lock:
            self.warm[model_set] = None
            self.warm.move_to_end(model_set)
            while len(self.warm) > self.options.warm_slots:
                self.warm.popitem(last=False)
        self._ensure_pool(f"m:{model_set}")
        self._advertise()

    def _publish(self, client_id: str | None, event: str, data: dict) -> None:
        """Events are best effort (the history is the record): a Redis outage drops them."""
        try:
            if event == "preview":
                header = {k: v for k, v in data.items() if k != "image"}
                payload = (dumps({"client_id": client_id, "event": event, "data": header})
                           .encode() + b"\n" + bytes(data["image"]))
            else:
                payload = dumps({"client_id": client_id, "event": event, "data": data})
            self.redis.publish(self.keys.events, payload)
        except (redis.RedisError, TypeError, ValueError) as e:
            log.debug("worker %s: event %s not sent: %s", self.id, event, e)

    # -- the other threads ---------------------------------------------------------------

    def _advertise(self) -> None:
        ttl = int(self.options.heartbeat * 5000)
        with self._lock:
            work, warm = self._work, list(self.warm)
        info = {"id": self.id, "host": socket.gethostname(), "pid": os.getpid(),
                "device": self.device, "job": work.job.prompt_id if work else None,
                "warm": warm, "last_seen": time.time()}
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.alive(self.id), "1", px=ttl)
            pipe.hset(self.keys.workers, self.id, json.dumps(info))
            for model_set in warm:
                pipe.set(self.keys.warm(model_set), self.id, px=ttl)
            pipe.execute()

    def _heartbeat_loop(self) -> None:
        last_renew = time.monotonic()
        while not self.stop_event.wait(self.options.heartbeat):
            try:
                self._advertise()
                if time.monotonic() - last_renew >= self.options.lease / 3:
                    last_renew = time.monotonic()
                    self._renew()
            except redis.RedisError as e:
                log.debug("worker %s: heartbeat failed: %s", self.id, e)

    def _renew(self) -> None:
        with self._lock:
            work, flag = self._work, self._flag
        if work is None:
            return
        if not self.scripts["renew"](args=[self.keys.prefix, work.pool, work.entry, self.id]):
            log.warning("worker %s: lost the lease on %s; stopping it", self.id, work.job.prompt_id)
            flag.set()

    def _control_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self.keys.control)
                    while not self.stop_event.is_set():
                        message = pubsub.get_message(timeout=0.5)
                        if message and message.get("type") == "message":
                            self._on_control(message["data"])
            except redis.RedisError as e:
                log.debug("worker %s: control channel lost: %s", self.id, e)
                self.stop_event.wait(0.5)

    def _on_control(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if "interrupt" in message:
            target = message["interrupt"]
            with self._lock:
                if self._work is not None and target in (None, self._work.job.prompt_id):
                    self._flag.set()
        free = message.get("free")
        if isinstance(free, dict):
            with self._lock:
                pending = self._pending_free or {"unload_models": False, "free_memory": False}
                for key in pending:
                    pending[key] |= bool(free.get(key))
                self._pending_free = pending

    def _apply_free(self) -> None:
        with self._lock:
            pending, self._pending_free = self._pending_free, None
            if pending:
                self.warm.clear()
        if pending:
            try:
                self.executor.free(**pending)
            except Exception:
                log.exception("executor.free failed")


# -- command line --------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_runtime_options(parser)
    worker = parser.add_argument_group("worker")
    worker.add_argument("--queue", required=True, metavar="URL",
                        help="redis://[:PASSWORD@]HOST:PORT/DB (or rediss://, unix://PATH?db=N), "
                             "the same URL `vidgraph serve --queue` uses")
    worker.add_argument("--worker-id", default=None, help="default HOST-PID-RANDOM")
    worker.add_argument("--lease", type=float, default=30.0, metavar="SECONDS",
                        help="a worker silent this long loses its job to another (default 30)")
    worker.add_argument("--steal-after", type=float, default=2.0, metavar="SECONDS",
                        help="a job routed to a warm worker waits this long before a cold one "
                             "takes it (default 2)")
    worker.add_argument("--warm-slots", type=int, default=2, metavar="N",
                        help="model sets this worker advertises as loaded (default 2)")
    worker.add_argument("--no-builtin-nodes", action="store_true",
                        help="load only --custom-nodes packs (tests and benchmarks)")
    worker.add_argument("--log-level", default="INFO")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(args, "log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if redis is None:
        print("vidgraph worker: needs the redis package: pip install 'vidgraph[redis]'",
              file=sys.stderr)
        return 2
    from vidgraph.engine.executor import Executor

    try:
        runtime = build_runtime(args, builtin_nodes=not args.no_builtin_nodes)
    except UsageError as e:
        print(f"vidgraph worker: {e}", file=sys.stderr)
        return 2
    from .queue_redis import unreachable

    runtime.folders.ensure_dirs()
    executor = Executor(runtime.registry, runtime.folders, settings=runtime.settings)
    options = WorkerOptions(lease=args.lease, steal_after=args.steal_after,
                            warm_slots=max(1, args.warm_slots))
    worker = RedisWorker(args.queue, executor, args.worker_id, runtime.settings["device"], options)
    problem = unreachable(args.queue)
    if problem:
        print(f"vidgraph worker: {problem}", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        if worker.stop_event.is_set():
            raise KeyboardInterrupt
        log.info("worker %s stopping: the running job goes back to the queue", worker.id)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="vidgraph worker")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
