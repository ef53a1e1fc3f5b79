"""Watching a run and looking at its result (issue 15, points 4 and 5): a progress strip with the
step count, time left and percentage (also in the browser tab's title), previews that stay on top
and open in a large player that scrubs frame by frame, downloads and compares two runs."""
from browser_support import ARTIFACTS, set_widget

WATCH = """() => {
    window.__labels = []; window.__titles = []; window.__steps = [];
    const note = () => {
        const label = document.querySelector('#run-progress:not([hidden]) .label');
        if (label) window.__labels.push(label.textContent);
        if (document.title.startsWith('[')) window.__titles.push(document.title);
        const steps = document.querySelector('.node.running .node-progress .steps');
        if (steps && steps.textContent) window.__steps.push(steps.textContent);
    };
    new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
    new MutationObserver(note).observe(document.querySelector('title'), { childList: true, characterData: true, subtree: true });
}"""


def open_demo(editor, steps=4):
    """The bundled demo from the menu, shortened (4 frames of 64×64, 4 steps) so that it runs in seconds."""
    page = editor.page
    page.select_option("#workflows-menu", "tiny_svd_demo")
    page.wait_for_function("vidgraph.graph.nodes.size === 10")  # the demo: 9 nodes and its 4x enlargement
    set_widget(editor.node("KSampler"), "steps", steps)
    cond = editor.node("SVD_img2vid_Conditioning")
    for name, value in (("width", 64), ("height", 64), ("video_frames", 4)):
        set_widget(cond, name, value)


def test_progress_shows_steps_time_left_and_percent_in_the_title(editor):
    page = editor.page
    open_demo(editor)
    page.evaluate(WATCH)
    page.keyboard.press("Control+Enter")
    page.wait_for_function("window.__labels.some(l => /step [23]\\/4 · about/.test(l))", timeout=120000)
    editor.shot("progress-while-sampling")
    page.wait_for_function("document.querySelector('#run-progress').hidden", timeout=180000)
    labels = page.evaluate("window.__labels")
    assert any("KSampler #5 · step" in l and "left" in l and "% of the workflow" in l for l in labels), labels[-5:]
    titles = page.evaluate("window.__titles")
    assert titles and titles[-1].startswith("[") and "tiny_svd_demo · vidgraph" in titles[-1]
    assert "4/4" in page.evaluate("window.__steps")
    assert page.title() == "tiny_svd_demo · vidgraph"
    assert "idle" in page.text_content("#status")


CENTRE_HITS = "([sel]) => { const el = document.querySelector(sel); const r = el.getBoundingClientRect();" \
              " return el.contains(document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2)) ||" \
              " document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === el; }"


def test_results_stay_on_top_and_open_in_a_player_that_steps_frames(editor):
    page = editor.page
    open_demo(editor, steps=2)
    page.keyboard.press("Control+Enter")
    webp = editor.node("SaveAnimatedWEBP")
    webp.locator(".node-preview img").wait_for(timeout=180000)
    page.wait_for_function("document.querySelector('.node[data-type=SaveVideo] .node-preview video')", timeout=60000)
    # the preview fits the room the layout gives its node (no overlap with Create video below)
    # and is drawn on top, never hidden under a neighbour
    page.wait_for_function("document.querySelector('.node[data-type=SaveAnimatedWEBP] .node-preview img').complete")
    below = editor.node("CreateVideo").bounding_box()
    saver = webp.bounding_box()
    assert saver["y"] + saver["height"] <= below["y"], (saver, below)
    assert page.evaluate(CENTRE_HITS, [".node[data-type=SaveAnimatedWEBP] .node-preview img"])
    editor.shot("result-preview-on-top")
    # download and open links point at the file
    download = webp.locator(".preview-actions a[download]")
    assert download.get_attribute("download").endswith(".webp")
    assert page.evaluate("(u) => fetch(u).then(r => r.status)", download.get_attribute("href")) == 200
    # the player: 4 frames, stepped one by one, each drawn differently
    positions = [n["pos"] for n in editor.workflow()["nodes"]]
    box = webp.locator(".node-preview img").bounding_box()
    page.mouse.dblclick(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#player[data-ready=true]")
    assert page.text_content("#player .frame-counter").startswith("frame 1 / 4")
    first = page.evaluate("document.querySelector('#player canvas').toDataURL()")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#player", "data-frame") == "1"
    assert page.text_content("#player .frame-counter").startswith("frame 2 / 4")
    assert page.evaluate("document.querySelector('#player canvas').toDataURL()") != first
    assert [n["pos"] for n in editor.workflow()["nodes"]] == positions  # the arrows did not move nodes
    page.fill("#player .scrubber", "3")
    assert page.get_attribute("#player", "data-frame") == "3"
    page.keyboard.press("Space")
    page.wait_for_function("document.querySelector('#player').dataset.frame !== '3'")
    page.keyboard.press("Space")
    editor.shot("player-webp-frame-by-frame")
    page.keyboard.press("Escape")
    assert page.locator("#player").count() == 0
    # the MP4's Enlarge button opens it in the player too, stepping the video
    video = editor.node("SaveVideo")
    video.locator(".node-preview").hover()
    video.locator(".preview-actions button[data-action=enlarge]").click()
    page.wait_for_selector("#player[data-ready=true]")
    assert page.text_content("#player .frame-counter").startswith("frame 1 / 4 · 6 fps")
    page.keyboard.press("End")
    time = page.evaluate("document.querySelector('#player video').currentTime")
    assert abs(time - 3.5 / 6) < 1e-3
    assert page.locator("#search:not([hidden])").count() == 0


def test_the_editor_opens_on_a_results_workflow_with_the_result_shown(editor):
    """What `./dev demo` does: `vidgraph serve --show vidgraph/demo` (here the same request as
    ?show=vidgraph/demo) opens the newest demo result's embedded workflow with its files shown."""
    page = editor.page
    open_demo(editor, steps=2)
    # a seed no other test runs: a cached run writes no files, and the newest ones would be another's
    set_widget(editor.node("KSampler"), "seed", 4242)
    with page.expect_response(lambda r: r.url.endswith("/api/prompt")) as sent:
        page.keyboard.press("Control+Enter")
    prompt_id = sent.value.json()["prompt_id"]
    editor.node("SaveVideo").locator(".node-preview video").wait_for(timeout=180000)
    outputs = page.evaluate("(id) => vidgraph.api.getHistory(5).then(h => h[id].outputs)", prompt_id)
    written = {o["images"][0]["filename"] for o in outputs.values()}
    fresh = page.context.new_page()
    fresh.goto(editor.url + "/?show=vidgraph/demo")
    fresh.wait_for_selector("body[data-ready=true]")
    fresh.wait_for_function("vidgraph.graph.nodes.size === 10")
    assert fresh.text_content("#tabs .tab[aria-selected=true] .tab-name").startswith("demo")
    webp = fresh.locator(".node[data-type=SaveAnimatedWEBP] .node-preview img").get_attribute("src")
    mp4 = fresh.locator(".node[data-type=SaveVideo] .node-preview video").get_attribute("src")
    assert any(name in webp for name in written if name.endswith(".webp")), (webp, written)
    assert any(name in mp4 for name in written if name.endswith(".mp4"))
    assert "show=" not in fresh.url  # a reload does not open it again
    assert fresh.locator("dialog").count() == 0
    fresh.screenshot(path=str(ARTIFACTS / "opened-on-demo-result.png"))
