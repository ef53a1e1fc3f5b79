"""Opening workflows as a new user does (issue 15, points 6 and 7): the Workflows menu opens the
laid-out editor twins with their seed control kept, and a workflow naming model files this
server lacks says so when it loads, with the folder each file goes in."""
import copy
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_UI = json.loads((ROOT / "workflows" / "ui" / "tiny_svd_demo.json").read_text())
DEMO_API = json.loads((ROOT / "workflows" / "tiny_svd_demo.json").read_text())


def test_workflows_menu_opens_the_editor_layout_and_keeps_the_seed_fixed(editor):
    page = editor.page
    page.select_option("#workflows-menu", "tiny_svd_demo")
    page.wait_for_function("vidgraph.graph.nodes.size === %d" % len(DEMO_UI["nodes"]))
    loaded = {n["id"]: n for n in editor.workflow()["nodes"]}
    for saved in DEMO_UI["nodes"]:
        assert loaded[saved["id"]]["pos"] == [round(v) for v in saved["pos"]], saved["type"]
    sampler = next(n for n in loaded.values() if n["type"] == "KSampler")
    assert sampler["widgets_values"][1] == "fixed"
    assert page.locator("dialog").count() == 0  # the demo's files are all here
    editor.shot("workflows-menu-ui-layout")
    # an API-format file keeps "fixed" as well: queueing it again reproduces the run
    editor.drop_file(json.dumps(DEMO_API).encode(), "demo_api.json", "application/json")
    page.wait_for_function("document.querySelectorAll('#tabs .tab').length === 2")
    sampler = next(n for n in editor.workflow()["nodes"] if n["type"] == "KSampler")
    assert sampler["widgets_values"][1] == "fixed"


def test_missing_model_files_are_named_with_their_folder_when_the_workflow_loads(editor, server_dirs):
    page = editor.page
    wf = copy.deepcopy(DEMO_UI)
    loader = next(n for n in wf["nodes"] if n["type"] == "ImageOnlyCheckpointLoader")
    loader["widgets_values"][0] = "svd_xt_1_1.safetensors"
    page.evaluate("(wf) => vidgraph.loadWorkflow(wf, {name: 'svd_xt'})", wf)
    dialog = page.locator("dialog.missing-models")
    dialog.wait_for()
    row = dialog.locator("tr[data-file='svd_xt_1_1.safetensors']")
    assert "models/checkpoints/" in row.locator("td.folder").inner_text()
    checkpoints = server_dirs / "models" / "checkpoints"
    assert str(checkpoints) in row.locator("td.folder").inner_text()
    assert "#%d (ckpt_name)" % loader["id"] in row.locator("td.used-by").inner_text()
    editor.shot("missing-models-dialog")
    # the user copies the file in and checks again: the dialog goes and the file is offered
    os.link(checkpoints / "svd_tiny.safetensors", checkpoints / "svd_xt_1_1.safetensors")
    try:
        dialog.locator("button[data-value=recheck]").click()
        page.wait_for_function("document.querySelectorAll('dialog').length === 0")
        # the node's widget is rebuilt from the refreshed definitions just after the dialog closes
        page.wait_for_function("""[...document.querySelectorAll(".node[data-type='ImageOnlyCheckpointLoader'] select option")]
            .some(o => !o.hasAttribute('data-missing') && o.textContent === 'svd_xt_1_1.safetensors')""", timeout=15000)
    finally:
        (checkpoints / "svd_xt_1_1.safetensors").unlink()


def test_cut_titles_and_labels_have_tooltips_and_the_fps_inputs_say_what_they_set(editor):
    page = editor.page
    page.select_option("#workflows-menu", "tiny_svd_demo")
    page.wait_for_function("vidgraph.graph.nodes.size === %d" % len(DEMO_UI["nodes"]))
    loader = editor.node("ImageOnlyCheckpointLoader")
    title = loader.locator(".title-text")
    assert title.evaluate("el => el.scrollWidth > el.clientWidth")  # cut short on screen...
    assert "ships with vidgraph" in title.get_attribute("title")  # ...whole in its tooltip
    cut = editor.node("SVD_img2vid_Conditioning").locator(".widget[data-widget='augmentation_level'] label")
    assert cut.get_attribute("title").startswith("augmentation_level")
    tips = {t: editor.node(t).locator(".widget[data-widget='fps'] label").get_attribute("title")
            for t in ("SVD_img2vid_Conditioning", "SaveAnimatedWEBP", "CreateVideo")}
    assert "playback rate is set on the save node" in tips["SVD_img2vid_Conditioning"]
    assert "Playback rate of the saved file" in tips["SaveAnimatedWEBP"]
    assert "Playback rate of the video" in tips["CreateVideo"]
    # Load Image says how big the image is
    size = editor.node("LoadImage").locator(".image-size")
    page.wait_for_function("document.querySelector('.node[data-type=LoadImage] .image-size').textContent.includes('×')")
    assert size.inner_text().endswith(" px")
    editor.shot("tooltips-and-image-size")


def test_a_dropped_latent_link_offers_the_obvious_nodes_first_and_stays_on_screen(editor):
    page = editor.page
    sampler = editor.add_node("KSampler", "ksampler", 900, 500)
    out = sampler.locator(".slot.output[data-output='0'] .dot").bounding_box()
    viewport = page.viewport_size
    drop = (viewport["width"] - 20, viewport["height"] - 20)  # the bottom-right corner
    editor.drag_points((out["x"] + 5, out["y"] + 5), drop, steps=6)
    page.wait_for_selector("#search:not([hidden])")
    offered = page.eval_on_selector_all("#search-results li", "els => els.map(e => e.dataset.nodeType)")
    assert offered[0] == "VAEDecode", offered
    assert offered.index("KSampler") < offered.index("LatentFromBatch")
    testing = [offered.index(t) for t in ("SaveLatent", "VAEDecodeTiled") if t in offered]
    wildcard = [offered.index(t) for t in ("PreviewAny", "Reroute") if t in offered]
    assert testing and wildcard and max(wildcard) < min(testing), offered
    box = page.locator("#search").bounding_box()
    assert box["x"] >= 0 and box["y"] >= 0
    assert box["x"] + box["width"] <= viewport["width"] and box["y"] + box["height"] <= viewport["height"]
    editor.shot("latent-link-search")
