"""Debian's redis-server on a loopback port (AOF on, a password set) and `vidgraph worker`
processes for the Redis queue tests. Everything started here is stopped by its pid."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server_harness import PACK_DIR

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "s3cret-test-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (./dev test installs Debian's package)")
    pytest.importorskip("redis", reason="the redis package (vidgraph[redis]) is not installed")


class RedisProcess:
    """`redis-server` with AOF (appendfsync always), bound to 127.0.0.1, password required."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.started_before = False

    def start(self, tries: int = 5) -> "RedisProcess":
        """Start (again, on the same port and data); a port another process took between our
        probe and redis's bind is replaced by a fresh one, on the first start only."""
        for attempt in range(tries):
            if self._start_once():
                return self
            if self.proc.poll() is None or attempt == tries - 1 or self.started_before:
                break
            self.port = free_port()
            self.url = f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"
        raise AssertionError("redis-server did not start:\n" + (self.dir / "redis.log").read_text()[-2000:])

    def _start_once(self) -> bool:
        log = open(self.dir / "redis.log", "a")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
             "--requirepass", PASSWORD, "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.client().ping():
                    self.started_before = True
                    return True
            except Exception:
                if self.proc.poll() is not None:
                    return False  # exited: most likely the port was taken
                time.sleep(0.05)
        return False

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


class Workers:
    """`python -m vidgraph.server.redis_worker` processes sharing one base dir (models, output)."""

    def __init__(self, base: Path, url: str, lease: float = 30.0, extra: list[str] = ()):
        self.base, self.url, self.lease, self.extra = base, url, lease, list(extra)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, worker_id: str) -> subprocess.Popen:
        log = open(self.base / f"worker-{worker_id}.log", "a")
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidgraph.server.redis_worker", "--queue", self.url,
             "--worker-id", worker_id, "--no-builtin-nodes", "--custom-nodes", str(PACK_DIR),
             "--base-dir", str(self.base), "--lease", str(self.lease), "--log-level", "WARNING",
             *self.extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        self.procs[worker_id] = proc
        return proc

    def kill9(self, worker_id: str) -> None:
        proc = self.procs[worker_id]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def log(self, worker_id: str) -> str:
        return (self.base / f"worker-{worker_id}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
