"""Browser tests for the editor: a real `vidgraph serve` on a free loopback port and Debian's
Chromium driven by Playwright (plain fixtures, no pytest-playwright; see
shared reference editor.md §1)."""
from __future__ import annotations

import base64
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

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "web"
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
            [sys.executable, "-m", "vidgraph.server.cli", "serve", "--port", str(port), "--cpu",
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


class Editor:
    """A page with the editor loaded, plus helpers the tests share."""

    def __init__(self, page, url):
        self.page = page
        self.url = url
        self.console_errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))

    def open(self):
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-ready=true]")
        return self

    def shot(self, name: str, locator=None):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (locator or self.page).screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def workflow(self) -> dict:
        return self.page.evaluate("vidgraph.graph.serialize()")

    def prompt(self) -> dict:
        return self.page.evaluate("import('/js/convert.js').then(m => m.graphToPrompt(vidgraph.graph))")

    def node(self, type_: str, nth: int = 0):
        return self.page.locator(f".node[data-type='{type_}']").nth(nth)

    def add_node(self, type_: str, query: str, x: float, y: float):
        """Double-click the canvas at (x, y), type in the search box, press Enter."""
        before = self.page.locator(f".node[data-type='{type_}']").count()
        self.page.mouse.dblclick(x, y)
        self.page.fill("#search-input", query)
        first = self.page.locator("#search-results li").first
        assert first.get_attribute("data-node-type") == type_, first.inner_text()
        self.page.keyboard.press("Enter")
        self.page.wait_for_function(f"document.querySelectorAll(\".node[data-type='{type_}']\").length > {before}")
        return self.node(type_, before)

    def drag(self, source, target, steps: int = 8):
        a, b = source.bounding_box(), target.bounding_box()
        self.page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
        self.page.mouse.down()
        self.page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=steps)
        self.page.mouse.up()

    def connect(self, from_node, output: int, to_node, input_name: str):
        self.drag(from_node.locator(f".slot.output[data-output='{output}'] .dot"),
                  to_node.locator(f".slot.input[data-input='{input_name}'] .dot"))

    def drop_file(self, data: bytes, name: str, mime: str, x: float = 700, y: float = 400):
        """Drop a file on the canvas the way a desktop drag does (a DataTransfer holding a File)."""
        transfer = self.page.evaluate_handle(
            """([b64, name, mime]) => {
                const bin = atob(b64);
                const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], name, { type: mime }));
                return dt;
            }""", [base64.b64encode(data).decode(), name, mime])
        self.page.dispatch_event("#canvas", "drop", {"dataTransfer": transfer, "clientX": x, "clientY": y})

    def real_errors(self) -> list[str]:
        return [e for e in self.console_errors if "favicon" not in e]


@pytest.fixture
def editor(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15000)
    try:
        yield Editor(page, server).open()
    finally:
        context.close()
