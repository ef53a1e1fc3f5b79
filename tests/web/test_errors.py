"""Errors where the eye is (issue 15, points 3 and 8): the reason first, in a box on top of the
neighbours; toasts that count repeats and go away; a runtime error's traceback folded away and
the failed node's old result gone; off-step numbers snapped as ComfyUI does; no stale marks."""
import copy
import json
import re
from pathlib import Path

from browser_support import build_image_preview, set_widget

ROOT = Path(__file__).resolve().parents[2]
DEMO_UI = json.loads((ROOT / "workflows" / "ui" / "tiny_svd_demo.json").read_text())


def demo_with(**widgets):
    """The demo workflow with SVD_img2vid_Conditioning widget values replaced (as a saved file may hold them)."""
    wf = copy.deepcopy(DEMO_UI)
    cond = next(n for n in wf["nodes"] if n["type"] == "SVD_img2vid_Conditioning")
    names = ["width", "height", "video_frames", "motion_bucket_id", "fps", "augmentation_level"]
    for name, value in widgets.items():
        cond["widgets_values"][names.index(name)] = value
    return wf


def load(editor, wf):
    editor.page.evaluate("(wf) => vidgraph.loadWorkflow(wf, {name: 'demo'})", wf)
    editor.page.wait_for_function("vidgraph.graph.nodes.size === %d" % len(wf["nodes"]))


def test_validation_error_reads_reason_first_and_sits_on_top_of_its_neighbours(editor):
    page = editor.page
    load(editor, demo_with(width=100))
    page.keyboard.press("Control+Enter")
    cond = editor.node("SVD_img2vid_Conditioning")
    box = cond.locator(".node-errors")
    box.wait_for()
    text = box.inner_text()
    assert text.startswith("width must be a multiple of 8"), text
    assert "Custom validation failed" not in text
    assert "error" in cond.locator(".widget[data-widget='width']").get_attribute("class")
    # the box is not hidden under the node below it (Per-frame CFG ramp), and it did not grow the node
    r = box.bounding_box()
    hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('.node-errors') !== null",
                        [r["x"] + r["width"] / 2, r["y"] + r["height"] / 2])
    assert hit
    node_box = cond.bounding_box()
    assert r["y"] >= node_box["y"] + node_box["height"] - 1
    # one toast, short, naming the count; the same failure again counts up instead of stacking
    toast = page.locator(".toast-error")
    assert toast.count() == 1 and re.search(r"Not queued: \d+ nodes? with errors", toast.inner_text())
    assert "width must be a multiple of 8" in toast.locator("details pre").text_content()
    editor.shot("validation-error-reason-first")
    page.click("#queue-button")
    page.wait_for_function("document.querySelector('.toast-error')?.querySelector('.toast-count').textContent === '×2'"
                           " || document.querySelectorAll('.toast-error').length === 1")
    assert page.locator(".toast-error").count() == 1


def test_selecting_a_node_brings_it_to_the_front(editor):
    page = editor.page
    load(editor, DEMO_UI)
    under = editor.node("SVD_img2vid_Conditioning")  # drawn before KSampler: KSampler covers it
    over = editor.node("KSampler")
    target = under.locator(".node-title").bounding_box()
    title = over.locator(".node-title").bounding_box()
    editor.drag_points((title["x"] + 40, title["y"] + 8), (target["x"] + 40, target["y"] + 8), steps=4)
    top_at = "([x, y]) => document.elementFromPoint(x, y).closest('.node')?.dataset.nodeId"
    b = under.locator(".node-title").bounding_box()
    centre = [b["x"] + b["width"] / 2, b["y"] + b["height"] / 2]
    assert page.evaluate(top_at, centre) == over.get_attribute("data-node-id")
    page.keyboard.press("Escape")
    page.evaluate("(id) => vidgraph.view.setSelection([Number(id)])", under.get_attribute("data-node-id"))
    assert page.evaluate(top_at, centre) == under.get_attribute("data-node-id")


def test_toasts_go_away_by_themselves(editor):
    page = editor.page
    page.clock.install()
    page.evaluate("vidgraph.toast('informative', 'info'); vidgraph.toast('bad thing', 'error'); vidgraph.toast('bad thing', 'error')")
    assert page.locator(".toast").count() == 2
    assert page.locator(".toast-error .toast-count").inner_text() == "×2"
    page.clock.run_for(6000)
    assert page.locator(".toast").count() == 1  # info gone, the error stays longer
    page.clock.run_for(20000)
    assert page.locator(".toast").count() == 0


def test_runtime_error_folds_the_traceback_and_clears_the_old_result(editor):
    page = editor.page
    image, preview = build_image_preview(editor)
    page.keyboard.press("Control+Enter")
    preview.locator(".node-preview img").wait_for()
    node_id = preview.get_attribute("data-node-id")
    page.evaluate("""(id) => vidgraph.api.dispatchEvent(new CustomEvent("execution_error", {detail: {
        prompt_id: "p-failed", node_id: id, node_type: "PreviewImage", executed: [], exception_message: "disk full",
        exception_type: "OSError", traceback: ["Traceback (most recent call last):\\n", "  File \\"x.py\\", line 1\\n", "OSError: disk full\\n"],
        current_inputs: {}, current_outputs: [], timestamp: 0}}))""", node_id)
    assert preview.locator(".node-preview img").count() == 0  # the previous run's image is gone
    assert preview.locator(".node-errors").inner_text() == "OSError: disk full"
    toast = page.locator(".toast-error")
    assert toast.locator(".toast-text").inner_text() == "PreviewImage #%s failed: OSError: disk full" % node_id
    details = toast.locator("details")
    assert not details.evaluate("d => d.open")
    assert "Traceback" in details.locator("pre").text_content()
    editor.shot("runtime-error-folded-traceback")


def test_numbers_snap_to_their_step_as_in_comfyui(editor):
    cond = editor.add_node("SVD_img2vid_Conditioning", "svd_img2vid", 200, 120)
    set_widget(cond, "width", 100)
    assert cond.locator(".widget[data-widget='width'] input").input_value() == "104"
    set_widget(cond, "height", 571)
    assert cond.locator(".widget[data-widget='height'] input").input_value() == "568"
    values = next(n for n in editor.workflow()["nodes"] if n["type"] == "SVD_img2vid_Conditioning")["widgets_values"]
    assert values[:2] == [104, 568]


def test_no_stale_marks_cached_after_a_refused_prompt_or_errors_after_a_fix(editor):
    page = editor.page
    image, preview = build_image_preview(editor)
    page.keyboard.press("Control+Enter")
    preview.locator(".node-preview img").wait_for()
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".node.cached")
    # break it: the refused prompt clears the cached badges of the run before
    page.click(".node[data-type='PreviewImage'] .slot.input[data-input='images'] .dot")  # no-op click
    link_input = preview.locator(".slot.input[data-input='images'] .dot").bounding_box()
    editor.drag_points((link_input["x"] + 5, link_input["y"] + 5), (300, 600), steps=4)
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(".node.error")
    assert page.locator(".node.cached").count() == 0
    # fixing the input clears its mark at once, before any queue
    editor.connect(image, 0, preview, "images")
    page.wait_for_function("document.querySelectorAll('.node.error').length === 0")
    assert preview.locator(".node-errors").inner_text() == ""
    editor.shot("error-cleared-after-fix")
