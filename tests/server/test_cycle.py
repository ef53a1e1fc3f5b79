"""The full cycle: POST /prompt -> progress and previews on /ws -> executed -> history -> /view."""
import asyncio
import json
import struct
import uuid

import aiohttp

from server_harness import collect_until_done, get_json, image_prompt, post_json, run, slow_prompt


def test_full_cycle_prompt_progress_executed_history_view(server):
    async def scenario():
        client_id = uuid.uuid4().hex
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
                first = json.loads((await ws.receive()).data)
                assert first["type"] == "status"
                assert first["data"]["sid"] == client_id
                assert "queue_remaining" in first["data"]["status"]["exec_info"]
                status, body = await post_json(session, f"{server.url}/prompt",
                                               {"prompt": image_prompt(), "client_id": client_id})
                assert status == 200, body
                assert set(body) == {"prompt_id", "number", "node_errors"}
                prompt_id = body["prompt_id"]
                messages = await collect_until_done(ws, prompt_id)
            types = [t for t, _ in messages]
            for expected in ("execution_start", "execution_cached", "executing", "progress",
                             "executed", "execution_success"):
                assert expected in types, (expected, types)
            assert types.index("execution_start") < types.index("execution_success")
            progress = [d for t, d in messages if t == "progress"]
            assert progress[-1] == {"value": 2, "max": 2, "prompt_id": prompt_id, "node": "1"}
            executed = [d for t, d in messages if t == "executed" and d["node"] == "2"][0]
            image = executed["output"]["images"][0]
            assert executed["prompt_id"] == prompt_id and executed["display_node"] == "2"

            status, history = await get_json(session, f"{server.url}/history/{prompt_id}")
            assert status == 200
            entry = history[prompt_id]
            assert entry["status"]["status_str"] == "success" and entry["status"]["completed"]
            assert entry["outputs"]["2"]["images"] == [image]
            assert entry["prompt"][1] == prompt_id and sorted(entry["prompt"][4]) == ["1", "2"]
            assert [m[0] for m in entry["status"]["messages"]][0] == "execution_start"

            async with session.get(f"{server.url}/view", params=image) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "image/png"
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["Content-Disposition"].startswith("inline")
                assert (await r.read()).startswith(b"\x89PNG")
            async with session.get(f"{server.url}/api/view",
                                   params={**image, "preview": "jpeg;80"}) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg"
                assert (await r.read()).startswith(b"\xff\xd8")

    run(scenario())


def test_binary_previews_in_both_comfyui_layouts(server):
    async def scenario(negotiate: bool):
        client_id = uuid.uuid4().hex
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
                await ws.receive()
                if negotiate:
                    await ws.send_str(json.dumps({"type": "feature_flags",
                                                  "data": {"supports_preview_metadata": True}}))
                    reply = json.loads((await ws.receive()).data)
                    while reply["type"] == "status":  # queue broadcasts may come first
                        reply = json.loads((await ws.receive()).data)
                    assert reply["type"] == "feature_flags"
                    assert reply["data"]["supports_preview_metadata"] is True
                _, body = await post_json(session, f"{server.url}/prompt",
                                          {"prompt": slow_prompt(3, previews=True),
                                           "client_id": client_id})
                messages = await collect_until_done(ws, body["prompt_id"])
        frames = [d for t, d in messages if t == "binary"]
        assert len(frames) == 3
        event, = struct.unpack(">I", frames[0][:4])
        if negotiate:
            assert event == 4
            length, = struct.unpack(">I", frames[0][4:8])
            meta = json.loads(frames[0][8:8 + length])
            assert meta["node_id"] == "1" and meta["prompt_id"] == body["prompt_id"]
            assert meta["image_type"] == "image/jpeg"
            assert frames[0][8 + length:].startswith(b"\xff\xd8")
        else:
            assert event == 1
            assert struct.unpack(">I", frames[0][4:8])[0] == 1  # JPEG
            assert frames[0][8:].startswith(b"\xff\xd8")

    run(scenario(False))
    run(scenario(True))


def test_queue_answers_while_a_long_prompt_runs(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            _, body = await post_json(session, f"{server.url}/prompt",
                                      {"prompt": slow_prompt(steps=200, delay=0.05)})
            # Answers arrive while the prompt is still running, several times over: a loop
            # blocked by execution could not answer before the prompt ended (no timing needed).
            answers_while_running = 0
            for _ in range(500):
                status, queue = await get_json(session, f"{server.url}/queue")
                assert status == 200
                listed = [item[1] for item in queue["queue_running"] + queue["queue_pending"]]
                assert listed == [body["prompt_id"]]
                answers_while_running += bool(queue["queue_running"])
                if answers_while_running == 5:
                    break
                await asyncio.sleep(0.02)
            assert answers_while_running == 5
            assert (await get_json(session, f"{server.url}/history/{body['prompt_id']}"))[1] == {}
            status, _ = await post_json(session, f"{server.url}/interrupt",
                                        {"prompt_id": body["prompt_id"]})
            assert status == 200
            for _ in range(100):
                status, history = await get_json(session, f"{server.url}/history/{body['prompt_id']}")
                if history:
                    break
                await asyncio.sleep(0.05)
            entry = history[body["prompt_id"]]
            assert entry["status"]["status_str"] == "error"
            assert "execution_interrupted" in [m[0] for m in entry["status"]["messages"]]

    run(scenario())


def test_status_broadcasts_and_reconnect_during_a_run(server):
    async def scenario():
        client_id = uuid.uuid4().hex
        async with aiohttp.ClientSession() as session:
            while (await get_json(session, f"{server.url}/prompt"))[1]["exec_info"]["queue_remaining"]:
                await asyncio.sleep(0.05)  # earlier tests' prompts are done
            async with session.ws_connect(f"{server.url}/ws") as watcher:
                await watcher.receive()  # its own status, with a server-made sid
                _, body = await post_json(session, f"{server.url}/prompt",
                                          {"prompt": slow_prompt(steps=60, delay=0.025),
                                           "client_id": client_id})
                remaining = []
                while not remaining or remaining[-1] != 0:
                    message = json.loads((await watcher.receive(timeout=10)).data)
                    assert message["type"] == "status", message  # it submitted nothing
                    count = message["data"]["status"]["exec_info"]["queue_remaining"]
                    if count == 0 and not remaining:
                        continue  # a late broadcast from before our prompt
                    remaining.append(count)
                    if len(remaining) == 1:
                        # the submitter connects while its prompt is queued or running
                        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
                            first = json.loads((await ws.receive(timeout=10)).data)
                            second = json.loads((await ws.receive(timeout=10)).data)
                            while second["type"] == "status":  # the run's start broadcast
                                second = json.loads((await ws.receive(timeout=10)).data)
                            assert first["type"] == "status" and first["data"]["sid"] == client_id
                            # where the run is: about to start, just started, or inside node 1
                            assert second["type"] in ("execution_start", "execution_cached",
                                                      "executing", "progress"), (first, second)
                            assert second["data"]["prompt_id"] == body["prompt_id"]
                            await collect_until_done(ws, body["prompt_id"])
                assert remaining[0] == 1 and remaining[-1] == 0, remaining
    run(scenario())


def test_partial_execution_targets_run_only_those_outputs(server):
    async def scenario():
        client_id = uuid.uuid4().hex
        prompt = {"1": {"class_type": "TestStamp", "inputs": {"tag": uuid.uuid4().hex}},
                  "2": {"class_type": "TestSlow", "inputs": {"steps": 1, "delay": 0.0,
                                                             "tag": uuid.uuid4().hex}}}
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
                await ws.receive()
                status, body = await post_json(session, f"{server.url}/prompt", {
                    "prompt": prompt, "client_id": client_id, "partial_execution_targets": ["2"]})
                assert status == 200, body
                messages = await collect_until_done(ws, body["prompt_id"])
            executed = [d["node"] for t, d in messages if t == "executed"]
            assert executed == ["2"]
            _, history = await get_json(session, f"{server.url}/history/{body['prompt_id']}")
            assert history[body["prompt_id"]]["prompt"][4] == ["2"]
            status, body = await post_json(session, f"{server.url}/prompt", {
                "prompt": prompt, "partial_execution_targets": []})
            assert status == 400 and body["error"]["type"] == "prompt_no_outputs"
    run(scenario())
