"""Queueing from the editor against the real server with core nodes: previews (animated WEBP,
MP4 inline), seed control after queue, validation and runtime errors, queue panel, interrupt."""
from browser_support import build_image_preview, record_events, set_widget, wait_for_end


def test_queue_shows_webp_and_mp4_previews_and_applies_seed_control(editor):
    page = editor.page
    image = editor.add_node("EmptyImage", "emptyimage", 100, 120)
    for name, value in [("width", 64), ("height", 48), ("batch_size", 3), ("color", 16711680)]:
        set_widget(image, name, value)
    webp = editor.add_node("SaveAnimatedWEBP", "saveanimatedwebp", 500, 80)
    editor.connect(image, 0, webp, "images")
    video = editor.add_node("CreateVideo", "create video", 500, 450)
    editor.connect(image, 0, video, "images")
    save = editor.add_node("SaveVideo", "save video", 900, 450)
    editor.connect(video, 0, save, "video")
    prim = editor.add_node("PrimitiveInt", "primitiveint", 100, 600)
    set_widget(prim, "value", 5)
    set_widget(prim, "control_after_generate", "increment")
    record_events(editor)
    page.keyboard.press("Control+Enter")
    events = wait_for_end(editor)
    kinds = [t for t, _ in events]
    assert "execution_success" in kinds, events
    assert kinds.count("executed") == 2
    img = webp.locator(".node-preview img")
    img.wait_for()
    assert ".webp" in img.get_attribute("src")
    page.wait_for_function("[...document.querySelectorAll('.node-preview img')].every(i => i.complete && i.naturalWidth === 64)")
    player = save.locator(".node-preview video")
    player.wait_for()
    assert ".mp4" in player.get_attribute("src")
    page.wait_for_function("document.querySelector('.node-preview video').readyState >= 1", timeout=15000)
    assert page.evaluate("document.querySelector('.node-preview video').duration") > 0
    # the queued prompt used 5; the widget now holds the next value
    assert prim.locator(".widget[data-widget='value'] input").input_value() == "6"
    assert next(n for n in editor.workflow()["nodes"] if n["type"] == "PrimitiveInt")["widgets_values"][:2] == [6, "increment"]
    assert page.locator(".node.executed").count() >= 3
    editor.shot("previews-after-run")
    # the queue panel lists it in the history
    page.click("#panel-button")
    page.wait_for_selector("#history-list li.history-success")
    editor.shot("queue-panel")
    # queueing again: everything cached, previews re-sent and still there
    page.evaluate("window.__events = []")
    page.click("#queue-button")
    events = wait_for_end(editor)
    cached = next(d for t, d in events if t == "execution_cached")
    assert len(cached["nodes"]) >= 4
    assert page.locator(".node.cached").count() >= 4
    assert webp.locator(".node-preview img").count() == 1


def test_validation_errors_mark_nodes_and_inputs(editor):
    page = editor.page
    editor.add_node("PreviewImage", "preview image", 300, 200)
    cond = editor.add_node("SVD_img2vid_Conditioning", "svd_img2vid", 700, 200)
    page.keyboard.press("Control+Enter")
    node = editor.node("PreviewImage")
    page.wait_for_selector(".node.error")
    assert "error" in node.get_attribute("class")
    assert "error" in node.locator(".slot.input[data-input='images']").get_attribute("class")
    assert "Required input is missing" in node.locator(".node-errors").inner_text()
    assert "not queued" in page.locator(".toast-error").first.inner_text().lower()
    editor.shot("validation-error")
    # fixing the graph and queueing again clears the marks
    assert "error" not in (cond.get_attribute("class") or "")


def test_runtime_error_message_is_shown_on_the_node(editor):
    page = editor.page
    node = editor.add_node("VAEDecode", "vae decode", 300, 200)
    node_id = node.get_attribute("data-node-id")
    page.evaluate("""(id) => vidgraph.api.dispatchEvent(new CustomEvent("execution_error", {detail: {
        prompt_id: "p1", node_id: id, node_type: "VAEDecode", executed: [], exception_message: "boom at frame 3",
        exception_type: "RuntimeError", traceback: ["Traceback...\\n", "RuntimeError: boom at frame 3\\n"],
        current_inputs: {}, current_outputs: [], timestamp: 0}}))""", node_id)
    assert "error" in node.get_attribute("class")
    assert "boom at frame 3" in node.locator(".node-errors").inner_text()
    assert "RuntimeError" in page.locator(".toast-error").first.inner_text()
    # the error survives an undo/redo rebuild of the view, previews too
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+y")
    assert "boom" in editor.node("VAEDecode").locator(".node-errors").inner_text()


def test_interrupt_button_and_shortcut_post_interrupt(editor):
    page = editor.page
    with page.expect_request(lambda r: r.url.endswith("/api/interrupt") and r.method == "POST"):
        page.click("#interrupt-button")
    with page.expect_request(lambda r: r.url.endswith("/api/interrupt") and r.method == "POST"):
        page.keyboard.press("Control+Alt+Enter")


def test_extension_from_a_node_pack_is_loaded(editor):
    page = editor.page
    urls = page.evaluate("vidgraph.api.getExtensions()")
    assert "/extensions/vg_test_extension/marker.js" in urls
    assert page.get_attribute("body", "data-extension-setup") == "yes"
    node = editor.add_node("VAEDecode", "vae decode", 300, 200)
    assert node.get_attribute("data-extension-saw") == "VAEDecode"
    assert editor.real_errors() == []


def test_batch_count_queues_each_run_with_its_own_seed_and_history_loads_back(editor):
    page = editor.page
    image, preview = build_image_preview(editor)
    prim = editor.add_node("PrimitiveInt", "primitiveint", 100, 500)
    set_widget(prim, "value", 10)
    set_widget(prim, "control_after_generate", "increment")
    page.fill("#batch-count", "2")
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as first:
        page.click("#queue-button")
    page.wait_for_function("vidgraph.graph.serialize().nodes.find(n => n.type === 'PrimitiveInt').widgets_values[0] === 12")
    assert first.value.json()["prompt_id"]
    preview.locator(".node-preview img").wait_for()
    page.click("#panel-button")
    page.wait_for_function("document.querySelectorAll('#history-list li').length >= 2")
    sent = [e["prompt"][2] for e in page.evaluate("vidgraph.api.getHistory(10)").values()]
    seeds = [p["3"]["inputs"]["value"] for p in sent if p.get("3", {}).get("class_type") == "PrimitiveInt"]
    assert sorted(seeds) == [10, 11]
    page.click("#new-button")
    assert page.locator(".node").count() == 0
    page.locator("#history-list li button[data-action='load-history']").first.click()
    page.wait_for_function("vidgraph.graph.nodes.size === 3")
    assert editor.node("PreviewImage").locator(".node-preview img").count() == 1


def test_ctrl_enter_while_typing_queues_the_typed_text_and_r_refreshes_file_lists(editor, server_dirs):
    page = editor.page
    text = editor.add_node("PrimitiveStringMultiline", "primitivestringmultiline", 200, 200)
    area = text.locator("textarea")
    area.click()
    page.keyboard.type("a fox, walking")
    with page.expect_request(lambda r: r.url.endswith("/api/prompt") and r.method == "POST") as sent:
        page.keyboard.press("Control+Enter")
    body = sent.value.post_data_json
    assert body["prompt"][text.get_attribute("data-node-id")]["inputs"]["value"] == "a fox, walking"
    assert body["extra_data"]["extra_pnginfo"]["workflow"]["nodes"][0]["widgets_values"][0] == "a fox, walking"
    # a file that appeared on the server shows up in the combo after R
    load = editor.add_node("LoadImage", "load image", 700, 200)
    (server_dirs / "input" / "appeared_later.png").write_bytes(_tiny_png())
    assert "appeared_later.png" not in load.locator("select").inner_text()
    page.click("#canvas", position={"x": 1200, "y": 700})
    page.keyboard.press("r")
    page.wait_for_function("document.querySelector(\".node[data-type='LoadImage'] select\").textContent.includes('appeared_later.png')")
    assert len(editor.workflow()["nodes"]) == 2


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_duplicated_tab_gets_its_own_client_id_instead_of_fighting_over_one(editor):
    """Duplicating a tab copies sessionStorage, and with it the websocket clientId. The server
    closes the older socket of a reused id; the two tabs must not take it from each other
    forever (each reconnect closing the other's socket)."""
    page = editor.page
    client_id = page.evaluate("vidgraph.api.clientId")
    twin = page.context.new_page()
    twin.add_init_script(f"sessionStorage.setItem('vidgraph.clientId', {client_id!r})")
    count = "window.__connects = 0; vidgraph.api.addEventListener('connected', () => window.__connects++)"
    page.evaluate(count)
    twin.goto(editor.url)
    twin.wait_for_selector("body[data-ready=true]")
    twin.evaluate(count)
    # the server closes the older socket of the id; that tab takes a new id and reconnects, once
    page.wait_for_function("(old) => vidgraph.api.clientId !== old && vidgraph.api.socket.readyState === 1",
                           arg=client_id)
    twin.wait_for_function("vidgraph.api.socket.readyState === 1")
    assert twin.evaluate("vidgraph.api.clientId") == client_id  # the newer tab keeps it: nothing left to fight over
    assert page.evaluate("window.__connects") <= 1 and twin.evaluate("window.__connects") <= 1
    for tab in (page, twin):
        assert tab.evaluate("vidgraph.api.socket.readyState") == 1  # open


def test_an_error_outside_any_node_is_reported_as_the_prompts(editor):
    """The server's execution_error for a prompt that failed outside a node (invalid when run)
    has node_id null; the toast must not speak of "Node #null"."""
    page = editor.page
    page.evaluate("""vidgraph.api.dispatchEvent(new CustomEvent("execution_error", {detail: {
        prompt_id: "p", node_id: null, node_type: null, executed: [],
        exception_message: "Prompt failed validation when it was run",
        exception_type: "ValidationError", traceback: ["{}"], current_inputs: {},
        current_outputs: [], timestamp: 0}}))""")
    text = page.locator(".toast-error").first.inner_text()
    assert "Prompt failed validation when it was run" in text and "null" not in text, text
    assert page.locator(".node.error").count() == 0
