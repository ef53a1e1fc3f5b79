"""`server`: ComfyUI's `PromptServer.instance`, whether or not an HTTP server runs.

Packs touch it at import time: they add HTTP routes with `PromptServer.instance.routes.get(...)`
decorators and keep `send_sync` for later. Routes are recorded here (the engine knows no HTTP);
the server attaches itself when it builds its app (`attach`), serves every recorded route and
delivers `send_sync` events to websocket clients. Without a server (`vidgraph run`), events a
node sends go to the prompt's subscribers through its context.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from ..context import current_context
from .module import compat_module


class RouteRecorder:
    """Looks like aiohttp's RouteTableDef: decorators record (method, path, handler, options)."""

    def __init__(self):
        self.routes: list[tuple[str, str, Any, dict]] = []
        self.listeners: list[Callable[[tuple], None]] = []

    def _add(self, entry: tuple) -> None:
        self.routes.append(entry)
        for listener in list(self.listeners):
            listener(entry)

    def route(self, method: str, path: str, **options):
        def register(handler):
            self._add((method.upper(), path, handler, options))
            return handler
        return register

    def get(self, path: str, **options):
        return self.route("GET", path, **options)

    def post(self, path: str, **options):
        return self.route("POST", path, **options)

    def put(self, path: str, **options):
        return self.route("PUT", path, **options)

    def patch(self, path: str, **options):
        return self.route("PATCH", path, **options)

    def delete(self, path: str, **options):
        return self.route("DELETE", path, **options)

    def head(self, path: str, **options):
        return self.route("HEAD", path, **options)

    def view(self, path: str, **options):
        return self.route("*", path, **options)

    def static(self, prefix: str, path: str, **options) -> None:
        self._add(("STATIC", prefix, path, options))

    def __iter__(self):
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)


class BinaryEventTypes:
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class _PromptQueueFace:
    """The few `prompt_queue` reads packs make; the server replaces the callables."""

    def __init__(self):
        self.get_current_queue = lambda: ([], [])
        self.get_tasks_remaining = lambda: 0
        self.get_history = lambda prompt_id=None, max_items=None, offset=-1: {}

    def get_current_queue_volatile(self):
        return self.get_current_queue()


class PendingRouter:
    """`app.router` before a server attaches: routes added to it are recorded like the decorators'."""
    frozen = False

    def __init__(self, recorder: RouteRecorder):
        self._recorder = recorder

    def add_route(self, method: str, path: str, handler, **options) -> None:
        self._recorder._add((method.upper(), path, handler, options))

    def add_static(self, prefix: str, path, **options) -> "_RecordedResource":
        self._recorder._add(("STATIC", prefix, str(path), options))
        return _RecordedResource()

    def __getattr__(self, name: str):
        """add_get, add_post, ... (what aiohttp's route definitions call)."""
        method = name[4:] if name.startswith("add_") else ""
        if method not in ("get", "post", "put", "patch", "delete", "head", "view"):
            raise AttributeError(name)
        return lambda path, handler, **options: self.add_route("*" if method == "view" else method, path,
                                                               handler, **options)

    def routes(self) -> list:
        return []


class _RecordedResource:
    def get_info(self) -> dict:
        return {}


class PendingApp:
    """`PromptServer.instance.app` until the server attaches its aiohttp app (packs add routes to it
    at import time, as ComfyUI's app is built before packs load); under `vidgraph run` nothing serves
    them. aiohttp's route definitions register themselves on the router (`RouteDef.register`)."""
    frozen = False

    def __init__(self, recorder: RouteRecorder):
        self.router = PendingRouter(recorder)

    def add_routes(self, definitions) -> list:
        for definition in definitions:
            definition.register(self.router)
        return []


class PromptServer:
    instance: "PromptServer | None" = None

    def __init__(self, root: Path):
        self.routes = RouteRecorder()
        self.app = PendingApp(self.routes)   # the aiohttp application, once the server has attached
        self.loop = None
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.number = 0
        self.supports = ["custom_nodes_from_web"]
        self.prompt_queue = _PromptQueueFace()
        self.on_prompt_handlers: list[Callable] = []
        self.sockets: dict = {}
        self.web_root = str(root / "web")
        self.user_manager = None
        self.deliver: Callable[[str, Any, str | None], None] | None = None   # set by the server

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """An event for the websocket clients (the given one, else the running prompt's)."""
        if self.deliver is not None:
            self.deliver(event, data, sid)
            return
        ctx = current_context()
        if ctx is not None:
            ctx.send(event, data)

    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def send_progress_text(self, text: str, node_id: str, sid: str | None = None) -> None:
        self.send_sync("progress_text", {"text": text, "node_id": node_id}, sid)

    def add_on_prompt_handler(self, handler: Callable) -> None:
        self.on_prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: dict) -> dict:
        for handler in self.on_prompt_handlers:
            json_data = handler(json_data)
        return json_data

    def queue_updated(self) -> None:
        pass


def server_module(root: Path) -> ModuleType:
    module = compat_module("server", root)
    module.PromptServer = type("PromptServer", (PromptServer,), {})
    module.PromptServer.instance = module.PromptServer(root)
    module.BinaryEventTypes = BinaryEventTypes
    return module
