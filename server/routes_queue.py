"""vidgraph's queue controls: pause/resume, reorder, cancel by id, the queue panel's list.

Backend-neutral: every call goes to `app[STATE].queue` (docs/ARCHITECTURE.md, "Queue backends").
"""
from __future__ import annotations

from aiohttp import web

from .errors import ApiError, json_response, read_json_object
from .queue import NotPending
from .routes_prompt import MAX_ID_LENGTH
from .state import STATE, ServerState


async def _body(request: web.Request) -> dict:
    limits = request.app[STATE].config.limits
    return await read_json_object(request, limits.json_body, limits.json_depth, allow_empty=True)


def _prompt_id(value) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ApiError(400, "invalid_request", "prompt_id must be a prompt id (a string)")
    return value


async def _on_job(request: web.Request, prompt_id: str, action) -> web.Response:
    """Run a control on one job; 404 when unknown, 409 when it is past being controlled."""
    state: ServerState = request.app[STATE]
    try:
        answer = await action
    except KeyError:
        raise ApiError(404, "unknown_prompt_id", f"No prompt with id {prompt_id!r}") from None
    except NotPending as e:
        raise ApiError(409, "not_pending", f"Prompt {prompt_id!r} is not pending (it is {e.status})",
                       extra_info={"status": e.status}) from None
    state.hub.queue_changed()
    return json_response({"prompt_id": prompt_id, **answer})


async def get_queue_panel(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    running, pending = await state.queue.queue_details()
    return json_response({"paused": state.queue.paused, "backend": state.queue.backend,
                          "max_queue": state.config.limits.max_queue,
                          "running": running, "pending": pending})


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    state: ServerState = request.app[STATE]
    await _body(request)  # refuses a non-JSON body like every other JSON endpoint
    await state.queue.set_paused(paused)
    state.hub.queue_changed()
    return json_response({"paused": paused})


async def pause(request: web.Request) -> web.Response:
    return await _set_paused(request, True)


async def resume(request: web.Request) -> web.Response:
    return await _set_paused(request, False)


async def move(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await _body(request)
    prompt_id = _prompt_id(body.get("prompt_id"))
    front = body.get("front", False)
    position = body.get("position")
    if front is True and position is None:
        position = 0
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ApiError(400, "invalid_request",
                       "give position (an integer >= 0; 0 runs next) or front: true")
    return await _on_job(request, prompt_id, _answer("position", state.queue.move(prompt_id, position)))


async def cancel(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    await _body(request)
    prompt_id = request.match_info["prompt_id"]
    return await _on_job(request, prompt_id, _answer("was", state.queue.cancel(prompt_id)))


async def _answer(key: str, action) -> dict:
    return {key: await action}


async def dead_letters(request: web.Request) -> web.Response:
    return json_response({"dead": await request.app[STATE].queue.dead_letters()})


ROUTES = [
    ("GET", "/vidgraph/queue", get_queue_panel),
    ("GET", "/vidgraph/queue/dead", dead_letters),
    ("POST", "/vidgraph/queue/pause", pause),
    ("POST", "/vidgraph/queue/resume", resume),
    ("POST", "/vidgraph/queue/move", move),
    ("POST", "/vidgraph/jobs/{prompt_id}/cancel", cancel),
]
