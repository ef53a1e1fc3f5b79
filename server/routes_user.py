"""The editor's saved settings and workflows: a single-user subset of ComfyUI's user-data API.

Supported: GET /users, GET /userdata?dir=&recurse=&full_info=&split=, GET|POST|DELETE
/userdata/{file}, POST /userdata/{file}/move/{dest}, GET|POST /settings, GET|POST
/settings/{id}. Files live in <user dir>/default/ (the queue database sits beside it, out of
reach). Stored files are served as JSON when they parse as JSON, else as downloads
(CVE-2026-56672: never with a content type guessed from the name).
"""
from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

from aiohttp import web

from .errors import ApiError, json_response, parse_json, read_body, read_json_object
from .routes_files import contained, content_disposition, path_conflicts
from .state import STATE, ServerState

SETTINGS_FILE = "comfy.settings.json"


def _root(state: ServerState) -> Path:
    root = state.config.userdata_root
    root.mkdir(parents=True, exist_ok=True)
    return root


def _user_path(state: ServerState, relative: str) -> Path:
    path = contained(_root(state), relative, what="user-data path")
    if path == _root(state):
        raise ApiError(400, "invalid_path", "A file name is required")
    return path


def _flag(request: web.Request, key: str, default: bool) -> bool:
    raw = request.query.get(key)
    return default if raw is None else raw.lower() in ("true", "1", "yes")


def _info(path: Path, root: Path) -> dict:
    stat = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": stat.st_size,
            "modified": int(stat.st_mtime * 1000), "created": int(stat.st_ctime * 1000)}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".userdata-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


async def get_users(request: web.Request) -> web.Response:
    return json_response({"storage": "server", "migrated": True})


async def list_userdata(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    directory = request.query.get("dir", "")
    base = _user_path(state, directory) if directory else _root(state)
    if not base.is_dir():
        raise ApiError(404, "not_found", f"No user-data folder {directory!r}")
    recurse, full_info, split = (_flag(request, k, False) for k in ("recurse", "full_info", "split"))
    files = sorted(p for p in (base.rglob("*") if recurse else base.iterdir())
                   if p.is_file() and not p.name.startswith("."))
    if full_info:
        return json_response([_info(p, base) for p in files])
    names = [p.relative_to(base).as_posix() for p in files]
    if split:
        return json_response([[n, *n.split("/")] for n in names])
    return json_response(names)


async def get_userdata(request: web.Request) -> web.Response:
    path = _user_path(request.app[STATE], request.match_info["file"])
    if not path.is_file():
        raise ApiError(404, "not_found", "No such user-data file")
    data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
    headers = {"X-Content-Type-Options": "nosniff",
               "Content-Security-Policy": "default-src 'none'; sandbox"}
    try:
        json.loads(data)
        content_type = "application/json"
    except ValueError:
        content_type = "application/octet-stream"
        headers["Content-Disposition"] = content_disposition("attachment", path.name)
    return web.Response(body=data, content_type=content_type, headers=headers)


async def post_userdata(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    relative = request.match_info["file"]
    path = _user_path(state, relative)
    if path.exists() and not _flag(request, "overwrite", True):
        raise ApiError(409, "file_exists", f"User-data file {relative!r} exists")
    if path.is_dir():
        raise ApiError(400, "invalid_path", f"{relative!r} is a folder")
    data = await read_body(request, state.config.limits.userdata)
    with path_conflicts():
        await asyncio.get_running_loop().run_in_executor(None, _atomic_write, path, data)
    if _flag(request, "full_info", False):
        return json_response(_info(path, _root(state)))
    return json_response(path.relative_to(_root(state)).as_posix())


async def delete_userdata(request: web.Request) -> web.Response:
    path = _user_path(request.app[STATE], request.match_info["file"])
    if not path.is_file():
        raise ApiError(404, "not_found", "No such user-data file")
    path.unlink()
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    source = _user_path(state, request.match_info["file"])
    dest = _user_path(state, request.match_info["dest"])
    if not source.is_file():
        raise ApiError(404, "not_found", "No such user-data file")
    if dest.exists() and not _flag(request, "overwrite", True):
        raise ApiError(409, "file_exists", "Destination exists")
    with path_conflicts():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
    if _flag(request, "full_info", False):
        return json_response(_info(dest, _root(state)))
    return json_response(dest.relative_to(_root(state)).as_posix())


def _load_settings(state: ServerState) -> dict:
    path = _root(state) / SETTINGS_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


async def get_settings(request: web.Request) -> web.Response:
    return json_response(_load_settings(request.app[STATE]))


async def get_setting(request: web.Request) -> web.Response:
    return json_response(_load_settings(request.app[STATE]).get(request.match_info["id"]))


async def _save_settings(state: ServerState, update: dict) -> None:
    async with state.settings_lock:  # read-modify-write: concurrent posts must not lose keys
        settings = _load_settings(state)
        settings.update(update)
        data = json.dumps(settings, indent=1).encode()
        await asyncio.get_running_loop().run_in_executor(
            None, _atomic_write, _root(state) / SETTINGS_FILE, data)


async def post_settings(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    limits = state.config.limits
    await _save_settings(state, await read_json_object(request, limits.json_body, limits.json_depth))
    return web.Response(status=200)


async def post_setting(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    limits = state.config.limits
    value = parse_json(await read_body(request, limits.json_body), limits.json_depth)
    await _save_settings(state, {request.match_info["id"]: value})
    return web.Response(status=200)


ROUTES = [
    ("GET", "/users", get_users),
    ("GET", "/userdata", list_userdata),
    ("GET", "/userdata/{file}", get_userdata),
    ("POST", "/userdata/{file}", post_userdata),
    ("DELETE", "/userdata/{file}", delete_userdata),
    ("POST", "/userdata/{file}/move/{dest}", move_userdata),
    ("GET", "/settings", get_settings),
    ("GET", "/settings/{id}", get_setting),
    ("POST", "/settings", post_settings),
    ("POST", "/settings/{id}", post_setting),
]
