"""The queue controls over HTTP: pause/resume, move, cancel by id, job state, the cap, the
instance id. The same scenarios run against every backend the `queue_server` fixture offers."""
import asyncio
import json
import uuid

import aiohttp
import pytest

from redis_harness import RedisProcess, Workers, require_redis, wait_until
from server_harness import get_json, post_json, slow_prompt, start_server, stop_server

STATE_HEADER = "X-Vidgraph-Job-State"


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def queue_server(request, tmp_path_factory):
    """A server with a queue cap of 4: embedded, or on Redis with one worker process."""
    base = tmp_path_factory.mktemp(f"queue-{request.param}")
    if request.param == "sqlite":
        running = start_server(base, max_queue=4)
        running.backend = "sqlite"
        yield running
        stop_server(running)
        assert running.unexpected_errors == 0
        return
    require_redis()
    redis_server = RedisProcess(base / "redis")
    workers = Workers(base, redis_server.url)
    running = None
    try:  # whatever fails to start, what did start is stopped
        redis_server.start()
        workers.url = redis_server.url
        running = start_server(base, max_queue=4, queue_url=redis_server.url)
        running.backend = "redis"
        workers.start("w1")
        wait_until(lambda: redis_server.client().exists("vidgraph:alive:w1"), 60, what="the worker")
        yield running
    finally:
        workers.stop_all()
        if running is not None:
            stop_server(running)
        redis_server.stop()
    assert running.unexpected_errors == 0


async def submit(session, url, prompt=None, **extra):
    prompt_id = extra.pop("prompt_id", None) or uuid.uuid4().hex
    status, body = await post_json(session, f"{url}/prompt",
                                   {"prompt": prompt or slow_prompt(), "prompt_id": prompt_id,
                                    **extra})
    assert status == 200, body
    return prompt_id


async def panel(session, url):
    status, body = await get_json(session, f"{url}/vidgraph/queue")
    assert status == 200, body
    return body


async def history_state(session, url, prompt_id):
    async with session.get(f"{url}/history/{prompt_id}") as r:
        return r.status, r.headers.get(STATE_HEADER), json.loads(await r.text())


async def wait_for(predicate, timeout=20.0):
    async with asyncio.timeout(timeout):
        while True:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.02)


def test_pause_move_cancel_resume(queue_server):
    url = queue_server.url

    async def scenario():
        async with aiohttp.ClientSession() as s:
            assert (await get_json(s, f"{url}/vidgraph/queue/dead")) == (200, {"dead": []})
            assert (await post_json(s, f"{url}/vidgraph/queue/pause", {}))[1] == {"paused": True}
            a, b, c = [await submit(s, url) for _ in range(3)]
            await asyncio.sleep(0.3)  # paused: nothing starts
            body = await panel(s, url)
            assert body["paused"] is True and body["running"] == []
            assert [j["prompt_id"] for j in body["pending"]] == [a, b, c]
            assert [j["position"] for j in body["pending"]] == [0, 1, 2]
            assert (await history_state(s, url, a))[:3] == (200, "pending", {})
            _, job = await get_json(s, f"{url}/vidgraph/jobs/{c}")
            assert (job["state"], job["status"], job["position"]) == ("pending", "queued", 2)

            assert await post_json(s, f"{url}/vidgraph/queue/move",
                                   {"prompt_id": c, "front": True}) == (200, {"prompt_id": c,
                                                                             "position": 0})
            assert (await post_json(s, f"{url}/vidgraph/queue/move",
                                    {"prompt_id": a, "position": 99}))[1]["position"] == 2
            assert [j["prompt_id"] for j in (await panel(s, url))["pending"]] == [c, b, a]
            _, queue = await get_json(s, f"{url}/queue")  # ComfyUI's view follows the same order
            assert [item[1] for item in queue["queue_pending"]] == [c, b, a]
            for bad in ({"prompt_id": a, "position": -1}, {"prompt_id": a, "position": "1"},
                        {"prompt_id": a}, {"position": 0}):
                status, err = await post_json(s, f"{url}/vidgraph/queue/move", bad)
                assert status == 400 and err["error"]["type"] == "invalid_request", (bad, err)
            status, err = await post_json(s, f"{url}/vidgraph/queue/move",
                                          {"prompt_id": "nope", "position": 0})
            assert status == 404 and err["error"]["type"] == "unknown_prompt_id"

            assert await post_json(s, f"{url}/vidgraph/jobs/{b}/cancel", {}) == (
                200, {"prompt_id": b, "was": "pending"})
            assert (await history_state(s, url, b))[0] == 404
            status, err = await post_json(s, f"{url}/vidgraph/jobs/{b}/cancel", {})
            assert status == 404 and err["error"]["type"] == "unknown_prompt_id"

            assert (await post_json(s, f"{url}/vidgraph/queue/resume", {}))[1] == {"paused": False}

            async def both_done():
                _, history = await get_json(s, f"{url}/history")
                return a in history and c in history and history
            history = await wait_for(both_done)
            assert [p for p in history if p in (a, c)] == [c, a]  # moved order is run order
            assert b not in history
            status, state, entry = await history_state(s, url, c)
            assert (status, state) == (200, "done") and c in entry
            status, err = await post_json(s, f"{url}/vidgraph/queue/move",
                                          {"prompt_id": c, "position": 0})
            assert status == 409 and err["error"]["extra_info"]["status"] == "success"
            status, err = await post_json(s, f"{url}/vidgraph/jobs/{c}/cancel", {})
            assert status == 409 and err["error"]["type"] == "not_pending"
    asyncio.run(scenario())


def test_cancel_running_by_id_and_the_state_header(queue_server):
    url = queue_server.url

    async def scenario():
        async with aiohttp.ClientSession() as s:
            long_job = await submit(s, url, slow_prompt(steps=400, delay=0.05))
            other = await submit(s, url, slow_prompt(steps=1, delay=0.0))

            async def running():
                return (await history_state(s, url, long_job))[1] == "running"
            await wait_for(running)
            assert (await history_state(s, url, other))[1] == "pending"
            # an id that is not the running one interrupts nothing
            assert (await post_json(s, f"{url}/interrupt", {"prompt_id": other}))[0] == 200
            await asyncio.sleep(0.2)
            assert (await history_state(s, url, long_job))[1] == "running"
            assert await post_json(s, f"{url}/vidgraph/jobs/{long_job}/cancel", {}) == (
                200, {"prompt_id": long_job, "was": "running"})

            async def done(prompt_id):
                _, history = await get_json(s, f"{url}/history/{prompt_id}")
                return history.get(prompt_id)
            entry = await wait_for(lambda: done(long_job), timeout=10)
            assert entry["status"]["messages"][-1][0] == "execution_interrupted"
            assert (await wait_for(lambda: done(other)))["status"]["status_str"] == "success"
            _, job = await get_json(s, f"{url}/vidgraph/jobs/{long_job}")
            assert (job["status"], job["state"]) == ("interrupted", "done")
    asyncio.run(scenario())


def test_queue_cap_answers_429_and_resubmission_still_works(queue_server):
    url = queue_server.url

    async def scenario():
        async with aiohttp.ClientSession() as s:
            await post_json(s, f"{url}/vidgraph/queue/pause", {})
            try:
                first = slow_prompt(tag="first")
                ids = [await submit(s, url, first)] + [await submit(s, url) for _ in range(3)]
                # the fixture's cap is 4
                async with s.post(f"{url}/prompt", json={"prompt": slow_prompt()}) as r:
                    body = await r.json()
                    assert r.status == 429 and r.headers["Retry-After"].isdigit()
                assert body["error"]["type"] == "queue_full"
                assert body["error"]["extra_info"] == {"max_queue": 4, "pending": 4}
                assert "4" in body["error"]["message"]
                # the same prompt_id and body again is the existing job, not a new one
                status, again = await post_json(s, f"{url}/prompt",
                                                {"prompt": first, "prompt_id": ids[0]})
                assert status == 200 and again["prompt_id"] == ids[0]
                assert (await panel(s, url))["max_queue"] == 4
            finally:
                await post_json(s, f"{url}/queue", {"clear": True})
                await post_json(s, f"{url}/vidgraph/queue/resume", {})
            assert (await panel(s, url))["pending"] == []
    asyncio.run(scenario())


def test_status_message_says_paused_and_system_stats_has_an_instance_id(queue_server):
    url = queue_server.url

    async def scenario():
        async with aiohttp.ClientSession() as s:
            _, stats = await get_json(s, f"{url}/system_stats")
            instance = stats["system"]["instance_id"]
            assert len(instance) >= 8
            assert stats["system"]["queue_backend"] == queue_server.backend
            if queue_server.backend == "redis":
                assert [w["id"] for w in stats["workers"]] == ["w1"]
            stored = (queue_server.base / "user" / "vidgraph-instance-id").read_text().strip()
            assert instance == stored
            async with s.ws_connect(f"{url}/ws?clientId=panel") as ws:
                first = json.loads((await ws.receive()).data)
                assert first["data"]["status"]["exec_info"]["paused"] is False
                await post_json(s, f"{url}/vidgraph/queue/pause", {})
                message = json.loads((await ws.receive(timeout=5)).data)
                assert message["type"] == "status"
                assert message["data"]["status"]["exec_info"]["paused"] is True
                await post_json(s, f"{url}/vidgraph/queue/resume", {})
    asyncio.run(scenario())


def test_pause_survives_a_restart_and_instance_id_stays(tmp_path):
    first = start_server(tmp_path)
    try:
        asyncio.run(_post(first.url + "/vidgraph/queue/pause"))
        instance = first.state.instance_id
    finally:
        stop_server(first)
    second = start_server(tmp_path)
    try:
        assert second.state.queue.paused is True
        assert second.state.instance_id == instance
    finally:
        stop_server(second)


async def _post(url):
    async with aiohttp.ClientSession() as s:
        assert (await post_json(s, url, {}))[0] == 200


def test_history_windows_and_deletes_match_across_backends(queue_server):
    url = queue_server.url

    async def scenario():
        async with aiohttp.ClientSession() as s:
            await post_json(s, f"{url}/history", {"clear": True})
            ids = []
            for i in range(5):  # one at a time, so the finishing order is the submit order
                ids.append(await submit(s, url, slow_prompt(steps=1, delay=0.0, tag=f"h{i}")))

                async def done(prompt_id=ids[-1]):
                    return prompt_id in (await get_json(s, f"{url}/history/{prompt_id}"))[1]
                await wait_for(done)
            assert list((await get_json(s, f"{url}/history"))[1]) == ids
            assert list((await get_json(s, f"{url}/history?max_items=2"))[1]) == ids[3:]
            assert list((await get_json(s, f"{url}/history?max_items=2&offset=1"))[1]) == ids[1:3]
            assert list((await get_json(s, f"{url}/history?offset=3"))[1]) == ids[3:]
            assert (await get_json(s, f"{url}/history?max_items=0"))[1] == {}
            await post_json(s, f"{url}/history", {"delete": [ids[1], "nope"]})
            assert list((await get_json(s, f"{url}/history"))[1]) == ids[:1] + ids[2:]
            assert (await history_state(s, url, ids[1]))[0] == 404
            await post_json(s, f"{url}/history", {"clear": True})
            assert (await get_json(s, f"{url}/history"))[1] == {}
    asyncio.run(scenario())
