"""Clients written for ComfyUI work unchanged; the editor's support routes answer."""
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from server_harness import get_json, image_prompt, post_json, run

CLIENT = Path(__file__).parent / "comfy_api_client.py"


def test_unmodified_comfyui_api_client_script(server, tmp_path):
    prompt_file = tmp_path / "prompt.json"
    prompt_file.write_text(json.dumps(image_prompt()))
    done = subprocess.run([sys.executable, str(CLIENT), f"127.0.0.1:{server.port}", str(prompt_file)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    images = json.loads(done.stdout)
    assert sorted(images) == ["1", "2"]
    assert len(images["2"]) == 1 and images["2"][0] > 50  # a PNG came back through /view


def test_every_api_route_also_answers_under_api(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            for path in ("/prompt", "/queue", "/history", "/object_info", "/object_info/TestSlow",
                         "/system_stats", "/embeddings", "/extensions", "/models",
                         "/models/checkpoints", "/features", "/users", "/settings",
                         "/vidgraph/workflows", "/internal/folder_paths"):
                for prefix in ("", "/api"):
                    status, body = await get_json(session, f"{server.url}{prefix}{path}")
                    assert status == 200, (prefix + path, body)
            _, info = await get_json(session, f"{server.url}/object_info")
            assert {"PrimitiveInt", "TestSlow"} <= set(info)
            assert info["TestSlow"]["input"]["required"]["steps"][0] == "INT"
            assert (await get_json(session, f"{server.url}/object_info/Nope"))[1] == {}
            _, paths = await get_json(session, f"{server.url}/internal/folder_paths")
            assert paths["checkpoints"] and all(p.endswith("checkpoints") for p in paths["checkpoints"][:1])
            _, features = await get_json(session, f"{server.url}/features")
            assert features == {"supports_preview_metadata": True,
                                "max_upload_size": 100 * 1024 * 1024}
            _, stats = await get_json(session, f"{server.url}/system_stats")
            assert stats["system"]["ram_total"] > 0 and stats["devices"]
            _, models = await get_json(session, f"{server.url}/models")
            assert "checkpoints" in models and "clip_vision" in models
            status, _ = await get_json(session, f"{server.url}/models/nonsense")
            assert status == 404
            _, extensions = await get_json(session, f"{server.url}/extensions")
            assert "/extensions/vg_test_nodes/hello.js" in extensions
            async with session.get(f"{server.url}/extensions/vg_test_nodes/hello.js") as r:
                assert r.status == 200 and "vg test extension" in await r.text()
            async with session.get(f"{server.url}/extensions/vg_test_nodes/../../__init__.py") as r:
                assert r.status == 404
            _, exec_info = await get_json(session, f"{server.url}/prompt")
            assert isinstance(exec_info["exec_info"]["queue_remaining"], int)
            calls = []
            executor = server.state.executor
            real_free = executor.free
            executor.free = lambda **kw: calls.append(kw) or real_free(**kw)
            try:
                assert (await post_json(session, f"{server.url}/free", {}))[0] == 200
                status, _ = await post_json(session, f"{server.url}/free",
                                            {"unload_models": True, "free_memory": False})
                assert status == 200
                assert (await post_json(session, f"{server.url}/free",
                                        {"unload_models": "yes"}))[0] == 400
                for _ in range(50):  # applied by the worker between prompts
                    if calls:
                        break
                    await asyncio.sleep(0.05)
                assert calls == [{"unload_models": True, "free_memory": False}]
            finally:
                executor.free = real_free
    run(scenario())


def test_queue_and_history_clear_and_delete(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            url = server.url
            _, blocker = await post_json(session, f"{url}/prompt",
                                         {"prompt": {"1": {"class_type": "TestSlow", "inputs": {
                                             "steps": 50, "delay": 0.02, "tag": "blocker"}}}})
            ids = []
            for i in range(3):
                _, body = await post_json(session, f"{url}/prompt", {"prompt": image_prompt(f"q{i}")})
                ids.append(body["prompt_id"])
            _, front = await post_json(session, f"{url}/prompt",
                                       {"prompt": image_prompt("front"), "front": True})
            _, queue = await get_json(session, f"{url}/queue")
            pending = [item[1] for item in queue["queue_pending"]]
            assert pending[0] == front["prompt_id"] and front["number"] < 0
            assert pending[1:] == ids
            assert await post_json(session, f"{url}/queue", {"delete": [ids[0]]}) == (200, None)
            _, queue = await get_json(session, f"{url}/queue")
            assert ids[0] not in [item[1] for item in queue["queue_pending"]]
            assert (await get_json(session, f"{url}/history/{ids[0]}"))[0] == 404
            await post_json(session, f"{url}/queue", {"clear": True})
            _, queue = await get_json(session, f"{url}/queue")
            assert queue["queue_pending"] == []
            assert [i[1] for i in queue["queue_running"]] == [blocker["prompt_id"]]
            await post_json(session, f"{url}/interrupt", {})
            for _ in range(100):
                _, history = await get_json(session, f"{url}/history/{blocker['prompt_id']}")
                if history:
                    break
                await asyncio.sleep(0.05)
            _, history = await get_json(session, f"{url}/history?max_items=1")
            assert list(history) == [blocker["prompt_id"]]
            await post_json(session, f"{url}/history", {"delete": [blocker["prompt_id"]]})
            assert (await get_json(session, f"{url}/history/{blocker['prompt_id']}"))[0] == 404
            await post_json(session, f"{url}/history", {"clear": True})
            assert (await get_json(session, f"{url}/history"))[1] == {}
    run(scenario())


def test_userdata_and_settings_round_trip(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            url = server.url
            workflow = {"nodes": [], "links": [], "version": 0.4}
            async with session.post(f"{url}/api/userdata/workflows%2Fmine.json",
                                    data=json.dumps(workflow),
                                    headers={"Content-Type": "application/json"}) as r:
                assert r.status == 200 and await r.json() == "workflows/mine.json"
            async with session.post(f"{url}/api/userdata/workflows%2Fmine.json?overwrite=false",
                                    data=b"{}", headers={"Content-Type": "application/json"}) as r:
                assert r.status == 409
            _, listing = await get_json(session, f"{url}/api/userdata?dir=workflows&recurse=true")
            assert listing == ["mine.json"]
            status, got = await get_json(session, f"{url}/api/userdata/workflows%2Fmine.json")
            assert status == 200 and got == workflow
            async with session.post(f"{url}/api/userdata/workflows%2Fmine.json/move/workflows%2Fb.json") as r:
                assert r.status == 200
            async with session.post(f"{url}/api/userdata/page.html", data=b"<script>x</script>",
                                    headers={"Content-Type": "application/octet-stream"}) as r:
                assert r.status == 200
            async with session.get(f"{url}/api/userdata/page.html") as r:
                assert r.headers["Content-Type"] == "application/octet-stream"
                assert r.headers["Content-Disposition"].startswith("attachment")
            for bad, status in (("..%2Fvidgraph-queue.sqlite3", 400), ("%2Fetc%2Fpasswd", 400),
                                ("a%5Cb", 400)):
                async with session.get(f"{url}/api/userdata/{bad}") as r:
                    assert r.status == status, bad
            async with session.delete(f"{url}/api/userdata/workflows%2Fb.json") as r:
                assert r.status == 204
            await post_json(session, f"{url}/api/settings", {"Comfy.Theme": "dark"})
            await post_json(session, f"{url}/api/settings/vidgraph.grid", 16)
            _, settings = await get_json(session, f"{url}/api/settings")
            assert settings == {"Comfy.Theme": "dark", "vidgraph.grid": 16}
            assert (await get_json(session, f"{url}/api/settings/vidgraph.grid"))[1] == 16
    run(scenario())


def test_bundled_workflows_and_editor_files(server, tmp_path):
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "svd_basic.json").write_text(json.dumps({"1": {"class_type": "X", "inputs": {}}}))
    (workflows / "svd_ui.json").write_text(json.dumps({"nodes": [], "links": []}))
    (workflows / "ui").mkdir()
    (workflows / "ui" / "svd_basic.json").write_text(json.dumps({"nodes": [{"id": 1}], "links": []}))
    web_root = tmp_path / "web"
    web_root.mkdir()
    (web_root / "index.html").write_text("<!doctype html><title>vidgraph</title>")
    config = server.state.config
    config.workflows_root, config.web_root = workflows, web_root
    try:
        async def scenario():
            async with aiohttp.ClientSession() as session:
                _, listing = await get_json(session, f"{server.url}/vidgraph/workflows")
                assert listing == [{"name": "svd_basic", "file": "svd_basic.json", "format": "api",
                                    "ui_file": "ui/svd_basic.json"},
                                   {"name": "svd_ui", "file": "svd_ui.json", "format": "ui"}]
                status, body = await get_json(session, f"{server.url}/api/vidgraph/workflows/ui/svd_basic.json")
                assert status == 200 and body == {"nodes": [{"id": 1}], "links": []}
                async with session.get(f"{server.url}/vidgraph/workflows/ui/..%2Fsvd_ui.json") as r:
                    assert r.status in (400, 404)
                status, body = await get_json(session, f"{server.url}/api/vidgraph/workflows/svd_ui")
                assert status == 200 and body == {"nodes": [], "links": []}
                for bad in ("..%2Fsecret", "%2e%2e"):
                    async with session.get(f"{server.url}/vidgraph/workflows/{bad}") as r:
                        assert r.status in (400, 404), bad
                async with session.get(f"{server.url}/") as r:
                    assert r.status == 200 and "vidgraph" in await r.text()
                    assert r.headers["Cache-Control"] == "no-cache"
                async with session.get(f"{server.url}/../../etc/passwd") as r:
                    assert r.status == 404
                async with session.get(f"{server.url}/nothing-here.js") as r:
                    assert r.status == 404 and (await r.json())["error"]["type"] == "not_found"
        run(scenario())
    finally:
        config.workflows_root = config.web_root = None


def test_concurrent_setting_posts_keep_every_setting(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            url = f"{server.url}/api/settings"
            results = await asyncio.gather(*(post_json(session, f"{url}/race.{i}", i)
                                             for i in range(30)))
            assert all(status == 200 for status, _ in results)
            _, settings = await get_json(session, url)
            assert {k: v for k, v in settings.items() if k.startswith("race.")} == \
                {f"race.{i}": i for i in range(30)}
    run(scenario())


def test_startup_names_the_newest_outputs_of_a_prefix_for_the_editor(server):
    out = Path(server.state.config.folders.output_dir)
    (out / "vidgraph").mkdir(parents=True, exist_ok=True)
    for name in ("demo_00001_.webp", "demo_00002_.mp4", "demo_00003_.webp", "demo_00004_.mp4", "demolition_00009_.png"):
        (out / "vidgraph" / name).write_bytes(b"x")
    (out / "single.png").write_bytes(b"x")
    config = server.state.config
    config.show = ["vidgraph/demo"]
    try:
        async def scenario():
            async with aiohttp.ClientSession() as session:
                _, body = await get_json(session, f"{server.url}/api/vidgraph/startup")
                assert body["id"] == config.startup_id
                assert body["show"] == [{"filename": "demo_00003_.webp", "subfolder": "vidgraph", "type": "output"},
                                        {"filename": "demo_00004_.mp4", "subfolder": "vidgraph", "type": "output"}]
                _, body = await get_json(session, f"{server.url}/vidgraph/startup?show=single.png")
                assert body["show"] == [{"filename": "single.png", "subfolder": "", "type": "output"}]
                _, body = await get_json(session, f"{server.url}/vidgraph/startup?show=vidgraph/nothing")
                assert body["show"] == []
                for bad in ("../etc/passwd", "/etc/passwd", "..%2Fx"):
                    status, _ = await get_json(session, f"{server.url}/vidgraph/startup?show={bad}")
                    assert status in (400, 403), bad
        run(scenario())
    finally:
        config.show = []
