"""The queue backend interface the routes talk to, and what both backends share.

`SqliteQueue` (queue_sqlite.py) is the embedded default; `RedisQueue` (queue_redis.py) puts jobs on
Redis Streams for `vidgraph worker` processes. docs/ARCHITECTURE.md ("Queue backends") is the contract.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Callable, Protocol

from vidgraph.engine.folders import MODEL_EXTENSIONS

from .store import NotPending, PromptIdConflict, QueueFull

__all__ = ["QueueBackend", "NotPending", "PromptIdConflict", "QueueFull", "model_set",
           "instance_id", "Deliver"]

Deliver = Callable[[str | None, str, dict], None]  # (client_id, event, data), on the event loop


class QueueBackend(Protocol):
    backend: str  # "sqlite" | "redis"

    async def start(self, deliver: Deliver, on_queue_change: Callable[[], None]) -> None: ...
    async def close(self) -> None: ...

    async def find(self, prompt_id: str) -> tuple[str, float] | None: ...
    async def submit(self, prompt_id: str, prompt: dict, extra_data: dict, outputs_to_execute: list,
                     partial_targets: list | None, client_id: str | None, number: float | None = None,
                     front: bool = False, model_set: str = "") -> tuple[float, bool]: ...
    async def queue(self) -> tuple[list[list], list[list]]: ...
    async def queue_details(self) -> tuple[list[dict], list[dict]]: ...
    async def status_of(self, prompt_id: str) -> dict | None: ...
    async def history(self, max_items: int | None = None, offset: int | None = None,
                      prompt_id: str | None = None) -> dict: ...
    async def delete_queued(self, prompt_ids: list[str] | None) -> int: ...
    async def delete_history(self, prompt_ids: list[str] | None) -> int: ...

    async def set_paused(self, paused: bool) -> None: ...
    async def move(self, prompt_id: str, position: int) -> int: ...
    async def cancel(self, prompt_id: str) -> str: ...
    async def interrupt(self, prompt_id: str | None = None) -> bool: ...
    async def request_free(self, unload_models: bool, free_memory: bool) -> None: ...
    async def workers(self) -> list[dict]: ...
    async def dead_letters(self, limit: int = 100) -> list[dict]: ...

    # sync, for the websocket hub
    def queue_remaining(self) -> int: ...
    @property
    def paused(self) -> bool: ...
    def current_node(self, client_id: str) -> dict | None: ...


def model_set(prompt: dict) -> str:
    """A short stable name for the model files a prompt loads: every string input that names a
    model file (by extension), with its class and input. "" when it loads none. Workers that ran
    a prompt with the same set likely hold those models already (warm-model routing)."""
    names = set()
    for node in prompt.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for key, value in inputs.items():
            if isinstance(value, str) and os.path.splitext(value)[1].lower() in MODEL_EXTENSIONS:
                names.add((str(node.get("class_type")), key, value))
    if not names:
        return ""
    digest = hashlib.sha256(json.dumps(sorted(names)).encode()).hexdigest()
    return digest[:16]


def instance_id(user_dir: Path) -> str:
    """This installation's id, kept in the user dir so it stays the same across restarts."""
    path = Path(user_dir) / "vidgraph-instance-id"
    try:
        value = path.read_text().strip()
        if value:
            return value
    except OSError:
        pass
    value = secrets.token_hex(8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{secrets.token_hex(4)}.tmp")
    tmp.write_text(value + "\n")
    try:
        os.link(tmp, path)  # the first writer wins; a concurrent one reads its id
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()
