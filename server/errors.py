"""Error bodies in ComfyUI's shape, and a JSON body reader that never lets bad input become a 500.

Every refusal the server makes goes through `ApiError`; the error middleware turns it into
`{"error": {"type", "message", "details", "extra_info"}, "node_errors": {}}` with its status.
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from vidgraph.engine.jsontext import json_text


class ApiError(Exception):
    def __init__(self, status: int, type: str, message: str, details: str = "",
                 extra_info: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.details = details
        self.extra_info = extra_info or {}
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.type, self.message, self.details, self.extra_info)

    def response(self) -> web.Response:
        response = json_response(self.body(), status=self.status)
        if self.headers:
            response.headers.update(self.headers)
        return response


def error_body(type: str, message: str, details: str = "", extra_info: dict | None = None) -> dict:
    return {"error": {"type": type, "message": message, "details": details,
                      "extra_info": extra_info or {}},
            "node_errors": {}}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=json_text)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_depth_exceeds(value: Any, max_depth: int) -> bool:
    """Iterative depth check (a recursive one would be the very RecursionError we guard against)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (chunked bodies included)."""
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, "body_too_large", f"Request body is {length} bytes; the limit is {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"Request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ConnectionError:  # the client sent less than it announced and hung up
        raise ApiError(400, "incomplete_body", "The request body ended early") from None
    return b"".join(chunks)


def parse_json(body: bytes, max_depth: int, allow_empty: bool = False) -> Any:
    if not body.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "Request body is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_json", "Request body is not valid UTF-8", str(e)) from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, integers past the digit limit
        raise ApiError(400, "invalid_json", "Request body is not valid JSON", str(e)) from None
    if json_depth_exceeds(value, max_depth):
        raise ApiError(400, "invalid_json", f"JSON nested deeper than {max_depth} levels")
    return value


async def read_json_object(request: web.Request, limit: int, max_depth: int,
                           allow_empty: bool = False) -> dict:
    value = parse_json(await read_body(request, limit), max_depth, allow_empty)
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json",
                       f"Request body must be a JSON object, not {type(value).__name__}")
    return value
