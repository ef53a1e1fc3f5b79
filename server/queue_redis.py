"""The Redis Streams queue backend, server side: submit, read, control; `vidgraph worker`s run.

The server talks to Redis with redis-py's asyncio client. Workers' events arrive on one pub/sub
channel and go to this server's websocket clients in ComfyUI's shapes; controls (interrupt,
free) go out on another. The websocket hub asks for the queue length synchronously, so it is
cached here and refreshed on every queue event and once a second (other servers may submit too).
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import Callable

import redis.asyncio as aioredis

from .errors import ApiError
from .queue import Deliver, NotPending, PromptIdConflict, QueueFull
from .redis_log import JOB_FIELDS, Keys, client_options, dumps, history_entry, job_from_hash, register_scripts
from .store import SECRET_EXTRA_KEYS, body_hash, job_state

log = logging.getLogger("vidgraph.server")
REFRESH_SECONDS = 1.0


def available(method):
    """Redis down or unreachable: a 503 the client can retry, never a 500."""
    @functools.wraps(method)
    async def call(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as e:
            raise ApiError(503, "queue_unavailable", "The Redis queue cannot be reached; try again",
                           str(e), headers={"Retry-After": "2"}) from None
    return call


def connect(url: str, **kwargs) -> aioredis.Redis:
    """A client for `url` (redis://[:password@]host:port/db, rediss://, unix://path?db=N)."""
    return aioredis.Redis.from_url(url, **client_options(), **kwargs)


def unreachable(url: str) -> str | None:
    """Why the queue at `url` cannot be used (None when it answers), for a one-line start-up error."""
    async def ping():
        client = connect(url)
        try:
            await client.ping()
        finally:
            await client.aclose()
    try:
        asyncio.run(ping())
        return None
    except (aioredis.RedisError, OSError, ValueError) as e:
        return f"cannot reach the queue at {redacted(url)}: {e}"


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


class RedisQueue:
    backend = "redis"

    def __init__(self, url: str, max_queue: int | None = None, max_history: int = 10_000,
                 max_attempts: int = 3, prefix: str | None = None):
        self.url = url
        self.keys = Keys(prefix) if prefix else Keys()
        self.max_queue = max_queue or 0
        self.max_history = max_history
        self.max_attempts = max_attempts
        self.redis = connect(url, decode_responses=True)
        self.scripts = register_scripts(self.redis)
        self._remaining = 0
        self._paused = False
        self._current: dict[str, dict] = {}  # client id -> its prompt's running node
        self._tasks: list[asyncio.Task] = []
        self._deliver: Deliver | None = None
        self._on_queue_change: Callable[[], None] = lambda: None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, deliver: Deliver, on_queue_change: Callable[[], None]) -> None:
        self._deliver, self._on_queue_change = deliver, on_queue_change
        await self.redis.ping()  # a wrong URL or password fails the start, loudly
        await self._refresh()
        self._tasks = [asyncio.create_task(self._relay_events()),
                       asyncio.create_task(self._refresh_every(REFRESH_SECONDS))]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()

    async def _refresh(self) -> None:
        pending, running, paused = await self._pipe(
            lambda p: (p.zcard(self.keys.pending), p.scard(self.keys.running),
                       p.get(self.keys.paused)))
        changed = (pending + running, paused == "1") != (self._remaining, self._paused)
        self._remaining, self._paused = pending + running, paused == "1"
        if changed:
            self._on_queue_change()

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self._refresh()
            except aioredis.RedisError as e:
                log.warning("redis queue: cannot refresh the queue length: %s", e)

    async def _relay_events(self) -> None:
        """Workers' events -> this server's websocket clients, until closed; reconnects."""
        while True:
            raw = connect(self.url, decode_responses=False)
            try:
                async with raw.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.events)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._on_event_message(message["data"])
            except asyncio.CancelledError:
                raise
            except (aioredis.RedisError, OSError) as e:
                log.warning("redis queue: event relay lost its connection (%s); retrying", e)
                await asyncio.sleep(0.5)
            finally:
                await raw.aclose()

    async def _on_event_message(self, payload: bytes) -> None:
        header, _, image = payload.partition(b"\n")
        try:
            message = json.loads(header)
            client_id, event, data = message.get("client_id"), message["event"], message["data"]
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("redis queue: ignoring a malformed event message")
            return
        if event == "vidgraph_queue":
            await self._refresh()
            self._on_queue_change()
            return
        if event == "preview":
            data["image"] = image
        if event == "executing" and client_id:
            if data.get("node") is None:
                self._current.pop(client_id, None)
            else:
                self._current[client_id] = {"node": data["node"], "display_node": data["node"],
                                            "prompt_id": data.get("prompt_id")}
        self._deliver(client_id, event, data)

    async def _pipe(self, build):
        async with self.redis.pipeline(transaction=False) as pipe:
            build(pipe)
            return await pipe.execute()

    async def _announce(self) -> None:
        await self.redis.publish(self.keys.events, json.dumps({"event": "vidgraph_queue",
                                                               "data": {}}))

    # -- submit and read -----------------------------------------------------------------

    @available
    async def find(self, prompt_id):
        sha, number = await self.redis.hmget(self.keys.job(prompt_id), "body_sha256", "number")
        return None if sha is None else (sha, _number(number))

    @available
    async def submit(self, prompt_id, prompt, extra_data, outputs_to_execute, partial_targets,
                     client_id, number=None, front=False, model_set=""):
        extra_data = {k: v for k, v in extra_data.items() if k not in SECRET_EXTRA_KEYS}
        digest = body_hash(prompt, extra_data, partial_targets)
        answer, value = await self.scripts["submit"](args=[
            self.keys.prefix, prompt_id, digest, "" if number is None else repr(float(number)),
            "1" if front else "0", self.max_queue, model_set, time.time(), self.max_attempts,
            client_id or "", dumps(prompt), dumps(extra_data), dumps(outputs_to_execute),
            "" if partial_targets is None else dumps(partial_targets)])
        if answer == "conflict":
            raise PromptIdConflict(prompt_id)
        if answer == "full":
            raise QueueFull(self.max_queue, int(value))
        if answer == "created":
            await self._announce()
        return _number(value), answer == "created"

    async def _jobs(self, ids: list[str], fields=JOB_FIELDS) -> list[dict]:
        rows = await self._pipe(lambda p: [p.hmget(self.keys.job(i), fields) for i in ids])
        return [dict(zip(fields, row)) for row in rows if row[0] is not None]

    async def _pending_and_running(self, fields=JOB_FIELDS):
        pending_ids, running_ids = await self._pipe(
            lambda p: (p.zrange(self.keys.pending, 0, -1), p.smembers(self.keys.running)))
        running = sorted(await self._jobs(sorted(running_ids), fields),
                         key=lambda h: float(h["number"]))
        return running, await self._jobs(pending_ids, fields)

    @available
    async def queue(self):
        running, pending = await self._pending_and_running()
        return ([job_from_hash(h).queue_item() for h in running],
                [job_from_hash(h).queue_item() for h in pending])

    @available
    async def queue_details(self):
        fields = ("prompt_id", "number", "client_id", "worker", "started_at", "enqueued_at")
        running, pending = await self._pending_and_running(fields)
        return ([{"prompt_id": h["prompt_id"], "number": _number(h["number"]),
                  "client_id": h["client_id"] or None, "worker": h["worker"] or None,
                  "started_at": _float(h["started_at"])} for h in running],
                [{"prompt_id": h["prompt_id"], "number": _number(h["number"]),
                  "client_id": h["client_id"] or None, "position": i,
                  "enqueued_at": _float(h["enqueued_at"])} for i, h in enumerate(pending)])

    @available
    async def status_of(self, prompt_id):
        fields = ("status", "number", "attempts", "max_attempts", "interruptions", "worker")
        (row, rank) = await self._pipe(lambda p: (p.hmget(self.keys.job(prompt_id), fields),
                                                  p.zrank(self.keys.pending, prompt_id)))
        if row[0] is None:
            return None
        h = dict(zip(fields, row))
        status = "error" if h["status"] == "dead" else h["status"]
        return {"prompt_id": prompt_id, "status": status, "number": _number(h["number"]),
                "attempts": int(h["attempts"] or 0), "max_attempts": int(h["max_attempts"] or 0),
                "interruptions": int(h["interruptions"] or 0), "state": job_state(status),
                "position": rank if status == "queued" else None, "worker": h["worker"] or None}

    @available
    async def history(self, max_items=None, offset=None, prompt_id=None):
        if prompt_id is not None:
            ids = [prompt_id] if await self.redis.zscore(self.keys.history, prompt_id) else []
        elif offset is None and max_items is not None:  # the newest max_items, oldest first
            ids = await self.redis.zrange(self.keys.history, -max_items, -1) if max_items else []
        elif max_items == 0:
            ids = []
        else:
            start = offset or 0
            stop = -1 if max_items is None else start + max_items - 1
            ids = await self.redis.zrange(self.keys.history, start, stop)
        jobs = await self._jobs(ids)
        return {h["prompt_id"]: history_entry(h) for h in jobs}

    @available
    async def delete_queued(self, prompt_ids):
        removed = await self.scripts["delete_queued"](
            args=[self.keys.prefix, *(["*"] if prompt_ids is None else prompt_ids)])
        await self._announce()
        return removed

    @available
    async def delete_history(self, prompt_ids):
        if prompt_ids is None:
            prompt_ids = await self.redis.zrange(self.keys.history, 0, -1)
        in_history = await self._pipe(
            lambda p: [p.zscore(self.keys.history, i) for i in prompt_ids])
        gone = [i for i, score in zip(prompt_ids, in_history) if score is not None]
        await self._pipe(lambda p: [(p.zrem(self.keys.history, i), p.delete(self.keys.job(i)))
                                    for i in gone])
        return len(gone)

    @available
    async def dead_letters(self, limit: int = 100) -> list[dict]:
        """The newest dead-lettered jobs, newest first: {prompt_id, reason, worker, at}."""
        rows = await self.redis.xrevrange(self.keys.dead, count=limit)
        return [{"prompt_id": f.get("prompt_id"), "reason": f.get("reason"),
                 "worker": f.get("worker"), "at": _float(f.get("at"))} for _, f in rows]

    @available
    async def workers(self):
        entries = await self.redis.hgetall(self.keys.workers)
        ids = sorted(entries)
        alive = await self._pipe(lambda p: [p.exists(self.keys.alive(i)) for i in ids])
        out = []
        for worker_id, is_alive in zip(ids, alive):
            if not is_alive:
                await self.redis.hdel(self.keys.workers, worker_id)  # gone for good
                continue
            try:
                out.append(json.loads(entries[worker_id]))
            except ValueError:
                continue
        return out

    # -- controls ------------------------------------------------------------------------

    @available
    async def set_paused(self, paused: bool) -> None:
        if paused:
            await self.redis.set(self.keys.paused, "1")
        else:
            await self.redis.delete(self.keys.paused)
        self._paused = paused
        await self._announce()

    @available
    async def move(self, prompt_id, position):
        answer, value = await self.scripts["move"](args=[self.keys.prefix, prompt_id, position])
        if answer == "moved":
            return int(value)
        if not value:
            raise KeyError(prompt_id)
        raise NotPending("error" if value == "dead" else value)

    @available
    async def cancel(self, prompt_id):
        answer = await self.scripts["cancel"](args=[self.keys.prefix, prompt_id])
        if answer == "running":
            await self._control({"interrupt": prompt_id})
        elif not answer:
            raise KeyError(prompt_id)
        elif answer != "pending":
            raise NotPending(answer)
        await self._announce()
        return answer

    @available
    async def interrupt(self, prompt_id=None) -> bool:
        """With an id: that prompt, wherever it runs. Without: every running prompt (each
        worker has its own; ComfyUI's single queue has one)."""
        await self._control({"interrupt": prompt_id})
        return True

    @available
    async def request_free(self, unload_models, free_memory):
        await self._control({"free": {"unload_models": unload_models,
                                      "free_memory": free_memory}})

    async def _control(self, message: dict) -> None:
        await self.redis.publish(self.keys.control, json.dumps(message))

    # -- sync, for the hub ---------------------------------------------------------------

    def queue_remaining(self) -> int:
        return self._remaining

    @property
    def paused(self) -> bool:
        return self._paused

    def current_node(self, client_id):
        return self._current.get(client_id)


def _number(value) -> float | int:
    number = float(value)
    return int(number) if number.is_integer() else number


def _float(value) -> float | None:
    return float(value) if value else None
