"""Test harness: a real vidgraph server on a loopback port, run by a background event loop.

Tests talk to it with real clients (aiohttp, urllib, websocket-client). The server loads the
core nodes plus the small test pack in tests/server/pack (no torch, no models).
"""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from vidgraph.engine.folders import Folders
from vidgraph.server.app import create_app
from vidgraph.server.state import STATE, UNEXPECTED_ERRORS, ServerConfig

PACK_DIR = Path(__file__).parent / "pack"


@dataclass
class Running:
    url: str
    port: int
    app: web.Application
    loop: asyncio.AbstractEventLoop
    runner: web.AppRunner
    thread: threading.Thread
    base: Path

    @property
    def state(self):
        return self.app[STATE]

    @property
    def unexpected_errors(self) -> int:
        return self.app[UNEXPECTED_ERRORS]

    def call(self, fn, *args):
        """Run `fn` on the server's loop thread and return its result."""
        done = asyncio.run_coroutine_threadsafe(_call(fn, *args), self.loop)
        return done.result(10)


async def _call(fn, *args):
    return fn(*args)


def make_config(base: Path, **overrides) -> ServerConfig:
    folders = Folders(base_dir=base)
    config = ServerConfig(folders=folders, host="127.0.0.1", port=0,
                          node_packs=["vidgraph.nodes.core"], custom_node_dirs=[str(PACK_DIR)])
    for key, value in overrides.items():
        if hasattr(config.limits, key):
            setattr(config.limits, key, value)
        else:
            setattr(config, key, value)
    return config


def start_server(base: Path, **overrides) -> Running:
    config = make_config(base, **overrides)
    app = create_app(config)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    started = threading.Event()
    box = {}

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        box["port"] = runner.addresses[0][1]
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30), "server did not start"
    port = box["port"]
    return Running(f"http://127.0.0.1:{port}", port, app, loop, runner, thread, base)


def stop_server(running: Running) -> None:
    asyncio.run_coroutine_threadsafe(running.runner.cleanup(), running.loop).result(30)
    running.loop.call_soon_threadsafe(running.loop.stop)
    running.thread.join(10)


def run(coro):
    return asyncio.run(coro)


def slow_prompt(steps=3, delay=0.01, tag="", previews=False) -> dict:
    return {"1": {"class_type": "TestSlow",
                  "inputs": {"steps": steps, "delay": delay, "tag": tag or uuid.uuid4().hex,
                             "previews": previews}}}


def image_prompt(tag="") -> dict:
    return {"1": {"class_type": "TestSlow", "inputs": {"steps": 2, "delay": 0.0,
                                                       "tag": tag or uuid.uuid4().hex}},
            "2": {"class_type": "TestSaveImage",
                  "inputs": {"size": 16, "filename_prefix": "cycle/test", "tag": tag,
                             "count": ["1", 0]}}}


async def post_json(session: aiohttp.ClientSession, url: str, body) -> tuple[int, object]:
    async with session.post(url, data=json.dumps(body),
                            headers={"Content-Type": "application/json"}) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, object]:
    async with session.get(url) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


async def collect_until_done(ws, prompt_id: str, timeout: float = 30.0) -> list:
    """Websocket messages until `executing` with node null for `prompt_id` (ComfyUI's done)."""
    messages = []
    async with asyncio.timeout(timeout):
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                messages.append(("binary", msg.data))
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            message = json.loads(msg.data)
            messages.append((message["type"], message["data"]))
            data = message["data"]
            if message["type"] == "executing" and data.get("node") is None \
                    and data.get("prompt_id") == prompt_id:
                return messages
    raise AssertionError(f"websocket closed before {prompt_id} finished: {messages}")


async def still_serving(session, url):
    status, body = await get_json(session, f"{url}/prompt")
    assert status == 200 and "exec_info" in body


async def expect(session, method, url, status, error_type=None, **kwargs):
    async with session.request(method, url, **kwargs) as r:
        text = await r.text()
        assert r.status == status, (r.status, text[:500])
        assert "Traceback" not in text
        if error_type is not None:
            body = json.loads(text)
            assert body["error"]["type"] == error_type, body
        return r, text
