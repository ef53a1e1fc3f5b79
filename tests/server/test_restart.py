"""`kill -9` mid-run, restart: the queue and history survive; the cut-off prompt is re-queued once,
then ended as interrupted; outputs are still served by /view."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from server_harness import PACK_DIR, image_prompt

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, base: Path, port: int):
        self.base, self.port = base, port
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self, builtin_nodes=False):
        log = open(self.base / "server.log", "a")
        only_pack = [] if builtin_nodes else ["--no-builtin-nodes"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidgraph.server.serve", "--port", str(self.port), *only_pack,
             "--custom-nodes", str(PACK_DIR), "--base-dir", str(self.base)],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                self.get("/prompt")
                return
            except (urllib.error.URLError, ConnectionError):
                assert self.proc.poll() is None, (self.base / "server.log").read_text()
                time.sleep(0.1)
        raise AssertionError("server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def status(self, path):
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def post(self, path, body):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def wait_for(self, predicate, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError("condition not reached")

    def running_ids(self):
        return [item[1] for item in self.get("/queue")["queue_running"]]


def slow(tag):
    return {"1": {"class_type": "TestSlow", "inputs": {"steps": 400, "delay": 0.05, "tag": tag}}}


def test_sigkill_mid_run_keeps_queue_and_history(tmp_path):
    server = ServerProcess(tmp_path, free_port())
    server.start()
    try:
        done = server.post("/prompt", {"prompt": image_prompt("before-crash")})["prompt_id"]
        server.wait_for(lambda: server.get(f"/history/{done}"))
        image = server.get(f"/history/{done}")[done]["outputs"]["2"]["images"][0]
        cut = server.post("/prompt", {"prompt": slow("cut-off")})["prompt_id"]
        waiting = [server.post("/prompt", {"prompt": image_prompt(f"queued{i}")})["prompt_id"]
                   for i in range(2)]
        server.wait_for(lambda: server.running_ids() == [cut])
        server.kill9()

        server.start()  # first restart: the cut-off prompt is queued again (attempt 2 of 2)
        assert server.get(f"/history/{done}")[done]["outputs"]["2"]["images"] == [image]
        query = "&".join(f"{k}={v}" for k, v in image.items())
        assert server.status(f"/view?{query}") == 200
        job = server.get(f"/vidgraph/jobs/{cut}")
        assert job["interruptions"] == 1 and job["status"] in ("queued", "running")
        queue = server.get("/queue")
        assert [i[1] for i in queue["queue_running"] + queue["queue_pending"]] == [cut, *waiting]
        server.wait_for(lambda: server.running_ids() == [cut])
        server.kill9()

        server.start()  # second restart: out of attempts, it ends as interrupted; the rest run
        entry = server.get(f"/history/{cut}")[cut]
        assert entry["status"]["status_str"] == "error" and not entry["status"]["completed"]
        assert entry["status"]["messages"][0][0] == "execution_interrupted"
        assert server.get(f"/vidgraph/jobs/{cut}")["status"] == "interrupted"
        for prompt_id in waiting:
            server.wait_for(lambda: server.get(f"/history/{prompt_id}"))
            messages = server.get(f"/history/{prompt_id}")[prompt_id]["status"]["messages"]
            assert messages[0][0] == "execution_start"  # never cut off: no re-queue note
        history = server.get("/history")
        assert list(history)[:2] == [done, cut] and set(history) == {done, cut, *waiting}
        assert server.status(f"/history/{cut}x") == 404
    finally:
        server.stop()


def test_clean_stop_puts_the_running_prompt_back_without_using_an_attempt(tmp_path):
    server = ServerProcess(tmp_path, free_port())
    server.start()
    try:
        cut = server.post("/prompt", {"prompt": slow("stopped")})["prompt_id"]
        server.wait_for(lambda: server.running_ids() == [cut])
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        server.start()
        job = server.get(f"/vidgraph/jobs/{cut}")
        assert job["status"] in ("queued", "running") and job["interruptions"] == 0
        assert job["attempts"] <= 1
        assert server.status(f"/history/{cut}") == 200 and server.get(f"/history/{cut}") == {}
    finally:
        server.stop()


def test_serve_command_loads_the_builtin_pack_and_custom_nodes(tmp_path):
    server = ServerProcess(tmp_path, free_port())
    server.start(builtin_nodes=True)
    try:
        info = server.get("/object_info")
        assert {"LoadImage", "SaveImage", "PrimitiveInt", "TestSlow"} <= set(info)
        assert (tmp_path / "user" / "vidgraph-queue.sqlite3").is_file()
    finally:
        server.proc.terminate()
        assert server.proc.wait(20) == 0


def test_a_second_server_on_the_same_user_dir_is_refused(tmp_path):
    server = ServerProcess(tmp_path, free_port())
    server.start()
    try:
        second = subprocess.run(
            [sys.executable, "-m", "vidgraph.server.serve", "--port", str(free_port()),
             "--no-builtin-nodes", "--base-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, cwd=REPO)
        assert second.returncode == 2
        assert "another vidgraph server is using" in second.stderr
        assert server.get("/prompt")["exec_info"]["queue_remaining"] == 0
    finally:
        server.stop()
