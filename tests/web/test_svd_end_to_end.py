"""The whole story in a real Chromium against a real `vidgraph serve` with the tiny random SVD
checkpoint: build the SVD graph on an empty canvas by mouse and keyboard, queue it, watch the
progress and the video previews, reload and find the graph again, drop the produced WEBP and
MP4 and get the same graph back."""
import io

from PIL import Image

from browser_support import record_events, same_graph, set_widget, wait_for_end

WATCH_RUNNING = """() => {
    window.__running = new Set();
    new MutationObserver((changes) => {
        for (const c of changes) if (c.target.classList?.contains("running")) window.__running.add(c.target.dataset.nodeId);
    }).observe(document.querySelector("#nodes-layer"), { attributes: true, subtree: true, attributeFilter: ["class"] });
    window.__previews = 0;
    vidgraph.api.addEventListener("b_preview", () => window.__previews++);
}"""


def test_svd_workflow_built_queued_previewed_restored_and_dropped_back(editor):
    page = editor.page
    for _ in range(3):
        page.keyboard.press("Alt+-")  # zoom out so the whole pipeline fits on screen
    buffer = io.BytesIO()
    Image.new("RGB", (80, 64), (220, 120, 40)).save(buffer, "PNG")
    editor.drop_file(buffer.getvalue(), "svd_init.png", "image/png", 60, 420)
    load = editor.node("LoadImage")
    page.wait_for_function("vidgraph.graph.serialize().nodes[0]?.widgets_values[0] === 'svd_init.png'")

    ckpt = editor.add_node("ImageOnlyCheckpointLoader", "image only checkpoint", 60, 120)
    cond = editor.add_node("SVD_img2vid_Conditioning", "svd_img2vid", 300, 120)
    guidance = editor.add_node("VideoLinearCFGGuidance", "videolinearcfg", 300, 480)
    sampler = editor.add_node("KSampler", "ksampler", 540, 120)
    decode = editor.add_node("VAEDecode", "vae decode", 780, 120)
    webp = editor.add_node("SaveAnimatedWEBP", "saveanimatedwebp", 1010, 120)
    video = editor.add_node("CreateVideo", "create video", 1010, 480)
    save = editor.add_node("SaveVideo", "save video", 1215, 480)

    for origin, slot, target, name in [
        (ckpt, 1, cond, "clip_vision"), (load, 0, cond, "init_image"), (ckpt, 2, cond, "vae"),
        (ckpt, 0, guidance, "model"), (guidance, 0, sampler, "model"),
        (cond, 0, sampler, "positive"), (cond, 1, sampler, "negative"), (cond, 2, sampler, "latent_image"),
        (sampler, 0, decode, "samples"), (ckpt, 2, decode, "vae"),
        (decode, 0, webp, "images"), (decode, 0, video, "images"), (video, 0, save, "video"),
    ]:
        editor.connect(origin, slot, target, name)
    assert len(editor.workflow()["links"]) == 13

    for node, name, value in [(cond, "width", 64), (cond, "height", 64), (cond, "video_frames", 4),
                              (sampler, "seed", 7), (sampler, "control_after_generate", "fixed"),
                              (sampler, "steps", 2), (sampler, "cfg", 2.5), (sampler, "scheduler", "karras"),
                              (video, "fps", 6)]:
        set_widget(node, name, value)
    assert ckpt.locator("select").input_value() == "svd_tiny.safetensors"
    editor.shot("svd-built")
    built = editor.workflow()

    page.evaluate(WATCH_RUNNING)
    record_events(editor)
    page.keyboard.press("Control+Enter")
    events = wait_for_end(editor, timeout=240000)
    assert "execution_success" in [t for t, _ in events], [e for e in events if e[0] == "execution_error"]
    sampler_id = sampler.get_attribute("data-node-id")
    steps = [d for t, d in events if t == "progress" and str(d.get("node")) == sampler_id]
    assert steps and steps[-1]["value"] == steps[-1]["max"] == 2, steps
    running = set(page.evaluate("[...window.__running]"))
    assert {sampler_id, decode.get_attribute("data-node-id")} <= running, "running nodes were outlined"
    assert sampler.get_attribute("data-progress") == "2/2"

    img = webp.locator(".node-preview img")
    img.wait_for()
    page.wait_for_function("[...document.querySelectorAll('.node-preview img')].some(i => i.complete && i.naturalWidth === 64)")
    player = save.locator(".node-preview video")
    player.wait_for()
    page.wait_for_function("document.querySelector('.node-preview video').readyState >= 1", timeout=15000)
    assert page.evaluate("document.querySelector('.node-preview video').duration") > 0
    page.click("#fit-button")
    editor.shot("svd-finished")
    print(f"\nsampler preview frames received: {page.evaluate('window.__previews')}")

    img_src = img.get_attribute("src")
    webp_url = editor.url + img_src
    mp4_url = editor.url + player.get_attribute("src")

    # reload: the graph is restored from the browser
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    same_graph(editor.workflow(), built)
    assert webp.locator(".node-preview img").get_attribute("src") == img_src, "previews come back too"
    editor.shot("svd-restored")

    # drop the produced files onto an empty canvas: the same graph comes back
    for url, name, mime in [(webp_url, "out.webp", "image/webp"), (mp4_url, "out.mp4", "video/mp4")]:
        page.click("#new-button")
        assert page.locator(".node").count() == 0
        editor.drop_file(page.request.get(url).body(), name, mime)
        page.wait_for_function("vidgraph.graph.nodes.size === 9")
        same_graph(editor.workflow(), built)
    editor.shot("svd-dropped-back")
    assert editor.real_errors() == []
