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
        options = editor.node("ImageOnlyCheckpointLoader").locator("select option:not([data-missing])")
        assert "svd_xt_1_1.safetensors" in options.all_inner_texts()
    finally:
        (checkpoints / "svd_xt_1_1.safetensors").unlink()
