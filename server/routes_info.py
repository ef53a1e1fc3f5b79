"""Node definitions, system facts, extensions, bundled workflows and the editor's static files."""
from __future__ import annotations

import asyncio
import importlib.resources
import json
import os
import platform
import re
import sys
from pathlib import Path

from aiohttp import web

import vidgraph
from .errors import ApiError, json_response
from .routes_files import contained, content_disposition
from .state import STATE, ServerState

REPO_ROOT = Path(__file__).resolve().parent.parent
STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
                ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml",
                ".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp",
                ".ico": "image/x-icon", ".woff2": "font/woff2", ".map": "application/json",
                ".txt": "text/plain"}


def package_dir(package: str, fallback: str) -> Path:
    """A data package's folder when installed, else the repository's folder of that name."""
    try:
        path = Path(str(importlib.resources.files(package)))
        if path.is_dir():
            return path
    except (ModuleNotFoundError, TypeError):
        pass
    return REPO_ROOT / fallback


async def object_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    info = await asyncio.get_running_loop().run_in_executor(None, state.registry.object_info)
    return json_response(info)


async def object_info_one(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["node_class"]
    if name not in state.registry.classes:
        return json_response({})  # ComfyUI's answer for an unknown class
    info = await asyncio.get_running_loop().run_in_executor(None, state.registry.object_info, name)
    return json_response(info)


def _ram() -> tuple[int, int]:
    try:
        with open("/proc/meminfo") as f:
            values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return values["MemTotal"], values.get("MemAvailable", values["MemFree"])
    except (OSError, KeyError, ValueError, IndexError):
        return 0, 0


async def system_stats(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    settings = state.config.settings
    ram_total, ram_free = _ram()
    device = str(settings.get("device", "auto"))
    stats = {
        "system": {"os": os.name, "ram_total": ram_total, "ram_free": ram_free,
                   "vidgraph_version": vidgraph.__version__, "comfyui_version": "0.3.64",
                   "python_version": sys.version, "platform": platform.platform(),
                   "embedded_python": False, "argv": sys.argv,
                   "instance_id": state.instance_id, "queue_backend": state.queue.backend},
        # The server does not import torch; the device is what the engine was told to use.
        "devices": [{"name": device, "type": device.split(":")[0], "index": 0,
                     "vram_total": 0, "vram_free": 0, "torch_vram_total": 0,
                     "torch_vram_free": 0}]}
    workers = await state.queue.workers()
    if state.queue.backend != "sqlite":
        stats["workers"] = workers
    return json_response(stats)


def features(state: ServerState) -> dict:
    return {"supports_preview_metadata": True, "max_upload_size": state.config.limits.upload}


async def get_features(request: web.Request) -> web.Response:
    return json_response(features(request.app[STATE]))


async def node_packs(request: web.Request) -> web.Response:
    """Which packs loaded and which failed (a failing pack never stops the server)."""
    registry = request.app[STATE].registry
    errors = [{"pack": e.pack, "path": str(e.path), "reason": e.reason}
              for e in registry.load_errors]
    return json_response({"packs": list(registry.loaded_packs), "errors": errors,
                          "web_directories": sorted(registry.web_directories)})


def _web_root(state: ServerState) -> Path:
    return state.config.web_root or package_dir("vidgraph.web", "web")


async def extensions(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    urls = []
    core = _web_root(state) / "extensions"
    if core.is_dir():
        urls += [f"/extensions/{p.relative_to(core).as_posix()}" for p in sorted(core.rglob("*.js"))]
    for pack, directory in sorted(state.registry.web_directories.items()):
        directory = Path(directory)
        if directory.is_dir():
            urls += [f"/extensions/{pack}/{p.relative_to(directory).as_posix()}"
                     for p in sorted(directory.rglob("*.js"))]
    return json_response(urls)


def static_file(root: Path, relative: str) -> web.FileResponse:
    try:
        path = contained(root, relative)
    except ApiError:
        raise ApiError(404, "not_found", "No such file") from None
    if path.is_dir():
        path = path / "index.html"
    if not path.is_file():
        raise ApiError(404, "not_found", "No such file")
    content_type = STATIC_TYPES.get(path.suffix.lower(), "application/octet-stream")
    headers = {"Content-Type": content_type, "X-Content-Type-Options": "nosniff"}
    if path.suffix.lower() in (".html", ".js", ".mjs", ".css", ".json"):
        headers["Cache-Control"] = "no-cache"
    return web.FileResponse(path, headers=headers)


async def extension_file(request: web.Request) -> web.FileResponse:
    """A pack's WEB_DIRECTORY under /extensions/{pack}/, else the editor's own extensions/."""
    state: ServerState = request.app[STATE]
    pack, rest = request.match_info["pack"], request.match_info["path"]
    directory = state.registry.web_directories.get(pack)
    if directory is not None:
        return static_file(Path(directory), rest)
    return static_file(_web_root(state) / "extensions", f"{pack}/{rest}")


async def web_file(request: web.Request) -> web.FileResponse:
    return static_file(_web_root(request.app[STATE]), request.match_info.get("path") or "index.html")


# -- bundled workflows (the editor's "Workflows" menu) -------------------------------------------

def _workflows_root(state: ServerState) -> Path:
    return state.config.workflows_root or package_dir("vidgraph.workflows", "workflows")


def _describe_workflow(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = "ui" if isinstance(data, dict) and "nodes" in data and "links" in data else "api"
    entry = {"name": path.stem, "file": path.name, "format": kind}
    # The editor opens the laid-out twin in ui/ (room for previews, the seed's control kept).
    if kind == "api" and (path.parent / "ui" / path.name).is_file():
        entry["ui_file"] = f"ui/{path.name}"
    return entry


async def list_workflows(request: web.Request) -> web.Response:
    root = _workflows_root(request.app[STATE])
    files = sorted(root.glob("*.json")) if root.is_dir() else []
    entries = await asyncio.get_running_loop().run_in_executor(
        None, lambda: [d for d in map(_describe_workflow, files) if d is not None])
    return json_response(entries)


async def get_workflow(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if not name.endswith(".json"):
        name += ".json"
    root = _workflows_root(request.app[STATE])
    if request.match_info.get("ui"):
        root = root / "ui"
    contained(root, name, what="workflow name")  # 400 for a climbing or over-long name
    response = static_file(root, name)
    response.headers["Content-Disposition"] = content_disposition("inline", name)
    return response


# -- what the editor opens at start (`vidgraph serve --show`) ------------------------------------

def newest_outputs(output_dir: Path, wanted: str) -> list[dict]:
    """An output file, or a saver's filename prefix ("vidgraph/demo"): its newest file of each kind
    (savers share one counter, so one run writes demo_00003_.webp and demo_00004_.mp4), as /view
    entries. Nothing outside the output folder."""
    if wanted.startswith("/") or not wanted.strip("/"):
        raise ApiError(400, "invalid_path", "Refused output name", "a path inside the output folder, not an absolute one")
    path = contained(output_dir, *wanted.split("/"), what="output name")
    if path.is_file():
        files = [path]
    else:
        stem = path.name + "_"
        newest: dict[str, tuple[int, Path]] = {}
        for f in (path.parent.iterdir() if path.parent.is_dir() else ()):
            m = re.fullmatch(r"(\d+)_?\.(\w+)", f.name[len(stem):]) if f.name.startswith(stem) else None
            if m and f.is_file() and int(m.group(1)) > newest.get(m.group(2).lower(), (-1, f))[0]:
                newest[m.group(2).lower()] = (int(m.group(1)), f)
        files = sorted(f for _, f in newest.values())
    subfolder = lambda f: "" if f.parent == output_dir else f.parent.relative_to(output_dir).as_posix()
    return [{"filename": f.name, "subfolder": subfolder(f), "type": "output"} for f in files]


async def startup(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    wanted = request.query.getall("show", []) or state.config.show
    output_dir = Path(state.config.folders.output_dir).resolve()
    files = await asyncio.get_running_loop().run_in_executor(
        None, lambda: [entry for w in wanted for entry in newest_outputs(output_dir, w)])
    return json_response({"id": state.config.startup_id, "show": files})


ROUTES = [
    ("GET", "/object_info", object_info),
    ("GET", "/object_info/{node_class}", object_info_one),
    ("GET", "/system_stats", system_stats),
    ("GET", "/features", get_features),
    ("GET", "/extensions", extensions),
    ("GET", "/vidgraph/node_packs", node_packs),
    ("GET", "/vidgraph/workflows", list_workflows),
    ("GET", "/vidgraph/workflows/{name}", get_workflow),
    ("GET", "/vidgraph/workflows/{ui:ui}/{name}", get_workflow),
    ("GET", "/vidgraph/startup", startup),
]
# Static routes are registered without the /api twin, and the catch-all last.
STATIC_ROUTES = [
    ("GET", "/extensions/{pack}/{path:.+}", extension_file),
    ("GET", "/{path:.*}", web_file),
]
