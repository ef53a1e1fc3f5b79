"""What a reload and a load do to the work on the canvas (issue 15, points 1 and 2, and tabs):
links land on their sockets at any saved zoom, loading never discards a changed graph silently,
and each tab keeps its own graph and undo history across a reload."""
import json
from pathlib import Path

from browser_support import set_widget

ROOT = Path(__file__).resolve().parents[2]
DEMO_UI = json.loads((ROOT / "workflows" / "ui" / "tiny_svd_demo.json").read_text())

# Every link's two ends, and the socket dots they should touch, in client pixels.
LINK_ENDS = """() => {
    const out = [];
    const svg = document.querySelector('#links');
    for (const path of svg.querySelectorAll('path.link[data-link-id]')) {
        const len = path.getTotalLength();
        const ctm = path.getScreenCTM();
        const toClient = (p) => { const q = new DOMPoint(p.x, p.y).matrixTransform(ctm); return [q.x, q.y]; };
        const [fromId, fromSlot] = path.dataset.from.split(':');
        const [toId, toName] = path.dataset.to.split(':');
        const centre = (sel) => { const r = document.querySelector(sel).getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; };
        const toSel = `.node[data-node-id="${toId}"] .slot.input[data-input="${CSS.escape(toName)}"] > .dot`;
        out.push({
            start: toClient(path.getPointAtLength(0)), end: toClient(path.getPointAtLength(len)),
            fromDot: centre(`.node[data-node-id="${fromId}"] .slot.output[data-output="${fromSlot}"] .dot`),
            toDot: centre(toSel), id: path.dataset.linkId,
        });
    }
    return out;
}"""


def assert_links_touch_sockets(editor, tolerance=3.0):
    ends = editor.page.evaluate(LINK_ENDS)
    assert ends, "no links drawn"
    for e in ends:
        for a, b in ((e["start"], e["fromDot"]), (e["end"], e["toDot"])):
            assert abs(a[0] - b[0]) <= tolerance and abs(a[1] - b[1]) <= tolerance, (e["id"], a, b)


def load_demo(editor):
    editor.page.evaluate("(wf) => vidgraph.loadWorkflow(wf, {name: 'tiny_svd_demo'})", DEMO_UI)
    editor.page.wait_for_function("vidgraph.graph.nodes.size === %d" % len(DEMO_UI["nodes"]))


def test_links_land_on_their_sockets_after_a_reload_at_any_zoom(editor):
    page = editor.page
    load_demo(editor)
    scale = page.evaluate("vidgraph.view.scale")
    assert abs(scale - 1) > 0.1, scale  # fitted: not 100%
    assert_links_touch_sockets(editor)
    page.wait_for_function("vidgraph.autosaveTimer === null")  # the last change is saved
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert abs(page.evaluate("vidgraph.view.scale") - scale) < 1e-6
    assert_links_touch_sockets(editor)
    editor.shot("reload-at-63pct-links-on-sockets")
    # and they stay right after zooming and after a node moves
    page.mouse.move(700, 400)
    before = page.evaluate("vidgraph.view.scale")
    page.mouse.wheel(0, -200)
    page.wait_for_function("(before) => vidgraph.view.scale !== before", arg=before)
    assert_links_touch_sockets(editor)
    title = editor.node("KSampler").locator(".node-title")
    box = title.bounding_box()
    editor.drag_points((box["x"] + 40, box["y"] + 8), (box["x"] + 90, box["y"] + 60), steps=4)
    assert_links_touch_sockets(editor)


def tab_names(page):
    return page.eval_on_selector_all("#tabs .tab .tab-name", "els => els.map(e => e.textContent)")


def active_tab(page):
    return page.text_content("#tabs .tab[aria-selected=true] .tab-name")


def test_loading_a_workflow_never_replaces_the_graph_on_the_canvas(editor):
    page = editor.page
    editor.add_node("EmptyImage", "emptyimage", 200, 200)
    mine = editor.workflow()
    # a bundled workflow opens beside it, in its own tab
    page.select_option("#workflows-menu", "tiny_svd_demo")
    page.wait_for_function("vidgraph.graph.nodes.size === %d" % len(DEMO_UI["nodes"]))
    assert tab_names(page) == ["Untitled", "tiny_svd_demo"]
    assert active_tab(page) == "tiny_svd_demo"
    editor.shot("load-opens-a-new-tab")
    # the first tab still holds the graph, and its undo still works
    page.click("#tabs .tab:nth-child(1)")
    page.wait_for_function("vidgraph.graph.nodes.size === 1")
    assert editor.workflow()["nodes"][0]["type"] == "EmptyImage"
    page.keyboard.press("Control+z")
    assert editor.workflow()["nodes"] == []
    page.keyboard.press("Control+y")
    assert [n["type"] for n in editor.workflow()["nodes"]] == [n["type"] for n in mine["nodes"]]
    # New opens an empty tab; a dropped file then goes into that empty tab rather than a third one
    page.click("#new-button")
    assert len(tab_names(page)) == 3 and page.locator(".node").count() == 0
    editor.drop_file(json.dumps(DEMO_UI).encode(), "my_clip.json", "application/json")
    page.wait_for_function("vidgraph.graph.nodes.size === %d" % len(DEMO_UI["nodes"]))
    assert tab_names(page) == ["Untitled", "tiny_svd_demo", "my_clip"]


def test_closing_a_changed_tab_asks_first(editor):
    page = editor.page
    page.click("#new-button")
    editor.add_node("EmptyImage", "emptyimage", 200, 200)
    assert "changed" in page.get_attribute("#tabs .tab[aria-selected=true]", "class")
    page.click("#tabs .tab[aria-selected=true] .tab-close")
    dialog = page.locator("dialog.confirm-close")
    dialog.wait_for()
    assert "not saved" in dialog.inner_text()
    editor.shot("close-changed-tab-asks")
    dialog.locator("button[data-value=keep]").click()
    assert len(tab_names(page)) == 2 and page.locator(".node").count() == 1
    page.click("#tabs .tab[aria-selected=true] .tab-close")
    page.locator("dialog.confirm-close button[data-value=discard]").click()
    page.wait_for_function("document.querySelectorAll('#tabs .tab').length === 1")
    assert page.locator(".node").count() == 0
    # an unchanged tab closes at once
    page.select_option("#workflows-menu", "tiny_svd_demo")
    page.wait_for_function("document.querySelectorAll('#tabs .tab').length === 1 && vidgraph.graph.nodes.size > 0")
    page.click("#new-button")
    page.click("#tabs .tab:nth-child(1) .tab-close")
    page.wait_for_function("document.querySelectorAll('#tabs .tab').length === 1")
    assert page.locator("dialog").count() == 0


def test_tabs_come_back_after_a_reload_each_with_its_own_undo(editor):
    page = editor.page
    image = editor.add_node("EmptyImage", "emptyimage", 200, 200)
    set_widget(image, "width", 96)
    page.click("#new-button")
    editor.add_node("PreviewImage", "preview image", 300, 300)
    page.wait_for_function("vidgraph.autosaveTimer === null")  # the last change is saved
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert len(tab_names(page)) == 2
    assert [n["type"] for n in editor.workflow()["nodes"]] == ["PreviewImage"]
    page.keyboard.press("Control+z")
    assert editor.workflow()["nodes"] == []
    page.click("#tabs .tab:nth-child(1)")
    page.wait_for_function("vidgraph.graph.nodes.size === 1")
    width = editor.node("EmptyImage").locator(".widget[data-widget='width'] input")
    assert width.input_value() == "96"
    page.keyboard.press("Control+z")
    assert editor.node("EmptyImage").locator(".widget[data-widget='width'] input").input_value() == "512"
    page.keyboard.press("Control+z")
    assert page.locator(".node").count() == 0
    editor.shot("tabs-restored-after-reload")
