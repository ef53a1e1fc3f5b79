"""The queue and the history in one SQLite table (WAL), so a restart or a kill -9 loses nothing.

A job moves `queued -> running -> success | error | interrupted`; a job found `running` when
the store opens was cut off by a crash: it is re-queued while `attempts < max_attempts`, else
it ends `interrupted`. History is the terminal rows in finishing order, the newest
`max_history` of them (ComfyUI keeps 10,000 in memory; here they would pile up on disk
forever). Every value is JSON;
nothing is pickled (a writable database must not mean code execution).
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import json_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT NOT NULL UNIQUE,
    body_sha256 TEXT NOT NULL,
    number REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    interruptions INTEGER NOT NULL DEFAULT 0,
    client_id TEXT,
    prompt_json TEXT NOT NULL,
    extra_data_json TEXT NOT NULL,
    outputs_to_execute_json TEXT NOT NULL,
    partial_targets_json TEXT,
    enqueued_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    finish_seq INTEGER,
    outputs_json TEXT,
    status_json TEXT,
    meta_json TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, number, seq);
CREATE INDEX IF NOT EXISTS jobs_history ON jobs (finish_seq);
CREATE TABLE IF NOT EXISTS queue_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

TERMINAL = ("success", "error", "interrupted")
MAX_HISTORY = 10_000  # ComfyUI's MAXIMUM_HISTORY_SIZE
# Credentials the ComfyUI frontend may put in extra_data; never written to disk.
SECRET_EXTRA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


class PromptIdConflict(Exception):
    """The prompt_id is taken by a job with a different body."""


class QueueFull(Exception):
    """`max_queue` jobs are pending already."""

    def __init__(self, limit: int, pending: int):
        super().__init__(f"the queue holds {pending} pending prompts, its cap is {limit}")
        self.limit, self.pending = limit, pending


class NotPending(Exception):
    """The job exists but is no longer pending (running or finished): `status` says which."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


@dataclass
class Job:
    prompt_id: str
    number: float
    prompt: dict
    extra_data: dict
    outputs_to_execute: list
    partial_targets: list | None
    client_id: str | None
    attempts: int
    interruptions: int

    def queue_item(self) -> list:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


def body_hash(prompt: dict, extra_data: dict, partial_targets: list | None) -> str:
    """What "the same job" means: the graph, extra data (minus who listens, and credentials)
    and the targets."""
    extra = {k: v for k, v in extra_data.items()
             if k != "client_id" and k not in SECRET_EXTRA_KEYS}
    canon = json.dumps([prompt, extra, partial_targets], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()


def _dumps(value: Any) -> str:
    return json_text(value, separators=(",", ":"))  # no NaN: it would break every /history read


class Store:
    def __init__(self, path: str | Path, max_attempts: int = 2, max_history: int = MAX_HISTORY):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self.max_history = max_history
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: every state change is durable; jobs are few and slow, the fsync is cheap.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT MAX(ABS(number)), MAX(finish_seq) FROM jobs").fetchone()
        self._counter = int(row[0] or 0) + 1
        self._finish_seq = int(row[1] or 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self):
        return _Transaction(self._db)

    # -- submit ----------------------------------------------------------------------------

    def find(self, prompt_id: str) -> tuple[str, float] | None:
        with self._lock:
            row = self._db.execute("SELECT body_sha256, number FROM jobs WHERE prompt_id=?",
                                   (prompt_id,)).fetchone()
        return None if row is None else (row[0], _number(row[1]))

    def submit(self, prompt_id: str, prompt: dict, extra_data: dict, outputs_to_execute: list,
               partial_targets: list | None, client_id: str | None, number: float | None = None,
               front: bool = False, max_queue: int | None = None) -> tuple[float, bool]:
        """Queue a job; returns (number, created). Same id and body: the existing job.
        Raises QueueFull when `max_queue` jobs are pending."""
        extra_data = {k: v for k, v in extra_data.items() if k not in SECRET_EXTRA_KEYS}
        digest = body_hash(prompt, extra_data, partial_targets)
        with self._lock, self._tx():
            row = self._db.execute("SELECT body_sha256, number FROM jobs WHERE prompt_id=?",
                                   (prompt_id,)).fetchone()
            if row is not None:
                if row[0] != digest:
                    raise PromptIdConflict(prompt_id)
                return _number(row[1]), False
            if max_queue is not None:
                pending = self._db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status='queued'").fetchone()[0]
                if pending >= max_queue:
                    raise QueueFull(max_queue, pending)
            if number is None:
                number = -self._counter if front else self._counter
            self._counter += 1
            self._db.execute(
                "INSERT INTO jobs (prompt_id, body_sha256, number, status, max_attempts, client_id,"
                " prompt_json, extra_data_json, outputs_to_execute_json, partial_targets_json,"
                " enqueued_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (prompt_id, digest, number, "queued", self.max_attempts, client_id, _dumps(prompt),
                 _dumps(extra_data), _dumps(outputs_to_execute),
                 None if partial_targets is None else _dumps(partial_targets), time.time()))
            return _number(number), True

    # -- the worker's side -----------------------------------------------------------------

    def claim_next(self) -> Job | None:
        """The front pending job, now running; None when there is none or the queue is paused."""
        with self._lock, self._tx():
            if self._state("paused") == "1":
                return None
            row = self._db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status='queued'"
                " ORDER BY number, seq LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET status='running', attempts=attempts+1, started_at=?"
                             " WHERE prompt_id=?", (time.time(), row[0]))
        job = _job(row)
        job.attempts += 1
        return job

    def finish(self, prompt_id: str, status: str, outputs: dict, status_obj: dict,
               meta: dict) -> None:
        assert status in TERMINAL, status
        with self._lock, self._tx():
            self._finish_seq += 1
            self._db.execute(
                "UPDATE jobs SET status=?, finished_at=?, finish_seq=?, outputs_json=?,"
                " status_json=?, meta_json=? WHERE prompt_id=?",
                (status, time.time(), self._finish_seq, _dumps(outputs), _dumps(status_obj),
                 _dumps(meta), prompt_id))
            self._trim_history()

    def _trim_history(self) -> None:
        """Drop the oldest history entries past `max_history` (inside the caller's transaction)."""
        self._db.execute(
            "DELETE FROM jobs WHERE finish_seq <= (SELECT finish_seq FROM jobs"
            " WHERE finish_seq IS NOT NULL ORDER BY finish_seq DESC LIMIT 1 OFFSET ?)",
            (self.max_history,))

    def requeue(self, prompt_id: str) -> None:
        """Put a job cut off by a clean shutdown back in the queue, without using up an attempt."""
        with self._lock, self._tx():
            self._db.execute("UPDATE jobs SET status='queued', attempts=MAX(attempts-1, 0)"
                             " WHERE prompt_id=? AND status='running'", (prompt_id,))

    def recover(self) -> tuple[list[str], list[str]]:
        """Jobs left `running` by a dead process: re-queue under the cap, else end them."""
        requeued, ended = [], []
        with self._lock, self._tx():
            rows = self._db.execute(
                "SELECT prompt_id, attempts, max_attempts FROM jobs WHERE status='running'"
            ).fetchall()
            for prompt_id, attempts, max_attempts in rows:
                if attempts < max_attempts:
                    self._db.execute("UPDATE jobs SET status='queued', interruptions=interruptions+1"
                                     " WHERE prompt_id=?", (prompt_id,))
                    requeued.append(prompt_id)
                    continue
                self._finish_seq += 1
                message = ["execution_interrupted", {
                    "prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
                    "timestamp": int(time.time() * 1000),
                    "reason": f"server stopped while running (attempt {attempts} of {max_attempts})"}]
                status_obj = {"status_str": "error", "completed": False, "messages": [message]}
                self._db.execute(
                    "UPDATE jobs SET status='interrupted', interruptions=interruptions+1,"
                    " finished_at=?, finish_seq=?, outputs_json='{}', status_json=?, meta_json='{}'"
                    " WHERE prompt_id=?",
                    (time.time(), self._finish_seq, _dumps(status_obj), prompt_id))
                ended.append(prompt_id)
            if ended:
                self._trim_history()
        return requeued, ended

    # -- queue controls --------------------------------------------------------------------

    def _state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM queue_state WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._state("paused") == "1"

    def set_paused(self, paused: bool) -> None:
        with self._lock, self._tx():
            self._db.execute("INSERT INTO queue_state (key, value) VALUES ('paused', ?)"
                             " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                             ("1" if paused else "0",))

    def move(self, prompt_id: str, position: int) -> int:
        """Put a pending job at `position` of the pending order (0 = next to run; past the end =
        last). Its number becomes one between its new neighbours'. Returns the position taken."""
        with self._lock, self._tx():
            row = self._db.execute("SELECT status FROM jobs WHERE prompt_id=?",
                                   (prompt_id,)).fetchone()
            if row is None:
                raise KeyError(prompt_id)
            if row[0] != "queued":
                raise NotPending(row[0])
            others = [r[0] for r in self._db.execute(
                "SELECT number FROM jobs WHERE status='queued' AND prompt_id<>?"
                " ORDER BY number, seq", (prompt_id,))]
            position = max(0, min(position, len(others)))
            self._db.execute("UPDATE jobs SET number=? WHERE prompt_id=?",
                             (number_between(others, position), prompt_id))
            return position

    # -- reading ---------------------------------------------------------------------------

    def queue(self) -> tuple[list[list], list[list]]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_JOB_COLUMNS}, status FROM jobs WHERE status IN ('running','queued')"
                " ORDER BY number, seq").fetchall()
        running = [_job(r[:-1]).queue_item() for r in rows if r[-1] == "running"]
        pending = [_job(r[:-1]).queue_item() for r in rows if r[-1] == "queued"]
        return running, pending

    def queue_details(self) -> tuple[list[dict], list[dict]]:
        """The running and pending jobs without their prompts (the queue panel's list)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT prompt_id, number, client_id, status, started_at, enqueued_at FROM jobs"
                " WHERE status IN ('running','queued') ORDER BY number, seq").fetchall()
        running = [{"prompt_id": r[0], "number": _number(r[1]), "client_id": r[2], "worker": None,
                    "started_at": r[4]} for r in rows if r[3] == "running"]
        pending = [{"prompt_id": r[0], "number": _number(r[1]), "client_id": r[2],
                    "position": i, "enqueued_at": r[5]}
                   for i, r in enumerate(r for r in rows if r[3] == "queued")]
        return running, pending

    def queue_remaining(self) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('running','queued')").fetchone()[0]

    def status_of(self, prompt_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status, number, attempts, max_attempts, interruptions, seq FROM jobs"
                " WHERE prompt_id=?", (prompt_id,)).fetchone()
            if row is None:
                return None
            position = None
            if row[0] == "queued":
                position = self._db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status='queued' AND (number<? OR"
                    " (number=? AND seq<?))", (row[1], row[1], row[5])).fetchone()[0]
        keys = ("status", "number", "attempts", "max_attempts", "interruptions")
        return {"prompt_id": prompt_id, **dict(zip(keys, row[:5])), "number": _number(row[1]),
                "state": job_state(row[0]), "position": position, "worker": None}

    def history(self, max_items: int | None = None, offset: int | None = None,
                prompt_id: str | None = None) -> dict:
        """ComfyUI's history dict, oldest first. As in ComfyUI, `offset` counts from the oldest
        entry, and max_items without an offset gives the newest max_items."""
        query = (f"SELECT {_JOB_COLUMNS}, outputs_json, status_json, meta_json FROM jobs"
                 " WHERE finish_seq IS NOT NULL")
        args: list = []
        if prompt_id is not None:
            query += " AND prompt_id=?"
            args.append(prompt_id)
        newest_first = offset is None and max_items is not None
        query += " ORDER BY finish_seq " + ("DESC" if newest_first else "ASC")
        if max_items is not None or offset:
            query += " LIMIT ? OFFSET ?"
            args += [-1 if max_items is None else max_items, offset or 0]
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        entries = {}
        for row in (reversed(rows) if newest_first else rows):
            job = _job(row[:-3])
            entries[job.prompt_id] = {"prompt": job.queue_item(), "outputs": json.loads(row[-3]),
                                      "status": json.loads(row[-2]), "meta": json.loads(row[-1])}
        return entries

    # -- deleting --------------------------------------------------------------------------

    def delete_queued(self, prompt_ids: list[str] | None = None) -> int:
        """Remove pending jobs (all when prompt_ids is None); running ones are left alone."""
        with self._lock, self._tx():
            if prompt_ids is None:
                return self._db.execute("DELETE FROM jobs WHERE status='queued'").rowcount
            return sum(self._db.execute("DELETE FROM jobs WHERE status='queued' AND prompt_id=?",
                                        (pid,)).rowcount for pid in prompt_ids)

    def delete_history(self, prompt_ids: list[str] | None = None) -> int:
        with self._lock, self._tx():
            if prompt_ids is None:
                return self._db.execute("DELETE FROM jobs WHERE finish_seq IS NOT NULL").rowcount
            return sum(self._db.execute(
                "DELETE FROM jobs WHERE finish_seq IS NOT NULL AND prompt_id=?", (pid,)).rowcount
                for pid in prompt_ids)


_JOB_COLUMNS = ("prompt_id, number, prompt_json, extra_data_json, outputs_to_execute_json,"
                " partial_targets_json, client_id, attempts, interruptions")


def job_state(status: str) -> str:
    """pending | running | done, from a job's status."""
    return {"queued": "pending", "running": "running"}.get(status, "done")


def number_between(numbers: list[float], position: int) -> float:
    """A number that sorts a job at `position` among the (sorted) `numbers` of the others."""
    if not numbers:
        return 1
    if position <= 0:
        return numbers[0] - 1
    if position >= len(numbers):
        return numbers[-1] + 1
    return (numbers[position - 1] + numbers[position]) / 2


def _number(value: float) -> float | int:
    """Numbers are REAL in the table; ComfyUI clients expect the counter back as an integer."""
    return int(value) if float(value).is_integer() else value


def _job(row) -> Job:
    return Job(prompt_id=row[0], number=_number(row[1]), prompt=json.loads(row[2]),
               extra_data=json.loads(row[3]), outputs_to_execute=json.loads(row[4]),
               partial_targets=None if row[5] is None else json.loads(row[5]),
               client_id=row[6], attempts=row[7], interruptions=row[8])


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the single writer takes its lock up front."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
