"""Editor benchmark: frame times while panning 300 nodes (at 100% and fitted) and while dragging
a node with its links, in Debian's Chromium (headless, GPU off), against the same gestures on an
empty canvas as the reference. Prints figures and ratios; never asserts on time.

    .venv/bin/python bench/editor.py [--port 0]
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# The graph tests/web/test_performance.py checks for correctness: 100 rows of 3 nodes, 150 links.
BUILD_300 = """() => {
    const g = vidgraph.graph;
    const t0 = performance.now();
    for (let i = 0; i < 100; i++) {
        const x = (i % 10) * 1100, y = Math.floor(i / 10) * 420;
        const src = g.addNode("EmptyImage", [x, y]);
        const scale = g.addNode(i % 2 ? "ImageScaleBy" : "KSampler", [x + 340, y]);
        const out = g.addNode("PreviewImage", [x + 700, y]);
        if (i % 2) { g.connect(src.id, 0, scale.id, "image"); g.connect(scale.id, 0, out.id, "images"); }
        else g.connect(src.id, 0, out.id, "images");
    }
    vidgraph.view.renderAll();
    vidgraph.commit();
    return performance.now() - t0;
}"""

MEASURE = """() => {
    window.__stamps = [];
    window.__stopFrames = false;
    const tick = (t) => { window.__stamps.push(t); if (!window.__stopFrames) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
}"""

AT_100 = "vidgraph.view.scale = 1; vidgraph.view.offset = [0, 0]; vidgraph.view.applyTransform()"


def drag_and_measure(page, start=(200, 700), steps=60):
    """Frame intervals (requestAnimationFrame) while the mouse drags from `start`."""
    page.evaluate(MEASURE)
    page.mouse.move(*start)
    page.mouse.down()
    for i in range(steps):
        page.mouse.move(start[0] + 8 * i, start[1] - 5 * i)
        page.evaluate("() => new Promise(requestAnimationFrame)")
    page.mouse.up()
    stamps = page.evaluate("window.__stopFrames = true; window.__stamps")
    deltas = sorted(b - a for a, b in zip(stamps, stamps[1:]))
    return {"frames": len(deltas), "median_ms": round(deltas[len(deltas) // 2], 2),
            "p95_ms": round(deltas[int(len(deltas) * 0.95)], 2), "max_ms": round(deltas[-1], 2)}


def measure_gestures(page) -> dict:
    """Pans at 100% and fitted, and a node drag, on whatever graph the page holds."""
    results = {}
    page.evaluate(AT_100)
    results["pan_at_100%"] = drag_and_measure(page)
    page.click("#fit-button")
    results["pan_fit_all_visible"] = drag_and_measure(page)
    page.evaluate(AT_100)
    node = page.locator(".node .node-title").first
    if node.count():
        box = node.bounding_box()
        results["drag_node_with_links"] = drag_and_measure(page, (box["x"] + 60, box["y"] + 10), steps=40)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = args.port or _free_port()
    with tempfile.TemporaryDirectory() as base:
        server = subprocess.Popen([sys.executable, "-m", "vidgraph.cli", "serve", "--port", str(port), "--cpu",
                                   "--base-dir", base], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(f"http://127.0.0.1:{port}/api/object_info")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_selector("body[data-ready=true]")
                reference = measure_gestures(page)  # an empty canvas
                build_ms = page.evaluate(BUILD_300)
                loaded = measure_gestures(page)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"build and render 300 nodes + 150 links: {build_ms:.0f} ms")
    print(f"{'gesture':<24}{'300 nodes median/p95 ms':>26}{'empty canvas median ms':>24}{'ratio':>8}")
    for key, figures in loaded.items():
        ref = reference.get(key, reference["pan_at_100%"])
        ratio = figures["median_ms"] / ref["median_ms"] if ref["median_ms"] else float("nan")
        print(f"{key:<24}{figures['median_ms']:>15} / {figures['p95_ms']:<8}{ref['median_ms']:>24}{ratio:>8.2f}")
    print(json.dumps({"build_ms": round(build_ms, 1), "300_nodes": loaded, "empty": reference}))
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no answer from {url}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
