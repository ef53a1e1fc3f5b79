"""POST /prompt, the queue, the history, interrupt and free (ComfyUI's shapes)."""
from __future__ import annotations

import asyncio
import math
import uuid

from aiohttp import web

from .errors import ApiError, json_response, read_json_object
from .queue import PromptIdConflict, QueueFull, model_set
from .state import STATE, ServerState
from .store import body_hash

MAX_ID_LENGTH = 128
MAX_NUMBER = 1e15


def _optional_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH \
            or not value.isprintable():
        raise ApiError(400, "invalid_prompt",
                       f"{key} must be a printable string of 1 to {MAX_ID_LENGTH} characters")
    return value


def _id_list(body: dict, key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "invalid_request", f"{key} must be a list of prompt ids (strings)")
    return value


def _flag(body: dict, key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"{key} must be true or false")
    return value


def _parse_submission(body: dict, max_nodes: int) -> dict:
    if "prompt" not in body:
        raise ApiError(400, "no_prompt", "No prompt provided", "No prompt provided")
    prompt = body["prompt"]
    if not isinstance(prompt, dict):
        raise ApiError(400, "invalid_prompt", "prompt must be a JSON object of nodes",
                       f"got {type(prompt).__name__}")
    if len(prompt) > max_nodes:
        raise ApiError(413, "too_many_nodes",
                       f"Prompt has {len(prompt)} nodes; the limit is {max_nodes}")
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            raise ApiError(400, "invalid_prompt", "Cannot execute because a node is not an object.",
                           f"Node ID '#{node_id}'")
    extra_data = body.get("extra_data", {})
    if not isinstance(extra_data, dict):
        raise ApiError(400, "invalid_prompt", "extra_data must be a JSON object")
    extra_data = dict(extra_data)
    client_id = _optional_str(body, "client_id")
    if client_id is not None:
        extra_data["client_id"] = client_id
    else:
        client_id = _optional_str(extra_data, "client_id")
    number = body.get("number")
    if number is not None:
        if isinstance(number, bool) or not isinstance(number, (int, float)) \
                or not math.isfinite(number) or abs(number) > MAX_NUMBER:
            raise ApiError(400, "invalid_prompt", f"number must be a finite number within ±{MAX_NUMBER:g}")
    targets = _id_list(body, "partial_execution_targets")
    return {"prompt": prompt, "extra_data": extra_data, "client_id": client_id,
            "prompt_id": _optional_str(body, "prompt_id") or str(uuid.uuid4()),
            "number": number, "front": _flag(body, "front"), "partial_targets": targets}


async def post_prompt(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    limits = state.config.limits
    body = await read_json_object(request, limits.prompt_body, limits.json_depth)
    job = _parse_submission(body, limits.max_nodes)
    loop = asyncio.get_running_loop()
    prompt_id = job["prompt_id"]
    existing = await state.queue.find(prompt_id)
    if existing is not None:  # idempotent resubmission, answered without validating again
        if existing[0] != body_hash(job["prompt"], job["extra_data"], job["partial_targets"]):
            raise _conflict(prompt_id)
        return json_response({"prompt_id": prompt_id, "number": existing[1], "node_errors": {}})
    validation = await loop.run_in_executor(None, state.validate, state.registry, job["prompt"],
                                            job["partial_targets"])
    if not validation.ok:
        return json_response(validation.to_json(), status=400)
    try:
        number, created = await state.queue.submit(
            prompt_id, job["prompt"], job["extra_data"], list(validation.outputs),
            job["partial_targets"], job["client_id"], job["number"], job["front"],
            model_set=model_set(job["prompt"]))
    except PromptIdConflict:  # the same id arrived twice at once with different bodies
        raise _conflict(prompt_id) from None
    except QueueFull as full:
        raise ApiError(429, "queue_full",
                       f"The queue is full: {full.pending} prompts are waiting and the cap is "
                       f"{full.limit}. Try again when some have run.",
                       "queue cap reached", {"max_queue": full.limit, "pending": full.pending},
                       headers={"Retry-After": "5"}) from None
    if created:
        state.hub.queue_changed()
    return json_response({"prompt_id": prompt_id, "number": number,
                          "node_errors": validation.node_errors or {}})


def _conflict(prompt_id: str) -> ApiError:
    return ApiError(409, "prompt_id_conflict",
                    f"prompt_id {prompt_id!r} is already used by a different prompt")


async def get_prompt(request: web.Request) -> web.Response:
    queue = request.app[STATE].queue
    return json_response({"exec_info": {"queue_remaining": queue.queue_remaining()}})


async def get_queue(request: web.Request) -> web.Response:
    running, pending = await request.app[STATE].queue.queue()
    return json_response({"queue_running": running, "queue_pending": pending})


async def _clear_or_delete(request: web.Request, clear, delete) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await read_json_object(request, state.config.limits.json_body,
                                  state.config.limits.json_depth, allow_empty=True)
    ids = _id_list(body, "delete")
    if _flag(body, "clear"):
        await clear(None)
    if ids:
        await delete(ids)
    state.hub.queue_changed()
    return web.Response(status=200)


async def post_queue(request: web.Request) -> web.Response:
    queue = request.app[STATE].queue
    return await _clear_or_delete(request, queue.delete_queued, queue.delete_queued)


async def post_history(request: web.Request) -> web.Response:
    queue = request.app[STATE].queue
    return await _clear_or_delete(request, queue.delete_history, queue.delete_history)


def _query_int(request: web.Request, key: str, default: int | None, maximum: int) -> int | None:
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{key} must be an integer") from None
    if not 0 <= value <= maximum:
        raise ApiError(400, "invalid_request", f"{key} must be between 0 and {maximum}")
    return value


async def get_history(request: web.Request) -> web.Response:
    max_items = _query_int(request, "max_items", None, 1_000_000)
    offset = _query_int(request, "offset", None, 1_000_000_000)
    history = await request.app[STATE].queue.history(max_items, offset)
    return json_response(history)


JOB_STATE_HEADER = "X-Vidgraph-Job-State"


async def get_history_entry(request: web.Request) -> web.Response:
    """Done: ComfyUI's entry. Pending or running: ComfyUI's `{}`, and the state in a header.
    Unknown: 404."""
    prompt_id = request.match_info["prompt_id"]
    queue = request.app[STATE].queue
    entry = await queue.history(prompt_id=prompt_id)
    state = "done"
    if not entry:
        status = await queue.status_of(prompt_id)
        if status is None:
            raise ApiError(404, "unknown_prompt_id", f"No prompt with id {prompt_id!r}")
        state = status["state"]
        if state == "done":  # it finished between the two reads
            entry = await queue.history(prompt_id=prompt_id)
    response = json_response(entry or {})
    response.headers[JOB_STATE_HEADER] = state
    return response


async def get_job(request: web.Request) -> web.Response:
    """vidgraph's status of one prompt: queued | running | success | error | interrupted."""
    prompt_id = request.match_info["prompt_id"]
    status = await request.app[STATE].queue.status_of(prompt_id)
    if status is None:
        raise ApiError(404, "unknown_prompt_id", f"No prompt with id {prompt_id!r}")
    return json_response(status)


async def post_interrupt(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await read_json_object(request, state.config.limits.json_body,
                                  state.config.limits.json_depth, allow_empty=True)
    await state.queue.interrupt(_optional_str(body, "prompt_id"))
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await read_json_object(request, state.config.limits.json_body,
                                  state.config.limits.json_depth, allow_empty=True)
    unload_models, free_memory = _flag(body, "unload_models"), _flag(body, "free_memory")
    if unload_models or free_memory:  # ComfyUI does nothing for neither; the engine would do both
        await state.queue.request_free(unload_models, free_memory)
    return web.Response(status=200)


ROUTES = [
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("GET", "/history", get_history),
    ("POST", "/history", post_history),
    ("GET", "/history/{prompt_id}", get_history_entry),
    ("GET", "/vidgraph/jobs/{prompt_id}", get_job),
    ("POST", "/interrupt", post_interrupt),
    ("POST", "/free", post_free),
]
