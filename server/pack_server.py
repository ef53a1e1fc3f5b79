"""The server's part of ComfyUI's `server.PromptServer.instance` (the engine records the rest).

When the app is built, the server fills the `server` compatibility module through the registry's
seam: the routes packs recorded with `PromptServer.instance.routes.<method>(path)` are served (bare
and under /api, as ComfyUI does, ahead of the editor's static catch-all), `send_sync` reaches the
websocket clients from any thread, and `server.web` is aiohttp's `web`.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from vidgraph.engine.context import current_context

log = logging.getLogger("vidgraph.server")


def add_web(module, registry) -> None:
    """`server.web` is aiohttp's `web`, for packs, with or without a running server."""
    module.web = web


VIDGRAPH_COMPAT_FACES = {"server": add_web}


def attach_prompt_server(app: web.Application, registry, hub) -> None:
    def contribute(module, _registry) -> None:
        instance = module.PromptServer.instance
        add_web(module, _registry)
        instance.app = app
        instance.deliver = _deliverer(instance, hub)
        for entry in instance.routes:
            _serve(app, entry)
        instance.routes.listeners.append(lambda entry: _serve(app, entry))

        async def remember_loop(_app):
            instance.loop = asyncio.get_running_loop()

        app.on_startup.insert(0, remember_loop)

    if hasattr(registry, "add_compat_faces"):   # test stand-ins may not have the seam
        registry.add_compat_faces({"server": contribute})


def _deliverer(instance, hub):
    def deliver(event, data, sid):
        if not isinstance(event, str):
            return  # binary preview events of ComfyUI's own format are not relayed
        ctx = current_context()
        if sid is None and ctx is not None:
            ctx.send(event, data)   # the running prompt's client, through the executor
            return
        loop = instance.loop
        if loop is None or loop.is_closed():
            return
        send = (lambda: hub.broadcast(event, data)) if sid is None else (lambda: hub.send(sid, event, data))
        try:
            if _on_loop(loop):
                send()
            else:
                loop.call_soon_threadsafe(send)
        except RuntimeError:   # the loop has stopped: the server is going down
            pass
    return deliver


def _on_loop(loop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _serve(app: web.Application, entry: tuple) -> None:
    """Add one recorded route (and its /api twin); a route that clashes or comes too late is logged."""
    method, path, target, options = entry
    if app.frozen:
        log.warning("a node pack added route %s %s after the server started; it is not served", method, path)
        return
    for prefix in ("", "/api"):
        try:
            if method == "STATIC":
                app.router.add_static(prefix + path, target, **options)
            else:
                app.router.add_route(method, prefix + path, target, **options)
        except (ValueError, RuntimeError) as e:
            log.warning("node pack route %s %s not served: %s", method, prefix + path, e)
