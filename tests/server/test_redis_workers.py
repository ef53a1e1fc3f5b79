"""Many `vidgraph worker` processes on Redis Streams: every job finishes exactly once (one history
entry, one set of output files) through worker kills, a poison job, and a Redis restart."""
import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from redis_harness import RedisProcess, Workers, require_redis, wait_until
from server_harness import start_server, stop_server


@pytest.fixture
def farm(tmp_path):
    """Redis (AOF, password) + a server on it; the test starts its workers."""
    require_redis()
    redis_server = RedisProcess(tmp_path / "redis")
    workers = Workers(tmp_path, redis_server.url, lease=1.5)
    server = None
    try:  # whatever fails to start, what did start is stopped
        redis_server.start()
        workers.url = redis_server.url
        server = start_server(tmp_path, queue_url=redis_server.url)
        yield server, redis_server, workers
    finally:
        workers.stop_all()
        if server is not None:
            stop_server(server)
        redis_server.stop()
    assert server.unexpected_errors == 0


def request(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def job(tag, steps=1, delay=0.0, save=True):
    prompt = {"1": {"class_type": "TestSlow", "inputs": {"steps": steps, "delay": delay, "tag": tag}}}
    if save:
        prompt["2"] = {"class_type": "TestSaveImage", "inputs": {
            "size": 8, "filename_prefix": "farm/out", "tag": tag, "count": ["1", 0]}}
    return prompt


def submit(server, prompt):
    prompt_id = uuid.uuid4().hex
    assert request(f"{server.url}/prompt", {"prompt": prompt, "prompt_id": prompt_id})["prompt_id"]
    return prompt_id


def wait_for_workers(redis_server, ids, timeout=60):
    client = redis_server.client()
    wait_until(lambda: all(client.exists(f"vidgraph:alive:{i}") for i in ids), timeout,
               what=f"workers {ids}")


def history(server):
    try:
        return request(f"{server.url}/history")
    except urllib.error.HTTPError as e:
        if e.code != 503:
            raise
        return {}  # the queue is reconnecting


def output_files(base):
    folder = base / "output" / "farm"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def staging_left(base):
    staging = base / "output" / ".vidgraph-staging"
    return [p for p in staging.rglob("*") if p.is_file()] if staging.is_dir() else []


def test_200_jobs_over_3_workers_all_finish_once(farm):
    server, redis_server, workers = farm
    for name in ("w1", "w2", "w3"):
        workers.start(name)
    wait_for_workers(redis_server, ["w1", "w2", "w3"])
    ids = [submit(server, job(f"j{i}", delay=0.01)) for i in range(200)]
    done = wait_until(lambda: len(h := history(server)) == 200 and h, 120, 0.2, "200 jobs")
    assert sorted(done) == sorted(ids)
    assert all(entry["status"]["status_str"] == "success" for entry in done.values())
    names = [item["filename"] for entry in done.values() for item in entry["outputs"]["2"]["images"]]
    assert len(set(names)) == 200 and output_files(server.base) == sorted(names)
    ran_on = {request(f"{server.url}/vidgraph/jobs/{i}")["worker"] for i in ids}
    assert ran_on == {"w1", "w2", "w3"}
    assert all(request(f"{server.url}/vidgraph/jobs/{i}")["attempts"] == 1 for i in ids[:20])
    assert staging_left(server.base) == []
    client = redis_server.client()
    assert client.zcard("vidgraph:pending") == 0 and client.scard("vidgraph:running") == 0
    assert client.xpending("vidgraph:q:any", "workers")["pending"] == 0  # every token acked


def test_kill9_worker_mid_job_completes_once_on_another(farm):
    server, redis_server, workers = farm
    workers.start("doomed")
    wait_for_workers(redis_server, ["doomed"])
    prompt_id = submit(server, job("long", steps=40, delay=0.05))
    wait_until(lambda: request(f"{server.url}/vidgraph/jobs/{prompt_id}")["state"] == "running",
               30, what="the job to start")
    time.sleep(0.3)  # mid-job
    workers.kill9("doomed")
    workers.start("rescuer")
    entry = wait_until(lambda: history(server).get(prompt_id), 60, 0.1, "the job to finish")
    assert entry["status"]["status_str"] == "success"
    assert entry["status"]["messages"][0][0] == "vidgraph_requeued"
    status = request(f"{server.url}/vidgraph/jobs/{prompt_id}")
    assert (status["worker"], status["attempts"], status["interruptions"]) == ("rescuer", 2, 1)
    assert list(history(server)) == [prompt_id]
    assert output_files(server.base) == [entry["outputs"]["2"]["images"][0]["filename"]]
    assert staging_left(server.base) == []


def test_poison_job_lands_in_the_dead_letter_list(farm):
    server, redis_server, workers = farm
    for name in ("a", "b", "c"):
        workers.start(name)
    wait_for_workers(redis_server, ["a", "b", "c"])
    poison = submit(server, {"1": {"class_type": "TestCrash", "inputs": {"tag": "boom"}}})
    entry = wait_until(lambda: history(server).get(poison), 90, 0.1, "the poison job to be buried")
    assert entry["status"]["status_str"] == "error"
    message = entry["status"]["messages"][-1]
    assert message[0] == "execution_error" and message[1]["exception_type"] == "WorkerLost"
    assert "dead-letter" in message[1]["exception_message"]
    dead = request(f"{server.url}/vidgraph/queue/dead")["dead"]
    assert [d["prompt_id"] for d in dead] == [poison] and "dead-letter" in dead[0]["reason"]
    killed = [name for name in ("a", "b", "c") if workers.procs[name].poll() is not None]
    assert len(killed) == 2  # max_attempts = 2 deliveries, then the third worker buries it
    healthy = submit(server, job("after", save=False))
    assert wait_until(lambda: history(server).get(healthy), 30, 0.1,
                      "a job after the poison")["status"]["status_str"] == "success"


def test_redis_restart_with_aof_loses_nothing_acknowledged(farm):
    server, redis_server, workers = farm
    for name in ("w1", "w2"):
        workers.start(name)
    wait_for_workers(redis_server, ["w1", "w2"])
    ids = [submit(server, job(f"r{i}", steps=2, delay=0.02)) for i in range(60)]
    acknowledged = wait_until(lambda: len(h := history(server)) >= 15 and set(h), 60, 0.05,
                              "some jobs to finish")
    redis_server.kill9()
    time.sleep(0.5)
    with pytest.raises(urllib.error.HTTPError) as refused:  # the queue is down: 503, not 500
        request(f"{server.url}/history")
    assert refused.value.code == 503
    redis_server.start()
    done = wait_until(lambda: len(h := history(server)) == 60 and h, 90, 0.2, "every job after the restart")
    assert acknowledged <= set(done) and sorted(done) == sorted(ids)
    assert all(entry["status"]["status_str"] == "success" for entry in done.values())
    names = [item["filename"] for entry in done.values() for item in entry["outputs"]["2"]["images"]]
    assert len(set(names)) == 60 and output_files(server.base) == sorted(names)


def test_websocket_events_from_a_worker_reach_the_browser_in_comfyui_shapes(farm):
    import asyncio

    import aiohttp

    from server_harness import collect_until_done, post_json, slow_prompt

    server, redis_server, workers = farm
    workers.start("w1")
    wait_for_workers(redis_server, ["w1"])

    async def scenario():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{server.url}/ws?clientId=browser") as ws:
                await ws.send_str(json.dumps({"type": "feature_flags",
                                              "data": {"supports_preview_metadata": True}}))
                prompt = slow_prompt(steps=3, delay=0.01, previews=True)
                prompt["2"] = job("ws")["2"]
                prompt["2"]["inputs"]["count"] = ["1", 0]
                status, body = await post_json(s, f"{server.url}/prompt",
                                               {"prompt": prompt, "client_id": "browser"})
                assert status == 200
                messages = await collect_until_done(ws, body["prompt_id"], timeout=30)
                return body["prompt_id"], messages
    prompt_id, messages = asyncio.run(scenario())
    kinds = [kind for kind, _ in messages]
    assert kinds.index("execution_start") < kinds.index("progress") < kinds.index("execution_success")
    progress = [data for kind, data in messages if kind == "progress"]
    assert progress[-1] == {"value": 3, "max": 3, "prompt_id": prompt_id, "node": "1"}
    frames = [data for kind, data in messages if kind == "binary"]
    assert frames and int.from_bytes(frames[0][:4], "big") == 4  # PREVIEW_IMAGE_WITH_METADATA
    executed = {data["node"]: data["output"] for kind, data in messages if kind == "executed"}
    image = executed["2"]["images"][0]
    assert image["type"] == "output" and (server.base / "output" / "farm" / image["filename"]).is_file()
    assert messages[-1] == ("executing", {"node": None, "prompt_id": prompt_id})
    assert history(server)[prompt_id]["outputs"]["2"] == executed["2"]


def test_warm_worker_gets_its_model_set_and_a_cold_one_steals_after_a_delay(farm):
    server, redis_server, workers = farm
    workers.extra = ["--steal-after", "1.0"]
    for name in ("a", "b"):
        workers.start(name)
    wait_for_workers(redis_server, ["a", "b"])

    def model_job(tag, delay=0.0, steps=1):
        return {"1": {"class_type": "TestSlow", "inputs": {"steps": steps, "delay": delay,
                                                          "tag": "checkpoint.safetensors"}},
                "2": {"class_type": "TestStamp", "inputs": {"tag": tag}}}

    def run(prompt):
        prompt_id = submit(server, prompt)
        wait_until(lambda: history(server).get(prompt_id), 30, 0.05, "the job")
        return request(f"{server.url}/vidgraph/jobs/{prompt_id}")["worker"]

    first = run(model_job("first"))
    other = {"a": "b", "b": "a"}[first]
    # the next jobs with the same model file go to the worker that holds it
    assert [run(model_job(f"again{i}")) for i in range(4)] == [first] * 4
    # while it is busy, a job for its model waits, then the cold worker takes it
    busy = submit(server, model_job("busy", delay=0.1, steps=40))
    wait_until(lambda: request(f"{server.url}/vidgraph/jobs/{busy}")["state"] == "running", 30,
               what="the long job")
    submitted = time.time()
    stolen = submit(server, model_job("stolen"))
    entry = wait_until(lambda: history(server).get(stolen), 30, 0.05, "the stolen job")
    assert request(f"{server.url}/vidgraph/jobs/{stolen}")["worker"] == other
    assert entry["outputs"]["2"]["finished_at"][0] - submitted >= 1.0  # it waited for the warm one


def test_an_unreachable_queue_is_one_clear_line_without_the_password(tmp_path, capsys):
    require_redis()
    from redis_harness import free_port
    from vidgraph import cli

    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    for command in (["worker", "--queue", url], ["serve", "--queue", url, "--port", "0"]):
        assert cli.main([*command, "--base-dir", str(tmp_path), "--no-builtin-nodes"]) == 2
        err = capsys.readouterr().err
        assert "cannot reach the queue at redis://***@127.0.0.1" in err, err
        assert "hunter2" not in err and "Traceback" not in err


def test_a_frozen_worker_that_lost_its_job_leaves_no_second_entry_or_file(farm):
    """SIGSTOP past the lease: another worker takes the job over; when the frozen one wakes up it
    finds it no longer owns the job, writes no history and takes back any file it published."""
    import os
    import signal

    server, redis_server, workers = farm
    frozen = workers.start("frozen")
    wait_for_workers(redis_server, ["frozen"])
    prompt_id = submit(server, job("frozen", steps=20, delay=0.05))
    wait_until(lambda: request(f"{server.url}/vidgraph/jobs/{prompt_id}")["state"] == "running",
               30, what="the job to start")
    time.sleep(0.3)
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        workers.start("awake")
        entry = wait_until(lambda: history(server).get(prompt_id), 60, 0.1, "the takeover")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    client = redis_server.client()
    wait_until(lambda: json.loads(client.hget("vidgraph:workers", "frozen") or "{}").get("job") is None
               and not staging_left(server.base), 30, 0.1, "the frozen worker to give up")
    time.sleep(0.5)
    assert list(history(server)) == [prompt_id] and entry["status"]["status_str"] == "success"
    assert request(f"{server.url}/vidgraph/jobs/{prompt_id}")["worker"] == "awake"
    assert output_files(server.base) == [entry["outputs"]["2"]["images"][0]["filename"]]
    assert frozen.poll() is None  # it lives on and takes new jobs
    after = submit(server, job("after", save=False))
    assert wait_until(lambda: history(server).get(after), 30, 0.1, "a new job")


def test_scripts_answer_a_retried_call_as_the_first(tmp_path):
    """redis-py retries a call whose reply a Redis restart lost: binding again must not take a
    second job, finishing again must not read as a lost lease (which would undo the outputs)."""
    require_redis()
    from vidgraph.server.redis_log import GROUP, Keys, register_scripts

    server = RedisProcess(tmp_path / "redis")
    try:
        server.start()
        r, keys = server.client(), Keys()
        scripts = register_scripts(r)
        for i in ("a", "b"):
            assert scripts["submit"](args=[keys.prefix, i, "sha", "", "0", 0, "", 1.0, 2, "", "{}",
                                           "{}", "[]", ""])[0] == "created"
        [[_, [(entry, _)]]] = r.xreadgroup(GROUP, "w", {keys.stream("any"): ">"}, count=1)
        bind = [keys.prefix, "any", entry, "w", 2.0]
        assert scripts["bind"](args=bind) == ["bound", "a"]
        assert scripts["bind"](args=bind) == ["bound", "a"]  # b stays pending
        assert r.zrange(keys.pending, 0, -1) == ["b"]
        finish = [keys.prefix, "a", "any", entry, "w", "success", "{}", "{}", "{}", 3.0, 100, ""]
        assert scripts["finish"](args=finish) == "done"
        assert scripts["finish"](args=finish) == "done"
        assert r.zrange(keys.history, 0, -1) == ["a"] and r.get(keys.prefix + "finish_counter") == "1"
        other = [keys.prefix, "a", "any", entry, "intruder", "success", "{}", "{}", "{}", 3.0, 100, ""]
        assert scripts["finish"](args=other) == "lost"
    finally:
        server.stop()


def test_a_stopped_worker_hands_its_job_back_without_using_an_attempt(farm):
    server, redis_server, workers = farm
    leaving = workers.start("leaving")
    wait_for_workers(redis_server, ["leaving"])
    prompt_id = submit(server, job("handed back", steps=60, delay=0.05))
    wait_until(lambda: request(f"{server.url}/vidgraph/jobs/{prompt_id}")["state"] == "running",
               30, what="the job to start")
    leaving.terminate()  # SIGTERM: a clean stop, as systemd or Ctrl-C gives
    assert leaving.wait(15) == 0
    status = request(f"{server.url}/vidgraph/jobs/{prompt_id}")
    assert (status["state"], status["attempts"]) == ("pending", 0)
    assert redis_server.client().hget("vidgraph:workers", "leaving") is None
    workers.start("next")
    entry = wait_until(lambda: history(server).get(prompt_id), 60, 0.1, "the job to finish")
    assert entry["status"]["status_str"] == "success"
    status = request(f"{server.url}/vidgraph/jobs/{prompt_id}")
    assert (status["worker"], status["attempts"], status["interruptions"]) == ("next", 1, 0)
    assert len(output_files(server.base)) == 1 and staging_left(server.base) == []


def test_a_worker_stopped_as_it_takes_a_job_hands_it_back_unrun(farm, tmp_path):
    """The stop can land after the job is taken in Redis but before it starts running: the job
    must still go back, not run to the end on a worker that was told to stop."""
    import argparse

    from redis_harness import PACK_DIR
    from vidgraph.engine.executor import Executor
    from vidgraph.runtime import build_runtime
    from vidgraph.server import redis_worker

    server, redis_server, _ = farm
    parser = argparse.ArgumentParser()
    redis_worker.add_arguments(parser)
    args = parser.parse_args(["--queue", redis_server.url, "--worker-id", "in-process",
                              "--no-builtin-nodes", "--custom-nodes", str(PACK_DIR),
                              "--base-dir", str(tmp_path / "in-process")])
    runtime = build_runtime(args, builtin_nodes=False)
    runtime.folders.ensure_dirs()
    worker = redis_worker.RedisWorker(args.queue, Executor(runtime.registry, runtime.folders),
                                      args.worker_id, "cpu", redis_worker.WorkerOptions(lease=1.5))
    take = worker._next

    def take_then_stop():
        work = take()
        if work is not None:
            worker.stop()  # as SIGTERM would, in the window between taking and running
        return work

    worker._next = take_then_stop
    prompt_id = submit(server, job("stopped while taken", steps=20, delay=0.05))
    worker.run()
    status = request(f"{server.url}/vidgraph/jobs/{prompt_id}")
    assert (status["state"], status["attempts"]) == ("pending", 0)
    assert history(server).get(prompt_id) is None
