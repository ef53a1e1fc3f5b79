"""The websocket hub: `/ws?clientId=`, ComfyUI's JSON events and binary preview frames.

Each client has a bounded send queue drained by its own task, so a slow reader never blocks
the worker or grows memory: once its queue is half full, previews are dropped, and a client
that cannot even keep up with JSON events is closed (1013, try again later) — it can reconnect and
read /history.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import struct
import uuid
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import WSMsgType, web

from .errors import ApiError, json_text

log = logging.getLogger("vidgraph.server")

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_FORMAT_CODES = {"JPEG": 1, "PNG": 2}
IMAGE_MIME = {"JPEG": "image/jpeg", "PNG": "image/png"}
CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# Close code for a socket replaced by a newer one with the same clientId: the editor then picks
# a new id (a duplicated browser tab copies the old one), instead of taking it back forever.
REPLACED = 4001
# Sent to the submitting client only; with no client they go to everyone (ComfyUI does the same).
BROADCAST_WHEN_UNOWNED = frozenset({"progress", "progress_state", "execution_interrupted", "preview"})


@dataclass
class Client:
    sid: str
    ws: web.WebSocketResponse
    queue: asyncio.Queue
    supports_preview_metadata: bool = False
    negotiated: bool = False
    closing: bool = False
    dropped_previews: int = 0
    sender: asyncio.Task | None = field(default=None, repr=False)


@dataclass
class HubLimits:
    max_clients: int = 256
    max_msg_size: int = 64 * 1024
    send_queue: int = 256
    heartbeat: float = 30.0


def preview_frame(data: dict, with_metadata: bool) -> bytes:
    """ComfyUI's layout: uint32 type, then (format code | uint32 metadata length + JSON) + image."""
    image_format = str(data.get("format", "JPEG")).upper()
    image = bytes(data["image"])
    if not with_metadata:
        code = IMAGE_FORMAT_CODES.get(image_format, 1)
        return struct.pack(">II", PREVIEW_IMAGE, code) + image
    node_id = data.get("node_id")
    metadata = json.dumps({"node_id": node_id, "prompt_id": data.get("prompt_id"),
                           "display_node_id": data.get("display_node_id", node_id),
                           "parent_node_id": data.get("parent_node_id"),
                           "real_node_id": data.get("real_node_id", node_id),
                           "image_type": IMAGE_MIME.get(image_format, "image/jpeg")}).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(metadata)) + metadata + image


class Hub:
    def __init__(self, queue_remaining: Callable[[], int], limits: HubLimits | None = None,
                 features: dict | None = None, current_node: Callable[[str], dict | None] = None,
                 paused: Callable[[], bool] | None = None):
        self.clients: dict[str, Client] = {}
        self.limits = limits or HubLimits()
        self.features = features or {}
        self.queue_remaining = queue_remaining
        self.current_node = current_node or (lambda sid: None)
        self.paused = paused or (lambda: False)
        self._status_scheduled = False

    # -- connections ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        sid = request.query.get("clientId") or uuid.uuid4().hex
        if not CLIENT_ID.match(sid):
            raise ApiError(400, "invalid_client_id",
                           "clientId must be 1-128 characters of letters, digits, _ . : -")
        old = self.clients.get(sid)
        if old is None and len(self.clients) >= self.limits.max_clients:
            raise ApiError(503, "too_many_clients",
                           f"At most {self.limits.max_clients} websocket clients")
        ws = web.WebSocketResponse(max_msg_size=self.limits.max_msg_size,
                                   heartbeat=self.limits.heartbeat)
        await ws.prepare(request)
        client = Client(sid, ws, asyncio.Queue(self.limits.send_queue))
        client.sender = asyncio.create_task(self._drain(client))
        self.clients[sid] = client
        if old is not None:  # a reconnect with the same id replaces the older socket
            old.closing = True  # (closed in the background: a dead peer may never answer)
            asyncio.ensure_future(self._drop(old, REPLACED, b"replaced by a newer connection"))
        self._offer(client, self._status_message(sid))
        running = self.current_node(sid)
        if running is not None:
            self._offer(client, json.dumps({"type": "executing", "data": running}))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(client, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            client.sender.cancel()
        return ws

    def _on_text(self, client: Client, text: str) -> None:
        if client.negotiated:
            return  # ComfyUI ignores everything after the first message
        client.negotiated = True
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            flags = message.get("data")
            if isinstance(flags, dict):
                client.supports_preview_metadata = flags.get("supports_preview_metadata") is True
            self._offer(client, json.dumps({"type": "feature_flags", "data": self.features}))

    async def _drain(self, client: Client) -> None:
        try:
            while True:
                message = await client.queue.get()
                if isinstance(message, bytes):
                    await client.ws.send_bytes(message)
                else:
                    await client.ws.send_str(message)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass

    async def _drop(self, client: Client, code: int = 1000, reason: bytes = b"") -> None:
        if self.clients.get(client.sid) is client:
            del self.clients[client.sid]
        if client.sender is not None:
            client.sender.cancel()
        await client.ws.close(code=code, message=reason)

    async def close_all(self) -> None:
        await asyncio.gather(*(self._drop(client, 1001, b"server shutting down")
                               for client in list(self.clients.values())), return_exceptions=True)

    # -- sending -------------------------------------------------------------------------

    def _offer(self, client: Client, message: str | bytes, droppable: bool = False) -> None:
        if client.closing:
            return
        if droppable and client.queue.qsize() >= client.queue.maxsize // 2:
            # Previews may fill half the queue at most, so they never crowd out the JSON events
            # of a client that keeps up with those (a stale preview is worthless anyway).
            client.dropped_previews += 1
            return
        try:
            client.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("websocket client %s is not reading; closing it", client.sid)
            client.closing = True
            asyncio.ensure_future(self._drop(client, 1013, b"send queue full"))

    def send(self, sid: str | None, event: str, data: dict) -> None:
        """Route one engine event: to its client, or to everyone for the few ComfyUI broadcasts."""
        if sid is None:
            if event in BROADCAST_WHEN_UNOWNED:
                for client in list(self.clients.values()):
                    self._send_one(client, event, data)
            return
        client = self.clients.get(sid)
        if client is not None:
            self._send_one(client, event, data)

    def _send_one(self, client: Client, event: str, data: dict) -> None:
        if event == "preview":
            self._offer(client, preview_frame(data, client.supports_preview_metadata), droppable=True)
        else:
            self._offer(client, json_text({"type": event, "data": data}))

    def broadcast(self, event: str, data: dict) -> None:
        message = json_text({"type": event, "data": data})
        for client in list(self.clients.values()):
            self._offer(client, message)

    def _status_message(self, sid: str | None = None) -> str:
        data: dict = {"status": {"exec_info": {"queue_remaining": self.queue_remaining(),
                                               "paused": self.paused()}}}
        if sid is not None:
            data["sid"] = sid
        return json.dumps({"type": "status", "data": data})

    def queue_changed(self) -> None:
        """Broadcast `status`; many changes in one loop turn coalesce into one message."""
        if self._status_scheduled:
            return
        self._status_scheduled = True
        asyncio.get_running_loop().call_soon(self._send_status)

    def _send_status(self) -> None:
        self._status_scheduled = False
        message = self._status_message()
        for client in list(self.clients.values()):
            self._offer(client, message)
