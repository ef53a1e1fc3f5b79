"""Configuration and the per-application state the route handlers share (kept on `app`)."""
from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from vidgraph.engine.folders import Folders


@dataclass
class Limits:
    prompt_body: int = 2 * 1024 * 1024        # POST /prompt (the UI workflow rides along in extra_data)
    json_body: int = 1024 * 1024              # every other JSON endpoint
    upload: int = 100 * 1024 * 1024           # ComfyUI's --max-upload-size default
    userdata: int = 16 * 1024 * 1024
    json_depth: int = 100
    max_nodes: int = 2000                      # nodes per prompt
    max_pixels: int = 8192 * 8192              # per uploaded image, read from the header
    max_frames: int = 1000                     # per animated upload
    max_history: int = 10_000                  # history entries kept (ComfyUI's cap)
    max_queue: int = 10_000                    # pending prompts; one more gets a 429
    ws_clients: int = 256
    ws_message: int = 64 * 1024
    ws_send_queue: int = 256
    ws_heartbeat: float = 30.0


@dataclass
class ServerConfig:
    folders: Folders
    host: str = "127.0.0.1"
    port: int = 8188
    node_packs: list[str] = field(default_factory=lambda: ["vidgraph.nodes"])
    custom_node_dirs: list[str] = field(default_factory=list)
    enable_cors_header: str | None = None
    allowed_hosts: set[str] = field(default_factory=set)
    settings: dict[str, Any] = field(default_factory=dict)  # handed to the Executor (device, ...)
    max_attempts: int = 2                                    # runs of a job cut off by crashes
    queue_url: str | None = None                             # redis://...: jobs run in `vidgraph worker`s
    limits: Limits = field(default_factory=Limits)
    web_root: Path | None = None                             # default: the vidgraph.web package
    workflows_root: Path | None = None                       # default: the vidgraph.workflows package
    # Output files (or saver prefixes: their newest files) the editor opens at start (`--show`),
    # and this start's id, so that each browser opens them once.
    show: list[str] = field(default_factory=list)
    startup_id: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def database_path(self) -> Path:
        return Path(self.folders.user_dir) / "vidgraph-queue.sqlite3"

    @property
    def userdata_root(self) -> Path:
        # A sub-folder, so the user-data routes can never reach the queue database.
        return Path(self.folders.user_dir) / "default"


@dataclass
class ServerState:
    config: ServerConfig
    registry: Any
    executor: Any
    validate: Callable
    queue: Any                      # a queue.QueueBackend: SqliteQueue or RedisQueue
    instance_id: str = ""
    hub: Any = None
    settings_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one settings write at a time


STATE = web.AppKey("vidgraph_state", ServerState)
UNEXPECTED_ERRORS = web.AppKey("unexpected_errors", int)
