"""The application factory: `create_app(config)` wires registry, executor, store, worker and hub.

Every API route is registered twice, bare and under /api (scripts use the first, ComfyUI's
frontend the second); the editor's static files and plugin web folders are not duplicated and
the static catch-all comes last, so it can never shadow an API route.
"""
from __future__ import annotations

import logging

from aiohttp import web

from vidgraph.runtime import build_registry

from . import routes_files, routes_info, routes_prompt, routes_queue, routes_user
from .routes_info import features
from .pack_server import attach_prompt_server
from .progress_state import ProgressStateRelay
from .security import GuardPolicy, error_middleware, guard_middleware
from .state import STATE, UNEXPECTED_ERRORS, ServerConfig, ServerState
from .queue import instance_id
from .ws import Hub, HubLimits

log = logging.getLogger("vidgraph.server")

API_ROUTES = routes_prompt.ROUTES + routes_queue.ROUTES + routes_files.ROUTES + routes_info.ROUTES + routes_user.ROUTES


def create_app(config: ServerConfig, registry=None, executor=None, validate=None) -> web.Application:
    """A ready aiohttp application; the engine parts can be handed in (tests use stand-ins)."""
    if config.enable_cors_header == "*":
        raise ValueError("--enable-cors-header needs one exact origin, not '*'")
    config.folders.ensure_dirs()
    if registry is None:  # the configured module packs, then the custom-node folders
        registry = build_registry(config.folders, config.node_packs, config.custom_node_dirs,
                                  entry_points=False, report=log.warning)
    if executor is None and not config.queue_url:  # with Redis, workers run the prompts
        from vidgraph.engine.executor import Executor

        executor = Executor(registry, config.folders, settings=config.settings)
    if validate is None:
        from vidgraph.engine.validation import validate_prompt as validate

    limits = config.limits
    multipart = frozenset(p for path in routes_files.MULTIPART_PATHS for p in (path, "/api" + path))
    policy = GuardPolicy(bind_host=config.host, allowed_hosts=set(config.allowed_hosts),
                         cors_origin=config.enable_cors_header, multipart_paths=multipart)
    app = web.Application(middlewares=[error_middleware, guard_middleware(policy)],
                          client_max_size=limits.upload)
    state = ServerState(config=config, registry=registry, executor=executor, validate=validate,
                        queue=build_queue(config, executor),
                        instance_id=instance_id(config.folders.user_dir))
    app[STATE] = state
    app[UNEXPECTED_ERRORS] = 0
    queue = state.queue
    state.hub = Hub(queue.queue_remaining,
                    HubLimits(limits.ws_clients, limits.ws_message, limits.ws_send_queue,
                              limits.ws_heartbeat),
                    features=features(state), current_node=queue.current_node,
                    paused=lambda: queue.paused)

    for prefix in ("", "/api"):
        app.router.add_get(prefix + "/ws", state.hub.handle)
        for method, path, handler in API_ROUTES:
            app.router.add_route(method, prefix + path, handler)
    attach_prompt_server(app, registry, state.hub)   # packs' routes, before the static catch-all
    for method, path, handler in routes_info.STATIC_ROUTES:
        app.router.add_route(method, path, handler)

    app.on_startup.append(_start)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


def build_queue(config: ServerConfig, executor):
    """The queue backend: Redis Streams when a queue URL is configured, else embedded SQLite."""
    if config.queue_url:
        try:
            from .queue_redis import RedisQueue  # imports redis-py, an optional extra
        except ImportError as e:
            raise ValueError(f"--queue needs the redis package ({e}): "
                             "pip install 'vidgraph[redis]'") from None

        return RedisQueue(config.queue_url, max_queue=config.limits.max_queue,
                          max_history=config.limits.max_history,
                          max_attempts=config.max_attempts)
    from .queue_sqlite import SqliteQueue
    from .store import Store

    store = Store(config.database_path, max_attempts=config.max_attempts,
                  max_history=config.limits.max_history)
    return SqliteQueue(store, executor, max_queue=config.limits.max_queue)


async def _start(app: web.Application) -> None:
    state = app[STATE]
    await state.queue.start(ProgressStateRelay(state.hub.send).deliver, state.hub.queue_changed)


async def _shutdown(app: web.Application) -> None:
    await app[STATE].hub.close_all()


async def _cleanup(app: web.Application) -> None:
    await app[STATE].queue.close()
