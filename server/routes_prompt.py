"""POST /prompt, the queue, the history, interrupt and free (ComfyUI's shapes)."""
from __future__ import annotations

import asyncio
import math
import uuid

from aiohttp import web

from .errors import ApiError, json_response, read_json_object
from .state import STATE, ServerState
from .store import PromptIdConflict, body_hash

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
    existing = await loop.run_in_executor(None, state.store.find, prompt_id)
    if existing is not None:  # idempotent resubmission, answered without validating again
        if existing[0] != body_hash(job["prompt"], job["extra_data"], job["partial_targets"]):
            raise _conflict(prompt_id)
        return json_response({"prompt_id": prompt_id, "number": existing[1], "node_errors": {}})
    validation = await loop.run_in_executor(None, state.validate, state.registry, job["prompt"],
                                            job["partial_targets"])
    if not validation.ok:
        return json_response(validation.to_json(), status=400)
    try:
        number, created = await loop.run_in_executor(None, lambda: state.store.submit(
            prompt_id, job["prompt"], job["extra_data"], list(validation.outputs),
            job["partial_targets"], job["client_id"], job["number"], job["front"]))
    except PromptIdConflict:  # the same id arrived twice at once with different bodies
        raise _conflict(prompt_id) from None
    if created:
        state.worker.wake()
        state.hub.queue_changed()
    return json_response({"prompt_id": prompt_id, "number": number,
                          "node_errors": validation.node_errors or {}})


def _conflict(prompt_id: str) -> ApiError:
    return ApiError(409, "prompt_id_conflict",
                    f"prompt_id {prompt_id!r} is already used by a different prompt")


async def get_prompt(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    return json_response({"exec_info": {"queue_remaining": store.queue_remaining()}})


async def get_queue(request: web.Request) -> web.Response:
    running, pending = request.app[STATE].store.queue()
    return json_response({"queue_running": running, "queue_pending": pending})


async def _clear_or_delete(request: web.Request, clear, delete) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await read_json_object(request, state.config.limits.json_body,
                                  state.config.limits.json_depth, allow_empty=True)
    ids = _id_list(body, "delete")
    loop = asyncio.get_running_loop()
    if _flag(body, "clear"):
        await loop.run_in_executor(None, clear)
    if ids:
        await loop.run_in_executor(None, delete, ids)
    state.hub.queue_changed()
    return web.Response(status=200)


async def post_queue(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    return await _clear_or_delete(request, lambda: store.delete_queued(None), store.delete_queued)


async def post_history(request: web.Request) -> web.Response:
    store = request.app[STATE].store
    return await _clear_or_delete(request, lambda: store.delete_history(None), store.delete_history)


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
    store = request.app[STATE].store
    history = await asyncio.get_running_loop().run_in_executor(None, store.history, max_items, offset)
    return json_response(history)


async def get_history_entry(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    store = request.app[STATE].store
    entry = store.history(prompt_id=prompt_id)
    if entry:
        return json_response(entry)
    if store.status_of(prompt_id) is None:
        raise ApiError(404, "unknown_prompt_id", f"No prompt with id {prompt_id!r}")
    return json_response({})  # ComfyUI's answer while the prompt is queued or running


async def get_job(request: web.Request) -> web.Response:
    """vidgraph's status of one prompt: queued | running | success | error | interrupted."""
    prompt_id = request.match_info["prompt_id"]
    status = request.app[STATE].store.status_of(prompt_id)
    if status is None:
        raise ApiError(404, "unknown_prompt_id", f"No prompt with id {prompt_id!r}")
    return json_response(status)


async def post_interrupt(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await read_json_object(request, state.config.limits.json_body,
                                  state.config.limits.json_depth, allow_empty=True)
    state.worker.interrupt(_optional_str(body, "prompt_id"))
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    body = await read_json_object(request, state.config.limits.json_body,
                                  state.config.limits.json_depth, allow_empty=True)
    unload_models, free_memory = _flag(body, "unload_models"), _flag(body, "free_memory")
    if unload_models or free_memory:  # ComfyUI does nothing for neither; the engine would do both
        state.worker.request_free(unload_models, free_memory)
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
