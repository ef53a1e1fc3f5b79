"""100 concurrent submissions with interrupts and cancels in between: nothing lost, nothing twice."""
import asyncio
import json
import uuid
from collections import Counter

import aiohttp

from server_harness import get_json, post_json, run, slow_prompt


def test_100_concurrent_submissions_with_interrupts_and_cancels(server):
    async def scenario():
        client_id = uuid.uuid4().hex
        events = []
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{server.url}/ws?clientId={client_id}")

            async def listen():
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        events.append(json.loads(msg.data))
            listener = asyncio.create_task(listen())

            async def submit(i):
                return await post_json(session, f"{server.url}/prompt",
                                       {"prompt": slow_prompt(steps=10 if i % 20 == 0 else 3,
                                                              delay=0.03 if i % 20 == 0 else 0.005,
                                                              tag=f"c{i}"),
                                        "client_id": client_id})

            async def disturb():
                cancel_asked, interrupted = [], []
                for _ in range(5):
                    await asyncio.sleep(0.15)
                    _, queue = await get_json(session, f"{server.url}/queue")
                    if queue["queue_running"]:
                        running_id = queue["queue_running"][0][1]
                        await post_json(session, f"{server.url}/interrupt", {"prompt_id": running_id})
                        interrupted.append(running_id)
                    victims = [item[1] for item in queue["queue_pending"][-2:]]
                    await post_json(session, f"{server.url}/queue", {"delete": victims})
                    cancel_asked += victims
                return cancel_asked, interrupted

            results, (cancel_asked, interrupt_asked) = await asyncio.gather(
                asyncio.gather(*(submit(i) for i in range(100))), disturb())
            assert all(status == 200 for status, _ in results)
            ids = [body["prompt_id"] for _, body in results]
            numbers = sorted(body["number"] for _, body in results)
            assert len(set(ids)) == 100
            assert numbers == list(range(numbers[0], numbers[0] + 100))  # unique, gap-free

            for _ in range(400):
                _, queue = await get_json(session, f"{server.url}/queue")
                if not queue["queue_running"] and not queue["queue_pending"]:
                    break
                await asyncio.sleep(0.05)
            _, history = await get_json(session, f"{server.url}/history")
            await asyncio.sleep(0.2)  # let the last websocket messages arrive
            await ws.close()
            await listener

        finished = [i for i in ids if i in history]
        cancelled = [i for i in ids if i not in history]
        assert set(cancelled) <= set(cancel_asked)  # only a cancel removes a job
        assert len(cancelled) >= 1
        async with aiohttp.ClientSession() as session:
            for prompt_id in cancelled:
                assert (await get_json(session, f"{server.url}/history/{prompt_id}"))[0] == 404
        statuses = Counter(history[i]["status"]["status_str"] for i in finished)
        interrupted = [i for i in finished if "execution_interrupted" in
                       [m[0] for m in history[i]["status"]["messages"]]]
        assert statuses["success"] + len(interrupted) == len(finished)
        assert 1 <= len(interrupted) <= len(interrupt_asked)
        starts = Counter(e["data"]["prompt_id"] for e in events if e["type"] == "execution_start")
        done = Counter(e["data"]["prompt_id"] for e in events
                       if e["type"] == "executing" and e["data"]["node"] is None)
        assert starts == done == Counter(finished)  # each ran exactly once, and said so once
    run(scenario())
