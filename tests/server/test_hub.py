"""The websocket hub's bounded per-client queue, with a client that never reads."""
import asyncio
import json
import logging

from vidgraph.server.serve import warn_if_exposed
from vidgraph.server.ws import Client, Hub, HubLimits, preview_frame


class StuckSocket:
    """A peer whose socket never drains: every send waits forever."""

    def __init__(self):
        self.close_code = None

    async def send_str(self, data):
        await asyncio.Event().wait()

    send_bytes = send_str

    async def close(self, code=1000, message=b""):
        self.close_code = code


def stuck_client(hub, sid, size=10):
    """A client of `hub` whose socket never drains; its send queue holds `size` messages."""
    client = Client(sid, StuckSocket(), asyncio.Queue(size))
    hub.clients[sid] = client
    return client


def test_slow_reader_drops_previews_then_is_closed_and_memory_stays_bounded():
    async def scenario():
        hub = Hub(lambda: 0, HubLimits(send_queue=4))
        client = stuck_client(hub, "slow", 4)
        ws = client.ws
        client.sender = asyncio.create_task(hub._drain(client))
        preview = {"prompt_id": "p", "node_id": "1", "format": "JPEG", "image": b"\xff\xd8jpeg"}
        for _ in range(1000):
            hub.send("slow", "preview", preview)
        assert client.queue.qsize() <= 4
        assert client.dropped_previews >= 995
        assert "slow" in hub.clients  # dropping previews is fine; the client stays
        for i in range(10):
            hub.send("slow", "progress", {"value": i, "max": 10, "prompt_id": "p", "node": "1"})
        await asyncio.sleep(0.01)
        assert ws.close_code == 1013 and "slow" not in hub.clients
        assert client.queue.qsize() <= 4
    asyncio.run(scenario())


def test_unowned_events_follow_comfyui_routing():
    async def scenario():
        hub = Hub(lambda: 0)
        queues = {sid: stuck_client(hub, sid).queue for sid in ("a", "b")}
        hub.send(None, "progress", {"value": 1, "max": 2, "prompt_id": "p", "node": "1"})
        hub.send(None, "executed", {"node": "1"})  # no owner: not broadcast
        hub.send("a", "executed", {"node": "1"})
        assert queues["a"].qsize() == 2 and queues["b"].qsize() == 1
        assert json.loads(queues["b"].get_nowait())["type"] == "progress"
    asyncio.run(scenario())


def test_preview_frame_layouts():
    data = {"prompt_id": "p", "node_id": "7", "format": "PNG", "image": b"\x89PNGdata"}
    assert preview_frame(data, False) == b"\x00\x00\x00\x01\x00\x00\x00\x02\x89PNGdata"
    framed = preview_frame(data, True)
    length = int.from_bytes(framed[4:8], "big")
    assert framed[:4] == b"\x00\x00\x00\x04"
    assert json.loads(framed[8:8 + length])["image_type"] == "image/png"
    assert framed[8 + length:] == b"\x89PNGdata"


def test_loud_warning_only_for_non_loopback(caplog):
    with caplog.at_level(logging.WARNING, logger="vidgraph.server"):
        warn_if_exposed("127.0.0.1")
        warn_if_exposed("::1")
        assert not caplog.records
        warn_if_exposed("0.0.0.0")
    assert "EVERY network interface" in caplog.text and "no authentication" in caplog.text


def test_queued_previews_never_crowd_out_json_events():
    """A client behind on previews only is not closed: previews leave room for JSON events."""
    async def scenario():
        hub = Hub(lambda: 0, HubLimits(send_queue=8))
        client = stuck_client(hub, "behind", 8)
        ws = client.ws
        preview = {"prompt_id": "p", "node_id": "1", "format": "JPEG", "image": b"\xff\xd8jpeg"}
        for _ in range(100):
            hub.send("behind", "preview", preview)
        for i in range(4):
            hub.send("behind", "progress", {"value": i, "max": 4, "prompt_id": "p", "node": "1"})
        await asyncio.sleep(0.01)
        assert ws.close_code is None and "behind" in hub.clients
        queued = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
        assert sum(isinstance(m, str) for m in queued) == 4  # every progress event is kept
        assert client.dropped_previews >= 96
    asyncio.run(scenario())


def test_events_are_strict_json_even_with_a_nan_in_them():
    def strict(text):
        return json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))

    async def scenario():
        hub = Hub(lambda: 0)
        queue = stuck_client(hub, "a").queue
        hub.send("a", "executed", {"node": "1", "output": {"value": [float("nan")]}})
        hub.broadcast("custom", {"x": float("-inf")})
        assert strict(queue.get_nowait())["data"]["output"]["value"] == [None]
        assert strict(queue.get_nowait())["data"]["x"] is None
    asyncio.run(scenario())
