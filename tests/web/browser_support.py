"""Helpers shared by the editor's browser tests (kept out of conftest.py so that test modules
can import them by a name no other test folder uses)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "web"


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
        self.drag_points((a["x"] + a["width"] / 2, a["y"] + a["height"] / 2),
                         (b["x"] + b["width"] / 2, b["y"] + b["height"] / 2), steps)

    def drag_points(self, start, end, steps: int = 8):
        """Press the left button at `start` (x, y), move to `end` in `steps`, release."""
        self.page.mouse.move(*start)
        self.page.mouse.down()
        self.page.mouse.move(*end, steps=steps)
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


def same_graph(a: dict, b: dict):
    """Node types, widget values and links equal (positions and view may differ)."""
    key = lambda wf: (sorted((n["id"], n["type"], json.dumps(n["widgets_values"])) for n in wf["nodes"]),
                      sorted(map(tuple, wf["links"])))
    assert key(a) == key(b)


def set_widget(node, name, value):
    field = node.locator(f".widget[data-widget='{name}'] :is(input, select)")
    if field.evaluate("el => el.tagName") == "SELECT":
        field.select_option(str(value))
    else:
        field.fill(str(value))
        field.press("Enter")


def record_events(editor):
    """Collect the websocket events the page receives from now on in window.__events."""
    editor.page.evaluate("""() => {
        window.__events = [];
        for (const type of ["execution_start", "execution_cached", "executing", "progress", "executed",
                            "execution_success", "execution_error", "execution_interrupted"]) {
            vidgraph.api.addEventListener(type, (e) => window.__events.push([type, e.detail]));
        }
    }""")


def wait_for_end(editor, timeout=120000):
    editor.page.wait_for_function(
        "window.__events.some(([t]) => ['execution_success', 'execution_error', 'execution_interrupted'].includes(t))",
        timeout=timeout)
    return editor.page.evaluate("window.__events")


def build_image_preview(editor, size: int = 16):
    """EmptyImage (size x size) → PreviewImage, added with the mouse: the smallest graph that runs."""
    image = editor.add_node("EmptyImage", "emptyimage", 100, 120)
    set_widget(image, "width", size)
    set_widget(image, "height", size)
    preview = editor.add_node("PreviewImage", "preview image", 500, 120)
    editor.connect(image, 0, preview, "images")
    return image, preview
