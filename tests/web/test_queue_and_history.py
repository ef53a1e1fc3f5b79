"""The queue and history panel (issue 15 point 9, the panel half of point 4, the comparison of two
runs, and issue 14's queue controls in the editor): pause, drag to reorder, cancel one job; runs
listed with name, time, duration and thumbnails, refused prompts among them; seed A vs seed B."""
from browser_support import build_image_preview, set_widget
from test_progress_and_results import open_demo


def listed_success(page, prompt_id, timeout=60000):
    """The history item of a finished run, once the panel lists it (the panel shows the newest runs
    of a server the whole session shares, so a count of items would stop growing once it is full)."""
    item = page.locator(f"#history-list li.history-success[data-prompt-id='{prompt_id}']")
    item.wait_for(timeout=timeout)
    return item


def run_now(page):
    """Queue the graph with Ctrl+Enter; its prompt id."""
    with page.expect_response(lambda r: r.url.endswith("/api/prompt")) as sent:
        page.keyboard.press("Control+Enter")
    return sent.value.json()["prompt_id"]


def pending_ids(page):
    return page.evaluate("vidgraph.api.getQueueState().then(s => s.pending.map(j => j.prompt_id))")


def test_opening_the_panel_keeps_the_whole_graph_in_view(editor):
    page = editor.page
    page.select_option("#workflows-menu", "tiny_svd_demo")
    page.wait_for_function("vidgraph.graph.nodes.size === 10")  # the demo: 9 nodes and its 4x enlargement
    assert page.evaluate("vidgraph.view.allNodesVisible()")
    page.click("#panel-button")
    assert page.evaluate("vidgraph.view.allNodesVisible()")
    save = editor.node("SaveVideo").bounding_box()
    panel = page.locator("#queue-panel").bounding_box()
    assert save["x"] + save["width"] <= panel["x"]
    editor.shot("panel-open-graph-in-view")


def test_pause_reorder_and_cancel_jobs_from_the_panel(editor):
    page = editor.page
    image, _ = build_image_preview(editor)
    page.click("#panel-button")
    page.click("#queue-panel [data-action=pause]")
    page.wait_for_function("document.querySelector('#queue-state').textContent === 'paused'")
    ids = []
    for width in (16, 24, 32):
        set_widget(image, "width", width)
        with page.expect_response(lambda r: r.url.endswith("/api/prompt")) as sent:
            page.click("#queue-button")
        ids.append(sent.value.json()["prompt_id"])
    page.wait_for_function("document.querySelectorAll('#queue-pending li').length === 3")
    assert pending_ids(page) == ids
    editor.shot("queue-paused-three-pending")
    # drag the last job to the top
    items = page.locator("#queue-pending li")
    items.nth(2).drag_to(items.nth(0))
    page.wait_for_function("(first) => document.querySelector('#queue-pending li').dataset.promptId === first", arg=ids[2])
    assert pending_ids(page) == [ids[2], ids[0], ids[1]]
    # cancel the middle one
    page.click(f"#queue-pending li[data-prompt-id='{ids[0]}'] [data-action=cancel]")
    page.wait_for_function("document.querySelectorAll('#queue-pending li').length === 2")
    assert pending_ids(page) == [ids[2], ids[1]]
    # resume: the two left run, in the new order
    page.click("#queue-panel [data-action=pause]")
    for prompt_id in (ids[2], ids[1]):
        listed_success(page, prompt_id)
    order = page.evaluate("vidgraph.api.getHistory(2).then(h => Object.keys(h))")
    assert order == [ids[2], ids[1]]


def test_history_names_times_durations_thumbnails_and_refused_prompts(editor):
    page = editor.page
    image, _ = build_image_preview(editor)
    page.click("#panel-button")
    item = listed_success(page, run_now(page))
    assert item.locator(".run-name").inner_text() == "Untitled"
    facts = item.locator(".run-facts").inner_text()
    assert ":" in facts and " s · #" in facts, facts  # clock time · duration · id
    assert item.locator(".thumbs img").count() == 1
    # a refused prompt is listed too, and loads back with its errors marked
    set_widget(image, "width", 0)
    page.evaluate("vidgraph.graph.nodes.get(1).widgets[0].value = 0")
    page.keyboard.press("Control+Enter")
    refused = page.locator("#history-list li.history-refused").first
    refused.wait_for()
    assert "not queued" in refused.inner_text() and "width" in refused.inner_text()
    editor.shot("history-with-refused")
    refused.locator("[data-action=load-refused]").click()
    page.wait_for_function("document.querySelectorAll('#tabs .tab').length === 2")
    page.wait_for_selector(".node.error")


def test_two_runs_compare_side_by_side_frame_by_frame(editor):
    page = editor.page
    open_demo(editor, steps=2)
    page.click("#panel-button")
    first = run_now(page)
    listed_success(page, first, timeout=180000)
    set_widget(editor.node("KSampler"), "seed", 7)
    second = run_now(page)
    listed_success(page, second, timeout=180000)
    assert page.locator("#queue-panel [data-action=compare]").is_disabled()
    for prompt_id in (second, first):  # newest first, as the panel lists them
        listed_success(page, prompt_id).locator(".compare-pick").check()
    page.click("#queue-panel [data-action=compare]")
    page.wait_for_selector("#player[data-ready=true]")
    labels = page.locator("#player .player-label").all_inner_texts()
    assert labels == ["seed 1", "seed 7"]
    page.keyboard.press("ArrowRight")
    frames = page.eval_on_selector_all("#player .player-pane", "els => els.map(e => e.dataset.frame)")
    assert frames == ["1", "1"]
    a, b = page.eval_on_selector_all("#player canvas", "els => els.map(c => c.toDataURL())")
    assert a != b  # two seeds, two different clips
    editor.shot("compare-seed-a-vs-b")
