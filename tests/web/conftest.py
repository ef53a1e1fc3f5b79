"""Browser tests for the editor: a real `vidgraph serve` on a free loopback port and Debian's
Chromium driven by Playwright (plain fixtures, no pytest-playwright; see
shared reference editor.md §1)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from browser_support import Editor

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vidgraph serve exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"vidgraph serve did not answer in {seconds}s:\n{log.read_text()[-3000:]}")


EXTENSION_JS = """
import { app } from "../../scripts/app.js";
app.registerExtension({
  name: "vidgraph.test.marker",
  setup() { document.body.dataset.extensionSetup = "yes"; },
  nodeRendered(node, element) { element.dataset.extensionSaw = node.type; },
});
"""


@pytest.fixture(scope="session")
def server_dirs(tmp_path_factory):
    """Folders for the server: the tiny random SVD checkpoint, and a custom node pack whose
    WEB_DIRECTORY holds one editor extension."""
    base = tmp_path_factory.mktemp("vidgraph-serve")
    for sub in ("models/checkpoints", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True)
    from vidgraph.nodes.svd.tiny import write_tiny_checkpoint

    write_tiny_checkpoint(base / "models" / "checkpoints" / "svd_tiny.safetensors")
    # The bundled demo workflow's own files (the tiny trained SVD, its first frame), so that it loads
    # clean and runs as `./dev demo` does.
    from vidgraph.nodes.svd.trained import CHECKPOINT_NAME, trained_checkpoint_path

    shutil.copyfile(trained_checkpoint_path(), base / "models" / "checkpoints" / CHECKPOINT_NAME)
    for image in ("vidgraph_demo.png", "vidgraph_shapes.png"):
        shutil.copyfile(Path(__file__).resolve().parents[2] / "workflows" / image, base / "input" / image)
    pack = base / "custom_nodes" / "vg_test_extension"
    (pack / "js").mkdir(parents=True)
    (pack / "__init__.py").write_text('NODE_CLASS_MAPPINGS = {}\nWEB_DIRECTORY = "./js"\n')
    (pack / "js" / "marker.js").write_text(EXTENSION_JS)
    return base


@pytest.fixture(scope="session")
def server(server_dirs):
    """Base URL of a real `vidgraph serve` (CPU, its own folders)."""
    port = _free_port()
    log = server_dirs / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    extra = json.loads(os.environ.get("VIDGRAPH_TEST_SERVE_ARGS", "[]"))
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vidgraph.cli", "serve", "--port", str(port), "--cpu",
             "--base-dir", str(server_dirs), "--custom-nodes", str(server_dirs / "custom_nodes"), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=server_dirs)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url + "/api/object_info", proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        message = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
                                     args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def editor(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15000)
    try:
        yield Editor(page, server).open()
    finally:
        context.close()
