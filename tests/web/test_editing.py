"""Editing gestures in a real Chromium: pan/zoom, adding nodes, typed links, widgets,
undo/redo, clipboard, bypass/mute/collapse, groups, reroutes, widget→input."""


def transform(editor):
    return editor.page.eval_on_selector("#world", "el => el.style.transform")


def test_pan_zoom_and_fit(editor):
    page = editor.page
    editor.add_node("VAEDecode", "vae decode", 300, 300)
    before = transform(editor)
    editor.drag_points((700, 600), (800, 650), steps=5)
    assert transform(editor) != before
    assert "translate(100px, 50px)" in transform(editor)
    box = editor.node("VAEDecode").bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + 5)
    page.mouse.wheel(0, -300)
    page.wait_for_function("vidgraph.view.scale > 1.2")
    grown = editor.node("VAEDecode").bounding_box()
    assert grown["width"] > box["width"] * 1.2
    # zoom is around the cursor: the node's corner under the cursor stays put
    assert abs(grown["x"] - box["x"]) < 8 and abs(grown["y"] - box["y"]) < 8
    page.click("#fit-button")
    fitted = editor.node("VAEDecode").bounding_box()
    canvas = page.locator("#canvas").bounding_box()
    assert canvas["x"] <= fitted["x"] and fitted["x"] + fitted["width"] <= canvas["x"] + canvas["width"]
    assert canvas["y"] <= fitted["y"] and fitted["y"] + fitted["height"] <= canvas["y"] + canvas["height"]
    assert page.evaluate("vidgraph.graph.extra.ds.scale") == page.evaluate("vidgraph.view.scale")


def test_links_are_typed_and_one_per_input(editor):
    page = editor.page
    loader = editor.add_node("ImageOnlyCheckpointLoader", "image only", 150, 150)
    decode = editor.add_node("VAEDecode", "vae decode", 700, 150)
    editor.connect(loader, 1, decode, "vae")  # CLIP_VISION → VAE: refused
    assert editor.workflow()["links"] == []
    assert "refused" in page.text_content("#status")
    editor.connect(loader, 2, decode, "vae")
    links = editor.workflow()["links"]
    assert [link[1:] for link in links] == [[1, 2, 2, 1, "VAE"]]
    path = page.locator("#links path.link[data-link-id]")
    assert path.count() == 1
    assert path.get_attribute("stroke") != "#cccccc"
    d_before = path.get_attribute("d")
    # dragging the node moves its link end
    title = decode.locator(".node-title")
    editor.drag(title, page.locator("#canvas"), steps=4)
    assert path.get_attribute("d") != d_before
    # a second loader's VAE replaces the first link
    loader2 = editor.add_node("ImageOnlyCheckpointLoader", "image only", 150, 500)
    editor.connect(loader2, 2, decode, "vae")
    links = editor.workflow()["links"]
    assert len(links) == 1 and links[0][1] == int(loader2.get_attribute("data-node-id"))
    assert loader.locator(".slot.output[data-output='2']").get_attribute("class").count("connected") == 0
    editor.shot("links")


def test_link_dropped_on_empty_space_offers_compatible_nodes(editor):
    page = editor.page
    decode = editor.add_node("VAEDecode", "vae decode", 200, 200)
    out = decode.locator(".slot.output[data-output='0'] .dot").bounding_box()
    editor.drag_points((out["x"] + 5, out["y"] + 5), (900, 420), steps=6)
    page.wait_for_selector("#search:not([hidden])")
    assert "IMAGE" in page.text_content("#search-hint")
    offered = page.eval_on_selector_all("#search-results li", "els => els.map(e => e.dataset.nodeType)")
    assert "PreviewImage" in offered and "SaveAnimatedWEBP" in offered
    assert "KSampler" not in offered and "VAEDecode" not in offered
    page.fill("#search-input", "preview image")
    page.keyboard.press("Enter")
    preview = editor.node("PreviewImage")
    preview.wait_for()
    links = editor.workflow()["links"]
    assert [link[5] for link in links] == ["IMAGE"]
    assert preview.locator(".slot.input[data-input='images']").get_attribute("class").count("connected") == 1


def test_widgets_honour_limits_and_keyboard(editor):
    page = editor.page
    cond = editor.add_node("SVD_img2vid_Conditioning", "svd_img2vid", 200, 120)
    width = cond.locator(".widget[data-widget='width'] input")
    assert width.get_attribute("type") == "number"
    assert (width.get_attribute("min"), width.get_attribute("max"), width.get_attribute("step")) == ("16", "16384", "8")
    width.fill("99999")
    width.press("Tab")  # focus moves on to the next real form control
    assert page.evaluate("document.activeElement.name") == "height"
    assert width.input_value() == "16384"
    aug = cond.locator(".widget[data-widget='augmentation_level'] input")
    aug.fill("0.123456")
    aug.press("Enter")
    aug.blur()
    values = {w: v for w, v in zip(
        ["width", "height", "video_frames", "motion_bucket_id", "fps", "augmentation_level"],
        editor.workflow()["nodes"][0]["widgets_values"])}
    assert values["width"] == 16384
    assert values["augmentation_level"] == 0.12, "FLOATs round to their step"
    save = editor.add_node("SaveAnimatedWEBP", "saveanimatedwebp", 800, 120)
    lossless = save.locator(".widget[data-widget='lossless'] input[type=checkbox]")
    assert lossless.is_checked()
    lossless.focus()
    page.keyboard.press("Space")
    assert not lossless.is_checked()
    method = save.locator(".widget[data-widget='method'] select")
    method.select_option("slowest")
    wf = editor.workflow()
    saved = next(n for n in wf["nodes"] if n["type"] == "SaveAnimatedWEBP")
    assert saved["widgets_values"][2:] == [False, 80, "slowest"]
    ks = editor.add_node("KSampler", "ksampler", 300, 500)
    assert ks.locator(".widget[data-widget='control_after_generate'] select").input_value() == "randomize"


def test_undo_redo_clipboard_delete_as_single_steps(editor):
    page = editor.page
    editor.add_node("VAEDecode", "vae decode", 200, 150)
    editor.add_node("PreviewImage", "preview image", 600, 150)
    editor.connect(editor.node("VAEDecode"), 0, editor.node("PreviewImage"), "images")
    page.click("#canvas", position={"x": 50, "y": 700})
    page.keyboard.press("Control+a")
    assert page.locator(".node.selected").count() == 2
    page.keyboard.press("Control+c")
    page.mouse.move(300, 550)
    page.keyboard.press("Control+v")
    assert page.locator(".node").count() == 4
    wf = editor.workflow()
    assert len(wf["links"]) == 2, "the link between copied nodes is pasted too"
    assert page.locator(".node.selected").count() == 2
    page.keyboard.press("Control+z")
    assert page.locator(".node").count() == 2, "a paste of two nodes is one undo step"
    page.keyboard.press("Control+y")
    assert page.locator(".node").count() == 4
    page.keyboard.press("Delete")
    assert page.locator(".node").count() == 2
    page.keyboard.press("Control+z")
    assert page.locator(".node").count() == 4
    # Ctrl+Shift+V keeps the links coming from outside the copied nodes
    preview = editor.node("PreviewImage")
    preview.locator(".node-title").click()
    page.keyboard.press("Control+c")
    page.mouse.move(900, 600)
    page.keyboard.press("Control+Shift+v")
    assert page.locator(".node[data-type='PreviewImage']").count() == 3
    assert len(editor.workflow()["links"]) == 3
    page.keyboard.press("Control+z")
    # Ctrl+Z in a text field belongs to the field, not to the graph
    editor.add_node("PrimitiveStringMultiline", "primitivestringmultiline", 900, 200)
    area = editor.node("PrimitiveStringMultiline").locator("textarea")
    area.click()
    page.keyboard.type("abc")
    page.keyboard.press("Control+z")
    assert page.locator(".node").count() == 5


def test_box_select_bypass_mute_collapse_group(editor):
    page = editor.page
    editor.add_node("VAEDecode", "vae decode", 200, 150)
    editor.add_node("ImageScaleBy", "upscale image by", 200, 400)
    page.keyboard.down("Control")
    editor.drag_points((150, 100), (700, 800), steps=5)
    page.keyboard.up("Control")
    assert page.locator(".node.selected").count() == 2
    page.keyboard.press("Control+b")
    assert page.locator(".node.bypassed").count() == 2
    assert {n["mode"] for n in editor.workflow()["nodes"]} == {4}
    page.keyboard.press("Control+m")
    assert {n["mode"] for n in editor.workflow()["nodes"]} == {2}
    assert page.locator(".node.muted").count() == 2
    page.keyboard.press("Control+m")
    assert {n["mode"] for n in editor.workflow()["nodes"]} == {0}
    page.keyboard.press("Alt+c")
    assert page.locator(".node.collapsed").count() == 2
    assert all(n["flags"].get("collapsed") for n in editor.workflow()["nodes"])
    page.keyboard.press("Alt+c")
    page.keyboard.press("Control+g")
    groups = editor.workflow()["groups"]
    assert len(groups) == 1 and page.locator(".group").count() == 1
    # moving the group moves its nodes
    before = [n["pos"] for n in editor.workflow()["nodes"]]
    editor.drag(page.locator(".group-title"), page.locator("#canvas"), steps=4)
    after = [n["pos"] for n in editor.workflow()["nodes"]]
    assert before != after
    dx = after[0][0] - before[0][0]
    assert all(a[0] - b[0] == dx for a, b in zip(after, before))
    editor.shot("group")


def test_reroute_and_widget_to_input(editor):
    page = editor.page
    loader = editor.add_node("ImageOnlyCheckpointLoader", "image only", 120, 150)
    decode = editor.add_node("VAEDecode", "vae decode", 900, 150)
    page.click("#canvas", button="right", position={"x": 600, "y": 500})
    page.click("#context-menu button:has-text('Add reroute')")
    reroute = editor.node("Reroute")
    editor.drag(loader.locator(".slot.output[data-output='2'] .dot"), reroute.locator(".slot.input .dot"))
    editor.drag(reroute.locator(".slot.output .dot"), decode.locator(".slot.input[data-input='samples'] .dot"))
    assert len(editor.workflow()["links"]) == 1, "a VAE through a reroute is still not a LATENT"
    editor.drag(reroute.locator(".slot.output .dot"), decode.locator(".slot.input[data-input='vae'] .dot"))
    assert editor.prompt()[decode.get_attribute("data-node-id")]["inputs"]["vae"] == [loader.get_attribute("data-node-id"), 2]
    # a link dropped on a widget's socket turns the widget into an input
    prim = editor.add_node("PrimitiveInt", "primitiveint", 120, 600)
    ks = editor.add_node("KSampler", "ksampler", 500, 600)
    editor.drag(prim.locator(".slot.output .dot"), ks.locator(".widget[data-widget='seed'] > .dot"))
    seed_input = next(i for i in next(n for n in editor.workflow()["nodes"] if n["type"] == "KSampler")["inputs"] if i["name"] == "seed")
    assert seed_input["widget"] == {"name": "seed"} and seed_input["link"] is not None
    assert ks.locator(".widget[data-widget='seed']").get_attribute("class").count("linked") == 1
    assert ks.locator(".widget[data-widget='seed'] input").is_disabled()
    # the context menu converts another widget explicitly
    ks.locator(".node-title").click(button="right")
    page.click("#context-menu button:has-text('Convert steps to an input')")
    ks_saved = next(n for n in editor.workflow()["nodes"] if n["type"] == "KSampler")
    assert any(i["name"] == "steps" and i.get("widget") for i in ks_saved["inputs"])
    editor.shot("reroute-widget-input")


def test_keyboard_only_add_and_readable_at_200_percent(browser, server):
    from browser_support import Editor

    # 200% browser zoom = half the CSS viewport at twice the pixel density
    context = browser.new_context(viewport={"width": 700, "height": 450}, device_scale_factor=2)
    try:
        editor = Editor(context.new_page(), server).open()
        page = editor.page
        page.focus("#canvas")
        page.keyboard.press("Shift+A")
        page.wait_for_selector("#search:not([hidden])")
        page.keyboard.type("vae decode")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowUp")
        page.keyboard.press("Enter")
        editor.node("VAEDecode").wait_for()
        # every toolbar control stays on screen (the toolbar wraps) and text is not shrunk
        for box in page.eval_on_selector_all("#toolbar > *", "els => els.map(e => e.getBoundingClientRect().toJSON())"):
            assert box["right"] <= 700 and box["bottom"] <= 450, box
        size = page.eval_on_selector(".node .title-text", "el => parseFloat(getComputedStyle(el).fontSize)")
        assert size >= 13
        page.click("#add-node-button")
        page.keyboard.type("preview image")
        page.keyboard.press("Enter")
        editor.node("PreviewImage").wait_for()
        # a node reached with the keyboard is selected and arrow keys move it
        editor.node("VAEDecode").focus()
        assert "selected" in editor.node("VAEDecode").get_attribute("class")
        before = next(n for n in editor.workflow()["nodes"] if n["type"] == "VAEDecode")["pos"]
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowDown")
        after = next(n for n in editor.workflow()["nodes"] if n["type"] == "VAEDecode")["pos"]
        assert after == [before[0] + 10, before[1] + 10]
        # Tab reaches the node widgets and toolbar as ordinary controls
        page.focus("#queue-button")
        assert page.evaluate("document.activeElement.id") == "queue-button"
        editor.shot("zoom-200")
    finally:
        context.close()


def test_rename_resize_widget_undo_and_link_pickup(editor):
    page = editor.page
    loader = editor.add_node("ImageOnlyCheckpointLoader", "image only", 120, 150)
    decode = editor.add_node("VAEDecode", "vae decode", 700, 150)
    editor.connect(loader, 2, decode, "vae")
    # rename by double-clicking the title
    decode.locator(".title-text").dblclick()
    page.keyboard.press("Control+a")
    page.keyboard.type("Decode frames")
    page.keyboard.press("Enter")
    assert editor.node("VAEDecode").locator(".title-text").inner_text() == "Decode frames"
    assert next(n for n in editor.workflow()["nodes"] if n["type"] == "VAEDecode")["title"] == "Decode frames"
    # widen a node with its corner grip
    width = editor.workflow()["nodes"][0]["size"][0]
    grip = loader.locator(".node-resize").bounding_box()
    editor.drag_points((grip["x"] + 6, grip["y"] + 6), (grip["x"] + 106, grip["y"] + 6), steps=4)
    assert editor.workflow()["nodes"][0]["size"][0] == width + 100
    # a widget edit is one undo step
    ks = editor.add_node("KSampler", "ksampler", 300, 450)
    steps = ks.locator(".widget[data-widget='steps'] input")
    steps.fill("33")
    steps.press("Enter")
    page.click("#canvas", position={"x": 1300, "y": 800})
    page.keyboard.press("Control+z")
    assert editor.node("KSampler").locator(".widget[data-widget='steps'] input").input_value() == "20"
    page.keyboard.press("Control+y")
    assert editor.node("KSampler").locator(".widget[data-widget='steps'] input").input_value() == "33"
    # picking a link up from its input and letting go on empty space removes it (undoably)
    decode = editor.node("VAEDecode")
    dot = decode.locator(".slot.input[data-input='vae'] .dot").bounding_box()
    editor.drag_points((dot["x"] + 5, dot["y"] + 5), (1000, 700), steps=5)
    page.wait_for_selector("#search:not([hidden])")
    page.keyboard.press("Escape")
    assert editor.workflow()["links"] == []
    page.keyboard.press("Control+z")
    assert len(editor.workflow()["links"]) == 1
    assert page.locator("#links path.link[data-link-id]").count() == 1


def test_a_long_status_message_does_not_move_the_canvas(editor):
    """The toolbar wrapping onto a second line would shift the whole graph under the pointer."""
    page = editor.page
    top = "document.querySelector('#canvas').getBoundingClientRect().top"
    before = page.evaluate(top)
    message = "link refused: CLIP_VISION_OUTPUT does not fit there (uploaded a_long_file_name.png)"
    page.evaluate(f"vidgraph.setStatus({message!r})")
    assert page.evaluate(top) == before
    assert page.get_attribute("#status", "title") == message  # the whole text on hover
    editor.shot("long-status")
