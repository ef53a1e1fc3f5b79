"""Getting workflows in and out of the editor: autosave/restore, save and export downloads,
the file picker, dropping PNG/WEBP/MP4 files with embedded workflows, dropping an image."""
import io
import json
from pathlib import Path

from PIL import Image

from browser_support import same_graph

FIXTURES = Path(__file__).resolve().parents[2] / "web" / "tests" / "fixtures"


def build_small_graph(editor):
    editor.add_node("EmptyImage", "emptyimage", 150, 150)
    editor.add_node("PreviewImage", "preview image", 700, 150)
    editor.connect(editor.node("EmptyImage"), 0, editor.node("PreviewImage"), "images")
    width = editor.node("EmptyImage").locator(".widget[data-widget='width'] input")
    width.fill("96")
    width.press("Enter")
    return editor.workflow()


def test_autosave_restores_the_graph_after_reload(editor):
    page = editor.page
    before = build_small_graph(editor)
    page.wait_for_function("localStorage.getItem('vidgraph.tabs') && JSON.parse(localStorage.getItem('vidgraph.tabs')).tabs[0].workflow.links.length === 1")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    after = editor.workflow()
    same_graph(before, after)
    assert [n["pos"] for n in after["nodes"]] == [n["pos"] for n in before["nodes"]]
    assert page.locator("#links path.link[data-link-id]").count() == 1
    editor.shot("restored-after-reload")


def test_save_and_export_downloads(editor):
    page = editor.page
    wf = build_small_graph(editor)
    with page.expect_download() as info:
        page.click("#save-button")
    saved = json.loads(Path(info.value.path()).read_text())
    same_graph(saved, wf)
    assert saved["version"] == 0.4 and saved["last_node_id"] == 2
    with page.expect_download() as info:
        page.click("#export-api-button")
    api = json.loads(Path(info.value.path()).read_text())
    assert api["1"]["class_type"] == "EmptyImage" and api["1"]["inputs"]["width"] == 96
    assert api["2"]["inputs"]["images"] == ["1", 0]
    # Ctrl+S saves too
    with page.expect_download():
        page.keyboard.press("Control+s")


def test_open_and_drop_files_with_embedded_workflows(editor):
    page = editor.page
    expected = json.loads((FIXTURES / "svd_workflow.json").read_text())
    page.set_input_files("#file-input", str(FIXTURES / "svd_workflow.json"))
    page.wait_for_function("vidgraph.graph.nodes.size === 7")
    same_graph(editor.workflow(), expected)
    assert page.locator(".group").count() == 1
    for name, mime in [("embedded_text.png", "image/png"), ("embedded_itxt.png", "image/png"),
                       ("embedded.webp", "image/webp"), ("embedded.mp4", "video/mp4")]:
        page.click("#new-button")
        assert page.locator(".node").count() == 0
        editor.drop_file((FIXTURES / name).read_bytes(), name, mime)
        page.wait_for_function("vidgraph.graph.nodes.size === 7")
        same_graph(editor.workflow(), expected)
    # an API-format prompt is laid out as a graph
    page.click("#new-button")
    editor.drop_file((FIXTURES / "svd_prompt.json").read_bytes(), "svd_prompt.json", "application/json")
    page.wait_for_function("vidgraph.graph.nodes.size === 7")
    assert editor.prompt() == json.loads((FIXTURES / "svd_prompt.json").read_text())
    editor.shot("dropped-workflow")


def test_dropping_a_plain_image_creates_load_image_with_the_upload(editor, server_dirs):
    page = editor.page
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 200, 90)).save(buffer, "PNG")
    editor.drop_file(buffer.getvalue(), "dropped_frame.png", "image/png", 500, 300)
    node = editor.node("LoadImage")
    node.wait_for()
    page.wait_for_function("vidgraph.graph.serialize().nodes[0]?.widgets_values[0] === 'dropped_frame.png'")
    assert (server_dirs / "input" / "dropped_frame.png").read_bytes() == buffer.getvalue()
    assert node.locator(".widget[data-widget='image'] select").input_value() == "dropped_frame.png"
    page.wait_for_function("document.querySelector('.node-preview img.input-preview')?.naturalWidth === 32")
    # a second image dropped onto that node replaces its image instead of adding a node
    buffer2 = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 0, 255)).save(buffer2, "PNG")
    box = node.bounding_box()
    editor.drop_file(buffer2.getvalue(), "second.png", "image/png", box["x"] + 60, box["y"] + 15)
    page.wait_for_function("vidgraph.graph.serialize().nodes[0]?.widgets_values[0] === 'second.png'")
    assert page.locator(".node").count() == 1
    page.wait_for_function("document.querySelector('.node-preview img.input-preview')?.naturalWidth === 20")


def test_bundled_workflows_menu(editor):
    page = editor.page
    options = page.eval_on_selector_all("#workflows-menu option", "els => els.map(e => e.value).filter(Boolean)")
    assert "svd_img2vid" in options
    page.select_option("#workflows-menu", "svd_img2vid")
    page.wait_for_function("vidgraph.graph.nodes.size > 4")
    types = {n["type"] for n in editor.workflow()["nodes"]}
    assert {"ImageOnlyCheckpointLoader", "SVD_img2vid_Conditioning", "KSampler", "VAEDecode"} <= types
    assert page.locator("#links path.link[data-link-id]").count() == len(editor.workflow()["links"]) > 4
    editor.shot("bundled-workflow")


def test_a_load_image_naming_a_missing_file_says_so_instead_of_a_broken_image(editor):
    page = editor.page
    page.evaluate("""vidgraph.loadAny({"1": {"class_type": "LoadImage",
                                            "inputs": {"image": "not_here.png"}}}, "missing")""")
    box = editor.node("LoadImage").locator(".node-preview")
    box.locator(".missing-file").wait_for()
    assert "not_here.png" in box.inner_text()
    assert box.locator("img").count() == 0
