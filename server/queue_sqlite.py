"""The embedded queue backend: the SQLite store plus one in-process worker thread.

Store calls block on disk, so they run on the default thread pool, never on the event loop.
"""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import Callable

from .queue import Deliver, NotPending
from .store import Store
from .worker import Worker

log = logging.getLogger("vidgraph.server")


class SqliteQueue:
    backend = "sqlite"

    def __init__(self, store: Store, executor, max_queue: int | None = None):
        self.store = store
        self.executor = executor
        self.max_queue = max_queue
        self.worker: Worker | None = None

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(fn, *args, **kwargs))

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, deliver: Deliver, on_queue_change: Callable[[], None]) -> None:
        requeued, ended = await self._call(self.store.recover)
        if requeued or ended:
            log.warning("recovered after an unclean stop: re-queued %s, ended as interrupted %s",
                        requeued, ended)
        self.worker = Worker(self.store, self.executor, deliver, on_queue_change,
                             asyncio.get_running_loop())
        self.worker.start()

    async def close(self) -> None:
        if self.worker is not None:
            await self._call(self.worker.stop)
        self.store.close()

    # -- submit and read -----------------------------------------------------------------

    async def find(self, prompt_id):
        return await self._call(self.store.find, prompt_id)

    async def submit(self, prompt_id, prompt, extra_data, outputs_to_execute, partial_targets,
                     client_id, number=None, front=False, model_set=""):
        result = await self._call(self.store.submit, prompt_id, prompt, extra_data,
                                  outputs_to_execute, partial_targets, client_id, number, front,
                                  max_queue=self.max_queue)
        if result[1] and self.worker is not None:
            self.worker.wake()
        return result

    async def queue(self):
        return await self._call(self.store.queue)

    async def queue_details(self):
        return await self._call(self.store.queue_details)

    async def status_of(self, prompt_id):
        return await self._call(self.store.status_of, prompt_id)

    async def history(self, max_items=None, offset=None, prompt_id=None):
        return await self._call(self.store.history, max_items, offset, prompt_id)

    async def delete_queued(self, prompt_ids):
        return await self._call(self.store.delete_queued, prompt_ids)

    async def delete_history(self, prompt_ids):
        return await self._call(self.store.delete_history, prompt_ids)

    async def workers(self):
        return []

    async def dead_letters(self, limit: int = 100):
        return []  # one process: a job that kills it ends `interrupted` after max_attempts

    # -- controls ------------------------------------------------------------------------

    async def set_paused(self, paused: bool) -> None:
        await self._call(self.store.set_paused, paused)
        if not paused and self.worker is not None:
            self.worker.wake()

    async def move(self, prompt_id: str, position: int) -> int:
        return await self._call(self.store.move, prompt_id, position)

    async def cancel(self, prompt_id: str) -> str:
        if await self._call(self.store.delete_queued, [prompt_id]):
            return "pending"
        status = await self.status_of(prompt_id)  # claimed in between, or not pending at all
        if status is None:
            raise KeyError(prompt_id)
        if status["status"] != "running":
            raise NotPending(status["status"])
        self.worker.cancel(prompt_id)
        return "running"

    async def interrupt(self, prompt_id=None) -> bool:
        return self.worker.interrupt(prompt_id) if self.worker is not None else False

    async def request_free(self, unload_models: bool, free_memory: bool) -> None:
        if self.worker is not None:
            self.worker.request_free(unload_models, free_memory)

    # -- sync, for the hub ---------------------------------------------------------------

    def queue_remaining(self) -> int:
        return self.store.queue_remaining()

    @property
    def paused(self) -> bool:
        return self.store.paused

    def current_node(self, client_id: str):
        return self.worker.current_node(client_id) if self.worker is not None else None
