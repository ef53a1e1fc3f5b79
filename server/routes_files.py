"""Files: /view, /upload/image, /upload/mask, and the model folder listings.

Every name from a request is checked part by part (`check_part`: 400 for `..`, absolute paths,
backslashes, NUL, encoded dots) and then resolved by real path inside its root (`safe_join`:
403 when a symlink leads out).
"""
from __future__ import annotations

import asyncio
import io
import mimetypes
import os
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from PIL import Image, PngImagePlugin

from vidgraph.engine.paths import UnsafePathError, check_part, safe_join

from .errors import ApiError, json_response, parse_json
from .state import STATE, ServerState
from .uploads import check_image, safe_name, write_upload

# Served inline; anything else is a download (CVE-2024-10099, CVE-2026-56670: no html/svg/js).
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/avif",
                          "image/bmp", "video/mp4", "video/webm", "video/quicktime",
                          "video/x-matroska", "application/x-vidgraph-latent"})
EXTRA_TYPES = {".latent": "application/x-vidgraph-latent", ".webp": "image/webp",
               ".avif": "image/avif", ".mkv": "video/x-matroska", ".webm": "video/webm"}
MAX_FORM_FIELDS = 16
MAX_TEXT_FIELD = 64 * 1024
MAX_NAME_BYTES = 255     # one file or folder name (NAME_MAX on Linux, macOS and Windows)
MAX_PATH_BYTES = 1024    # all the parts of one request's path together, well below PATH_MAX


def contained(root: Path, *parts: str, what: str = "path") -> Path:
    """`parts` joined under `root`: 400 for a part that could climb or that no file system
    accepts (too long), 403 when the real path leads out of `root` (a symlink)."""
    try:
        pieces = [piece for part in parts for piece in check_part(part)]
    except UnsafePathError as e:
        raise ApiError(400, "invalid_path", f"Refused {what}", str(e)) from None
    if any(len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in pieces) \
            or len("/".join(pieces).encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ApiError(400, "invalid_path", f"Refused {what}",
                       f"names are limited to {MAX_NAME_BYTES} bytes, paths to {MAX_PATH_BYTES}")
    try:
        return safe_join(root, *parts)
    except UnsafePathError as e:
        raise ApiError(403, "path_outside_root", f"The {what} is outside its folder",
                       str(e)) from None


@contextmanager
def path_conflicts():
    """A file where a folder is needed (or the reverse) is the client's conflict, not a 500."""
    try:
        yield
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as e:
        raise ApiError(409, "path_conflict",
                       "A file stands where a folder is needed, or a folder where a file is",
                       e.strerror or "") from None


def resolve(state: ServerState, filename: str, subfolder: str, type_: str) -> Path:
    """The file a (filename, subfolder, type) triple names, contained in its folder."""
    folders = state.config.folders
    bare, directory = folders.annotated_filepath(filename)
    if directory is None:
        if type_ not in ("input", "output", "temp"):
            raise ApiError(400, "invalid_type", f"type must be input, output or temp, not {type_!r}")
        directory = folders.directory_for(type_)
    if not bare:
        raise ApiError(400, "invalid_filename", "filename is required")
    return contained(directory, subfolder, bare, what="file name")


def content_disposition(kind: str, name: str) -> str:
    ascii_name = "".join(c if c.isalnum() or c in "._- ()" else "_" for c in name)[:150]
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def file_headers(path: Path) -> dict:
    content_type = EXTRA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] \
        or "application/octet-stream"
    inline = content_type in INLINE_TYPES
    if not inline:
        content_type = "application/octet-stream"
    return {"Content-Type": content_type,
            "Content-Disposition": content_disposition("inline" if inline else "attachment",
                                                       path.name),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox"}


async def view(request: web.Request) -> web.StreamResponse:
    state: ServerState = request.app[STATE]
    query = request.query
    path = resolve(state, query.get("filename", ""), query.get("subfolder", ""),
                   query.get("type") or "output")
    if not path.is_file():
        raise ApiError(404, "not_found", "File not found")
    preview, channel = query.get("preview"), query.get("channel", "rgba")
    if channel not in ("rgba", "rgb", "a"):
        raise ApiError(400, "invalid_request", "channel must be rgba, rgb or a")
    headers = file_headers(path)
    if (preview or channel != "rgba") and headers["Content-Type"].startswith("image/"):
        data, content_type = await asyncio.get_running_loop().run_in_executor(
            None, reencode, path, preview, channel)
        headers["Content-Type"] = content_type
        return web.Response(body=data, headers=headers)
    return web.FileResponse(path, headers=headers)


def reencode(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    """ComfyUI's `preview=webp;90` / `channel=rgb|a` conversions of an image file."""
    image_format, quality = "png", 90
    if preview:
        kind, _, q = preview.partition(";")
        if kind not in ("webp", "jpeg") or (q and not q.isdigit()):
            raise ApiError(400, "invalid_request", "preview must be webp;Q or jpeg;Q")
        image_format, quality = kind, min(int(q or 90), 100)
    try:
        with Image.open(path) as img:
            if channel == "a":
                img = img.convert("RGBA").getchannel("A")
                image_format = "png" if not preview else image_format
            elif channel == "rgb" or image_format == "jpeg":
                img = img.convert("RGB")
            out = io.BytesIO()
            img.save(out, format=image_format.upper(), quality=quality)
    except ApiError:
        raise
    except Exception as e:
        raise ApiError(400, "invalid_image", "Cannot convert this file", str(e)) from None
    return out.getvalue(), f"image/{image_format}"


async def read_form(request: web.Request, limit: int) -> dict:
    """Multipart fields: text fields as str, file fields as (filename, bytes); 413 past `limit`."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"Upload exceeds the limit of {limit} bytes")
    fields: dict = {}
    total = 0
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if len(fields) >= MAX_FORM_FIELDS:
                raise ApiError(413, "too_many_fields", f"More than {MAX_FORM_FIELDS} form fields")
            chunks = []
            while chunk := await part.read_chunk(65536):
                total += len(chunk)
                if total > limit:
                    raise ApiError(413, "body_too_large", f"Upload exceeds the limit of {limit} bytes")
                chunks.append(chunk)
            data = b"".join(chunks)
            if part.filename is not None:
                fields[part.name] = (part.filename, data)
            elif len(data) > MAX_TEXT_FIELD:
                raise ApiError(413, "body_too_large", f"Form field {part.name!r} is too long")
            else:
                fields[part.name] = data.decode("utf-8", errors="replace")
    except (ApiError, web.HTTPException):
        raise
    except Exception as e:  # aiohttp raises plain errors for NUL/CRLF names, bad boundaries ...
        raise ApiError(400, "invalid_form", "Malformed multipart form", str(e)) from None
    return fields


def _upload_target(state: ServerState, fields: dict) -> Path:
    type_ = fields.get("type") or "input"
    if not isinstance(type_, str) or type_ not in ("input", "output", "temp"):
        raise ApiError(400, "invalid_type", "type must be input, output or temp")
    subfolder = fields.get("subfolder") or ""
    if not isinstance(subfolder, str):
        raise ApiError(400, "invalid_path", "subfolder must be a text field")
    return contained(state.config.folders.directory_for(type_), subfolder, what="subfolder")


def _file_field(fields: dict, key: str) -> tuple[str, bytes]:
    value = fields.get(key)
    if not isinstance(value, tuple):
        raise ApiError(400, "invalid_form", f"Form field {key!r} must be a file")
    return value


async def upload_image(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE]
    limits = state.config.limits
    fields = await read_form(request, limits.upload)
    filename, data = _file_field(fields, "image")
    directory = _upload_target(state, fields)
    image_format, _ = await asyncio.get_running_loop().run_in_executor(
        None, check_image, data, limits.max_pixels, limits.max_frames)
    return await _save_upload(state, fields, directory, filename, image_format, data)


async def _save_upload(state: ServerState, fields: dict, directory: Path, filename: str,
                       image_format: str, data: bytes) -> web.Response:
    """Write a checked upload under a safe name; ComfyUI's {"name", "subfolder", "type"}."""
    overwrite = str(fields.get("overwrite", "")).lower() in ("true", "1")
    with path_conflicts():
        name = await asyncio.get_running_loop().run_in_executor(
            None, write_upload, directory, safe_name(filename, image_format, data), data, overwrite)
    type_ = fields.get("type") or "input"
    subfolder = os.path.relpath(directory, state.config.folders.directory_for(type_))
    return json_response({"name": name,
                          "subfolder": "" if subfolder == "." else subfolder.replace(os.sep, "/"),
                          "type": type_})


async def upload_mask(request: web.Request) -> web.Response:
    """The uploaded mask's alpha painted onto the original image (ComfyUI's mask editor)."""
    state: ServerState = request.app[STATE]
    limits = state.config.limits
    fields = await read_form(request, limits.upload)
    filename, data = _file_field(fields, "image")
    ref = fields.get("original_ref")
    if not isinstance(ref, str):
        raise ApiError(400, "invalid_form", "original_ref is required (JSON filename/subfolder/type)")
    ref = parse_json(ref.encode(), limits.json_depth)
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str) \
            or not isinstance(ref.get("subfolder", ""), str) or not isinstance(ref.get("type", "input"), str):
        raise ApiError(400, "invalid_form", "original_ref must hold filename, subfolder and type strings")
    original = resolve(state, ref["filename"], ref.get("subfolder", ""), ref.get("type", "input"))
    if not original.is_file():
        raise ApiError(404, "not_found", "original_ref names no file")
    directory = _upload_target(state, fields)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, check_image, data, limits.max_pixels, limits.max_frames)
    original_bytes = await loop.run_in_executor(None, original.read_bytes)
    await loop.run_in_executor(None, check_image, original_bytes, limits.max_pixels, limits.max_frames)
    merged = await loop.run_in_executor(None, apply_mask, original_bytes, data)
    return await _save_upload(state, fields, directory, filename, "PNG", merged)


def apply_mask(original: bytes, mask: bytes) -> bytes:
    with Image.open(io.BytesIO(original)) as img, Image.open(io.BytesIO(mask)) as mask_img:
        info = PngImagePlugin.PngInfo()
        for key, value in img.info.items():  # keep the embedded workflow text chunks
            if isinstance(key, str) and isinstance(value, str):
                info.add_text(key, value)
        alpha = mask_img.convert("RGBA").getchannel("A").resize(img.size)
        result = img.convert("RGBA")
        result.putalpha(alpha)
        out = io.BytesIO()
        result.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


async def get_models(request: web.Request) -> web.Response:
    folders = request.app[STATE].config.folders
    return json_response(sorted(folders.folder_names_and_paths))


async def get_model_folder(request: web.Request) -> web.Response:
    folders = request.app[STATE].config.folders
    folder = request.match_info["folder"]
    if folder not in folders.folder_names_and_paths:
        raise ApiError(404, "unknown_folder", f"No model folder {folder!r}")
    names = await asyncio.get_running_loop().run_in_executor(None, folders.get_filename_list, folder)
    return json_response(names)


async def get_folder_paths(request: web.Request) -> web.Response:
    """ComfyUI's /internal/folder_paths: each model folder's search paths, so that a client can
    tell a user where a missing file goes."""
    folders = request.app[STATE].config.folders
    return json_response({name: list(paths) for name, (paths, _) in sorted(folders.folder_names_and_paths.items())})


async def get_embeddings(request: web.Request) -> web.Response:
    folders = request.app[STATE].config.folders
    names = await asyncio.get_running_loop().run_in_executor(
        None, folders.get_filename_list, "embeddings")
    return json_response([os.path.splitext(n)[0] for n in names])


ROUTES = [
    ("GET", "/view", view),
    ("POST", "/upload/image", upload_image),
    ("POST", "/upload/mask", upload_mask),
    ("GET", "/models", get_models),
    ("GET", "/models/{folder}", get_model_folder),
    ("GET", "/embeddings", get_embeddings),
    ("GET", "/internal/folder_paths", get_folder_paths),
]
MULTIPART_PATHS = ("/upload/image", "/upload/mask")
