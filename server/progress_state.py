"""ComfyUI's `progress_state` websocket messages, derived from the engine's events.

For each running prompt the relay keeps every node that started (running, finished or failed,
with its progress value/max) and sends the whole set to the prompt's client, as ComfyUI does:
`{"prompt_id", "nodes": {node_id: {"value", "max", "state", "node_id", "prompt_id",
"display_node_id", "parent_node_id", "real_node_id"}}}`. A fast prompt would send one such message
per node, each as big as the prompt, so they are throttled to one per `interval` (the last state
always goes out when the prompt ends).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable

Send = Callable[[str | None, str, dict], None]
ENDING = ("execution_success", "execution_error", "execution_interrupted")


@dataclass
class _Prompt:
    client_id: str | None
    nodes: dict[str, dict] = field(default_factory=dict)
    running: str | None = None
    last_sent: float = 0.0
    pending: asyncio.TimerHandle | None = None


class ProgressStateRelay:
    def __init__(self, send: Send, interval: float = 0.1):
        self.send = send
        self.interval = interval
        self.prompts: dict[str, _Prompt] = {}

    def deliver(self, client_id: str | None, event: str, data: dict) -> None:
        """Pass the event on, then update (and maybe send) the prompt's progress state."""
        self.send(client_id, event, data)
        prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
        if prompt_id is None:
            return
        prompt = self.prompts.get(prompt_id)
        if prompt is None:
            if event != "executing" or data.get("node") is None:
                return
            prompt = self.prompts[prompt_id] = _Prompt(client_id)
        if event == "executing":
            node = data.get("node")
            self._finish_running(prompt, "finished")
            if node is None:   # the prompt is over and its history written
                self._flush(prompt_id, prompt)
                del self.prompts[prompt_id]
                return
            display = str(data.get("display_node") or node)
            prompt.nodes[node] = {"value": 0, "max": 1, "state": "running", "node_id": node,
                                  "prompt_id": prompt_id, "display_node_id": display,
                                  "parent_node_id": None if display == node else display,
                                  "real_node_id": display}
            prompt.running = node
        elif event == "progress":
            entry = prompt.nodes.get(data.get("node"))
            if entry is None:
                return
            entry["value"], entry["max"] = data.get("value", 0), data.get("max", 1)
        elif event in ENDING:
            self._finish_running(prompt, "error" if event == "execution_error" else "finished")
            self._flush(prompt_id, prompt)
            return
        else:
            return
        self._schedule(prompt_id, prompt)

    @staticmethod
    def _finish_running(prompt: _Prompt, state: str) -> None:
        entry = prompt.nodes.get(prompt.running) if prompt.running else None
        if entry is not None and entry["state"] == "running":
            entry["state"] = state
            if state == "finished":
                entry["value"] = entry["max"]
        prompt.running = None

    def _schedule(self, prompt_id: str, prompt: _Prompt) -> None:
        wait = prompt.last_sent + self.interval - time.monotonic()
        if wait <= 0:
            self._flush(prompt_id, prompt)
        elif prompt.pending is None:
            prompt.pending = asyncio.get_running_loop().call_later(wait, self._flush, prompt_id, prompt)

    def _flush(self, prompt_id: str, prompt: _Prompt) -> None:
        if prompt.pending is not None:
            prompt.pending.cancel()
            prompt.pending = None
        prompt.last_sent = time.monotonic()
        nodes = {node_id: dict(entry) for node_id, entry in prompt.nodes.items()}
        self.send(prompt.client_id, "progress_state", {"prompt_id": prompt_id, "nodes": nodes})
