"""Interrupting a running prompt: a flag other threads set, an exception nodes raise."""
from __future__ import annotations

import threading


class Interrupted(Exception):
    """Raised inside a node (at a progress point) or between nodes when the prompt is interrupted."""


class InterruptFlag:
    """A thread-safe flag: the server's /interrupt handler sets it, the worker thread checks it."""

    def __init__(self):
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Interrupted("Processing interrupted")
