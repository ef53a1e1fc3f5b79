"""Server benchmark: prompts/s accepted for a small workflow, and the latency from a node
finishing to its `executed` message arriving at a websocket client, with 1 and with 50 clients.

Runs `python -m vidgraph.server.serve` as a subprocess (so client and server do not share a
GIL) with a tiny node pack written to a temp folder; no torch, no models. Prints figures and
the 50-client/1-client latency ratio; never asserts on time.

    .venv/bin/python bench/server.py [--prompts 400] [--concurrency 8] [--rounds 10]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp

BENCH_PACK = '''
import time


class BenchInt:
    CATEGORY = "bench"
    RETURN_TYPES = ("INT",)
    FUNCTION = "value"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -10**9, "max": 10**9})}}

    def value(self, value):
        return (value,)


class BenchSum:
    CATEGORY = "bench"
    RETURN_TYPES = ("INT",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"forceInput": True}), "b": ("INT", {"forceInput": True})}}

    def add(self, a, b):
        return (a + b,)


class BenchStamp:
    """Says when it finished: the client subtracts this from the arrival time of `executed`."""
    CATEGORY = "bench"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "stamp"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"total": ("INT", {"forceInput": True}), "tag": ("STRING", {"default": ""})}}

    def stamp(self, total, tag):
        return {"ui": {"finished_at": [time.time()], "total": [total]}}


NODE_CLASS_MAPPINGS = {"BenchInt": BenchInt, "BenchSum": BenchSum, "BenchStamp": BenchStamp}
'''


def small_workflow(tag: str) -> dict:
    return {"1": {"class_type": "BenchInt", "inputs": {"value": 2}},
            "2": {"class_type": "BenchInt", "inputs": {"value": 3}},
            "3": {"class_type": "BenchSum", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "BenchStamp", "inputs": {"total": ["3", 0], "tag": tag}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(base: Path, port: int) -> subprocess.Popen:
    packs = base / "packs"
    packs.mkdir()
    (packs / "bench_nodes.py").write_text(BENCH_PACK)
    proc = subprocess.Popen([sys.executable, "-m", "vidgraph.server.serve", "--port", str(port),
                             "--no-builtin-nodes", "--custom-nodes", str(packs),
                             "--base-dir", str(base), "--log-level", "WARNING"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/prompt", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


async def wait_idle(session: aiohttp.ClientSession, url: str) -> None:
    while True:
        async with session.get(f"{url}/prompt") as r:
            if (await r.json())["exec_info"]["queue_remaining"] == 0:
                return
        await asyncio.sleep(0.05)


async def accept_rate(url: str, prompts: int, concurrency: int) -> float:
    """POST /prompt answers per second (the worker runs them meanwhile, as in real use)."""
    bodies = [json.dumps({"prompt": small_workflow(uuid.uuid4().hex)}) for _ in range(prompts)]
    pending = iter(bodies)
    async with aiohttp.ClientSession() as session:
        async def client():
            for body in pending:
                async with session.post(f"{url}/prompt", data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 200, await r.text()
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        await wait_idle(session, url)
    return prompts / elapsed


async def executed_latency(url: str, clients: int, rounds: int, submitters: int) -> list[float]:
    """`clients` sockets connected; `submitters` of them submit `rounds` prompts one after
    another. Seconds from the node finishing to its `executed` arriving."""
    latencies: list[float] = []
    connected = asyncio.Event()
    stop = asyncio.Event()
    ready = 0
    async with aiohttp.ClientSession() as session:
        async def listener():
            nonlocal ready
            async with session.ws_connect(f"{url}/ws?clientId={uuid.uuid4().hex}") as ws:
                ready += 1
                if ready == clients:
                    connected.set()
                reader = asyncio.create_task(ws.receive())  # keep reading status broadcasts
                while not stop.is_set():
                    done, _ = await asyncio.wait({reader}, timeout=0.1)
                    if done:
                        reader = asyncio.create_task(ws.receive())
                reader.cancel()

        async def client():
            nonlocal ready
            client_id = uuid.uuid4().hex
            async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
                ready += 1
                if ready == clients:
                    connected.set()
                await connected.wait()
                for _ in range(rounds):
                    body = {"prompt": small_workflow(uuid.uuid4().hex), "client_id": client_id}
                    async with session.post(f"{url}/prompt", json=body) as r:
                        prompt_id = (await r.json())["prompt_id"]
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        arrived = time.time()
                        message = json.loads(msg.data)
                        data = message["data"]
                        if message["type"] == "executed" and data.get("prompt_id") == prompt_id:
                            latencies.append(arrived - data["output"]["finished_at"][0])
                        if message["type"] == "executing" and data.get("node") is None \
                                and data.get("prompt_id") == prompt_id:
                            break

        async def run_submitters():
            await asyncio.gather(*(client() for _ in range(submitters)))
            stop.set()
        await asyncio.gather(run_submitters(), *(listener() for _ in range(clients - submitters)))
    return latencies


def summary(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return f"median {statistics.median(values) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10, help="prompts per websocket client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = start_server(Path(tmp), port)
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(accept_rate(url, 20, 1))  # warm-up: imports, first SQLite pages
            rate_1 = asyncio.run(accept_rate(url, args.prompts // 4, 1))
            rate_n = asyncio.run(accept_rate(url, args.prompts, args.concurrency))
            print(f"accepted prompts/s (4-node workflow): 1 client {rate_1:.0f}/s, "
                  f"{args.concurrency} concurrent clients {rate_n:.0f}/s "
                  f"(ratio {rate_n / rate_1:.2f})")
            one = asyncio.run(executed_latency(url, 1, args.rounds * 5, 1))
            idle = asyncio.run(executed_latency(url, 50, args.rounds * 5, 1))
            busy = asyncio.run(executed_latency(url, 50, args.rounds, 50))
            print(f"node finished -> executed at the client, 1 client:              {summary(one)}")
            print(f"  50 clients connected, 1 submitting:                          {summary(idle)}")
            print(f"  50 clients connected, all 50 submitting at once:             {summary(busy)}")
            print(f"median latency ratio vs 1 client: 50 connected "
                  f"{statistics.median(idle) / statistics.median(one):.2f}, 50 submitting "
                  f"{statistics.median(busy) / statistics.median(one):.2f}")
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
