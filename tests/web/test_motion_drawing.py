"""The motion drawing layer (web/extensions/motion/draw.js, issue 12) in Chromium: a mask painted,
boxes and paths drawn and a camera path previewed on the start image, all stored as the nodes'
ordinary widget values (so the API prompt and `vidgraph run` carry them)."""
import copy
import json

from vidgraph.nodes.motion import camera

# The start image and the three drawable nodes, as in workflows/svd_xt_directed.json.
DIRECTED = {
    "2": {"class_type": "LoadImage", "inputs": {"image": "vidgraph_demo.png"}, "_meta": {"title": "Init image"}},
    "21": {"class_type": "CameraPath", "inputs": {"frames": 25, "preset": "zoom in", "intensity": 0.5, "easing": "linear",
                                                  "pan_x": 0.0, "pan_y": 0.0, "zoom": 1.0, "roll": 0.0, "keyframes": ""}},
    "25": {"class_type": "MaskFromShapes", "inputs": {"width": 1024, "height": 576,
                                                      "shapes": '[{"type": "rect", "x0": 0, "y0": 0, "x1": 1024, "y1": 330}]'}},
    "27": {"class_type": "TrajectoriesFromJSON", "inputs": {
        "tracks": '[{"box": [110, 215, 310, 280], "path": [[210, 247], [330, 225], [450, 215], [560, 200]]}]',
        "width": 1024, "height": 576}},
}


def load_directed(editor):
    prompt = copy.deepcopy(DIRECTED)
    editor.page.evaluate("(wf) => vidgraph.loadAny(wf, 'directed')", prompt)
    editor.page.wait_for_function("vidgraph.graph.nodes.size === %d" % len(prompt))
    return {n["class_type"]: int(nid) for nid, n in prompt.items()}


def open_drawer(editor, node_type):
    editor.node(node_type).locator(".motion-draw-open").click()
    dialog = editor.page.locator(".motion-draw")
    dialog.wait_for()
    editor.page.wait_for_function("document.querySelector('.motion-draw').dataset.loaded === 'image'")
    return dialog


def canvas_point(dialog, x, y, size=(1024, 576)):
    """Client coordinates of image pixel (x, y) on the drawing canvas."""
    box = dialog.locator("canvas").bounding_box()
    return box["x"] + x * box["width"] / size[0], box["y"] + y * box["height"] / size[1]


def widget_value(editor, node_id, name):
    return editor.page.evaluate("([id, name]) => vidgraph.graph.nodes.get(id).widgets.find(w => w.name === name).value",
                                [node_id, name])


def test_painting_a_mask_stores_shapes_in_the_prompt(editor):
    ids = load_directed(editor)
    dialog = open_drawer(editor, "MaskFromShapes")
    dialog.locator("[data-action=clear]").click()
    dialog.locator("[data-action=tool-rect]").click()
    editor.drag_points(canvas_point(dialog, 100, 50), canvas_point(dialog, 500, 300))
    dialog.locator("[data-action=tool-stroke]").click()
    editor.drag_points(canvas_point(dialog, 600, 400), canvas_point(dialog, 900, 420))
    editor.shot("motion-mask-drawing", dialog)
    dialog.locator("[data-action=save]").click()
    shapes = json.loads(widget_value(editor, ids["MaskFromShapes"], "shapes"))
    assert [s["type"] for s in shapes] == ["rect", "stroke"]
    rect = shapes[0]
    assert abs(rect["x0"] - 100) <= 3 and abs(rect["y0"] - 50) <= 3 and abs(rect["x1"] - 500) <= 3 and abs(rect["y1"] - 300) <= 3
    assert len(shapes[1]["points"]) >= 2 and shapes[1]["radius"] > 0
    prompt = editor.prompt()
    assert json.loads(prompt[str(ids["MaskFromShapes"])]["inputs"]["shapes"]) == shapes
    assert editor.page.locator(".motion-draw").count() == 0
    assert not editor.real_errors()


def test_drawing_a_box_and_its_path_stores_a_track_and_cancel_keeps_the_old_value(editor):
    ids = load_directed(editor)
    before = widget_value(editor, ids["TrajectoriesFromJSON"], "tracks")
    dialog = open_drawer(editor, "TrajectoriesFromJSON")
    dialog.locator("[data-action=clear]").click()
    dialog.locator("[data-action=cancel]").click()
    assert widget_value(editor, ids["TrajectoriesFromJSON"], "tracks") == before
    dialog = open_drawer(editor, "TrajectoriesFromJSON")
    dialog.locator("[data-action=clear]").click()
    editor.drag_points(canvas_point(dialog, 200, 200), canvas_point(dialog, 300, 280))
    for x, y in ((400, 240), (600, 200)):
        editor.page.mouse.click(*canvas_point(dialog, x, y))
    editor.shot("motion-track-drawing", dialog)
    dialog.locator("[data-action=save]").click()
    tracks = json.loads(widget_value(editor, ids["TrajectoriesFromJSON"], "tracks"))
    assert len(tracks) == 1 and len(tracks[0]["path"]) == 3
    x0, y0, x1, y1 = tracks[0]["box"]
    assert abs(x0 - 200) <= 3 and abs(y1 - 280) <= 3
    assert abs(tracks[0]["path"][-1][0] - 600) <= 3
    # what the node makes of it: one track whose last box centre is where the path ends
    from vidgraph.nodes.motion.trajectories import tracks_from_json
    track = tracks_from_json(json.dumps(tracks), 1024, 576)[0]
    assert abs(track.centres(25)[-1][0] * 1024 - tracks[0]["path"][-1][0]) < 1e-6


def test_camera_preview_plays_the_nodes_own_path(editor):
    ids = load_directed(editor)
    dialog = open_drawer(editor, "CameraPath")
    assert dialog.get_attribute("data-frames") == "25"
    # the preview plays at 6 fps: shoot it a few poses into the move
    editor.page.wait_for_function("parseInt(document.querySelector('.motion-draw-frame').textContent.split(' ')[1]) >= 3")
    editor.shot("motion-camera-preview", dialog)
    dialog.locator("[data-action=save]").click()
    # the preview's poses equal nodes/motion/camera.py's, for a preset and for keyframes
    keyframes = '[{"frame": 2, "zoom": 1.5, "roll": 10}, {"frame": 7, "pan_x": -0.2, "pan_y": 0.1}]'
    cases = [({"frames": 9, "preset": "push in and pan right", "intensity": 0.7, "easing": "ease_in_out"},
              camera.preset_path("push in and pan right", 0.7, 9, "ease_in_out")),
             ({"frames": 9, "preset": "custom", "easing": "ease_out", "keyframes": keyframes},
              camera.keyframed_path(keyframes, 9, "ease_out"))]
    presets = editor.page.evaluate("(id) => vidgraph.graph.nodes.get(id).widgets.find(w => w.name === 'preset').spec.options.presets",
                                   ids["CameraPath"])
    for values, expected in cases:
        poses = editor.page.evaluate("([v, p]) => import('/extensions/motion/draw.js').then(m => m.cameraPoses(v, p))",
                                     [values, presets])
        for got, want in zip(poses, expected, strict=True):
            for key in ("pan_x", "pan_y", "zoom", "roll"):
                assert abs(got[key] - getattr(want, key)) < 1e-9, (values, key)
    assert not editor.real_errors()
