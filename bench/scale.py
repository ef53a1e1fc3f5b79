"""Scale-out benchmark: `vidgraph worker` processes on the Redis Streams queue.

1. Throughput with 1, 2 and 4 workers on jobs that sleep (simulated GPU time), and the scaling
   efficiency: throughput(n) / (n * throughput(1)); the target at 4 workers is >= 90%.
2. Queue overhead per job, submit -> start (the job's enqueued_at to started_at as the queue
   records them), median over jobs submitted to an idle queue: Redis vs the embedded SQLite queue.
3. Warm-model routing: jobs that "load a model" (1 s, once per worker; a worker holds one model,
   like a GPU that fits one) arrive over time with one of 4 model files; the fraction that found
   their model already loaded, with routing (model file names a worker can see) and blind (the
   same jobs, names the router cannot recognise).

Runs Debian's redis-server on a free loopback port and the server and workers as subprocesses,
with a tiny node pack written to a temp folder; no torch, no models. Prints figures; never asserts.

    .venv/bin/python bench/scale.py [--seconds 0.5] [--jobs-per-worker 12] [--latency-jobs 30]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]

BENCH_PACK = '''
import time


class BenchGPUJob:
    """Sleeps `seconds` (GPU time); first loads `model` (`load_seconds`) unless this worker holds it.
    A worker holds one bench model at a time."""
    CATEGORY = "bench"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("STRING", {"default": ""}),
                             "seconds": ("FLOAT", {"default": 0.5, "min": 0, "max": 60}),
                             "load_seconds": ("FLOAT", {"default": 0.0, "min": 0, "max": 60}),
                             "tag": ("STRING", {"default": ""})},
                "hidden": {"context": "NODE_CONTEXT"}}

    def run(self, model, seconds, load_seconds, tag, context):
        key = ("bench_model", model)
        warm = not model or context.resources.get(key) is not None
        if not warm:
            context.resources.release()
            time.sleep(load_seconds)
            context.resources.put(key, object(), size=1)
        time.sleep(seconds)
        return {"ui": {"warm": [warm], "finished_at": [time.time()]}}


NODE_CLASS_MAPPINGS = {"BenchGPUJob": BenchGPUJob}
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"bench/scale.py: timed out waiting for {what}")


class Farm:
    """A server (embedded queue, or Redis with `workers` worker processes) on a fresh base dir."""

    def __init__(self, root: Path, pack: Path, redis_url: str | None, workers: int = 0,
                 worker_args: tuple = ()):
        self.base = Path(tempfile.mkdtemp(dir=root))
        self.redis_url = redis_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        common = ["--no-builtin-nodes", "--custom-nodes", str(pack), "--base-dir", str(self.base),
                  "--log-level", "WARNING"]
        queue = ["--queue", redis_url] if redis_url else []
        log = open(self.base / "farm.log", "a")
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "vidgraph.server.serve", "--port", str(self.port), *common, *queue],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)]
        for i in range(workers):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "vidgraph.server.redis_worker", "--worker-id", f"w{i}",
                 *common, *queue, *worker_args], stdout=log, stderr=subprocess.STDOUT, cwd=REPO))

        def ready():
            try:
                stats = get(f"{self.url}/system_stats")
            except OSError:
                return False
            return len(stats.get("workers", [])) == workers

        wait_until(ready, 60, "the server and workers")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)
        shutil.rmtree(self.base, ignore_errors=True)


def prompt(model: str = "", seconds: float = 0.5, load_seconds: float = 0.0) -> dict:
    return {"1": {"class_type": "BenchGPUJob", "inputs": {"model": model, "seconds": seconds,
                                                        "load_seconds": load_seconds,
                                                        "tag": uuid.uuid4().hex}}}


async def submit_all(url: str, prompts: list[dict], gaps: list[float] | None = None) -> list[str]:
    ids = []
    async with aiohttp.ClientSession() as session:
        for i, body in enumerate(prompts):
            async with session.post(f"{url}/prompt", json={"prompt": body}) as r:
                ids.append((await r.json())["prompt_id"])
            if gaps:
                await asyncio.sleep(gaps[i])
    return ids


def wait_done(url: str, ids: list[str], timeout: float) -> dict:
    wanted = set(ids)
    return wait_until(lambda: (h := get(f"{url}/history")) and wanted <= set(h) and h, timeout,
                      f"{len(ids)} jobs", interval=0.1)


def throughput(root, pack, redis_url, flush, workers: int, jobs: int, seconds: float) -> float:
    flush()
    farm = Farm(root, pack, redis_url, workers)
    try:
        start = time.time()
        ids = asyncio.run(submit_all(farm.url, [prompt(seconds=seconds) for _ in range(jobs)]))
        history = wait_done(farm.url, ids, 60 + jobs * seconds)
        last = max(history[i]["outputs"]["1"]["finished_at"][0] for i in ids)
        return jobs / (last - start)
    finally:
        farm.stop()


def submit_to_start(farm: Farm, jobs: int, started_enqueued) -> list[float]:
    """One job at a time on an idle queue: the queue's own overhead, not waiting behind others."""
    delays = []
    for _ in range(jobs):
        [prompt_id] = asyncio.run(submit_all(farm.url, [prompt(seconds=0.0)]))
        wait_done(farm.url, [prompt_id], 30)
        started, enqueued = started_enqueued(prompt_id)
        delays.append((started - enqueued) * 1000)
    return delays


def warm_fraction(root, pack, redis_url, flush, routed: bool, jobs: int, seed: int = 1):
    flush()
    farm = Farm(root, pack, redis_url, 4, ("--warm-slots", "1", "--steal-after", "2"))
    rng = random.Random(seed)
    ext = ".safetensors" if routed else ""
    models = [f"model_{rng.choice('ABCD')}{ext}" for _ in range(jobs)]
    gaps = [rng.expovariate(1 / 0.18) for _ in range(jobs)]
    try:
        start = time.time()
        ids = asyncio.run(submit_all(farm.url, [prompt(m, 0.4, 1.0) for m in models], gaps))
        history = wait_done(farm.url, ids, 300)
        warm = [history[i]["outputs"]["1"]["warm"][0] for i in ids]
        last = max(history[i]["outputs"]["1"]["finished_at"][0] for i in ids)
        return sum(warm) / len(warm), last - start
    finally:
        farm.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="simulated GPU time per job")
    parser.add_argument("--jobs-per-worker", type=int, default=12)
    parser.add_argument("--latency-jobs", type=int, default=30)
    parser.add_argument("--routing-jobs", type=int, default=60)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        print("bench/scale.py needs Debian's redis-server (apt-get install redis-server)")
        return 2
    import redis

    root = Path(tempfile.mkdtemp(prefix="vidgraph-scale-"))
    pack = root / "pack"
    pack.mkdir()
    (pack / "bench_scale_nodes.py").write_text(BENCH_PACK)
    port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(root),
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, decode_responses=True)
    wait_until(lambda: _pings(client), 10, "redis-server")
    try:
        print(f"1. throughput, jobs sleeping {args.seconds}s, {args.jobs_per_worker} jobs per worker")
        rates = {}
        for n in (1, 2, 4):
            rates[n] = throughput(root, pack, url, client.flushdb, n, n * args.jobs_per_worker,
                                  args.seconds)
            ideal = 1 / args.seconds * n
            print(f"   {n} worker(s): {rates[n]:6.2f} jobs/s (ideal {ideal:.2f}), "
                  f"scaling efficiency {rates[n] / (n * rates[1]) * 100:5.1f}%")

        print(f"2. submit -> start on an idle queue, median of {args.latency_jobs} jobs")
        client.flushdb()
        farm = Farm(root, pack, url, 1)
        try:
            redis_ms = submit_to_start(farm, args.latency_jobs, lambda pid: tuple(
                map(float, client.hmget(f"vidgraph:job:{pid}", "started_at", "enqueued_at"))))
        finally:
            farm.stop()
        farm = Farm(root, pack, None)
        database = farm.base / "user" / "vidgraph-queue.sqlite3"

        def sqlite_times(prompt_id):
            with sqlite3.connect(database) as db:
                return db.execute("SELECT started_at, enqueued_at FROM jobs WHERE prompt_id=?",
                                  (prompt_id,)).fetchone()
        try:
            sqlite_ms = submit_to_start(farm, args.latency_jobs, sqlite_times)
        finally:
            farm.stop()
        r, s = statistics.median(redis_ms), statistics.median(sqlite_ms)
        print(f"   redis {r:.2f} ms (p90 {_p90(redis_ms):.2f}), sqlite {s:.2f} ms "
              f"(p90 {_p90(sqlite_ms):.2f}); redis/sqlite {r / s:.2f}x")

        print(f"3. warm-model routing: 4 workers holding one model each, 4 models, "
              f"{args.routing_jobs} jobs arriving ~0.18 s apart (load 1 s, run 0.4 s)")
        for routed in (True, False):
            fraction, wall = warm_fraction(root, pack, url, client.flushdb, routed, args.routing_jobs)
            label = "routed" if routed else "blind "
            print(f"   {label}: {fraction * 100:5.1f}% of jobs found their model loaded, "
                  f"all done in {wall:.1f} s")
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:
        return False


def _p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


if __name__ == "__main__":
    sys.exit(main())
