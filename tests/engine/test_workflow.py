"""UI → API conversion and workflow loading, on hand-written editor files (not our own output)."""
import copy
import importlib.util
import io
import json
import random
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from vidgraph.engine import metadata
from vidgraph.engine.context import current_context
from vidgraph.engine.folders import Folders
from vidgraph.engine.workflow import WorkflowError, load_workflow, read_workflow, ui_to_api

FIXTURES = Path(__file__).parent / "fixtures"


def _load_standins():
    spec = importlib.util.spec_from_file_location("standin_nodes", FIXTURES / "standin_nodes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NODE_CLASS_MAPPINGS


class Registry:
    """Only what the converter uses of a NodeRegistry: `classes` (and display names)."""
    def __init__(self):
        self.classes = _load_standins()
        self.display_names = {"ImageOnlyCheckpointLoader": "Image Only Checkpoint Loader (img2vid model)",
                              "LoadImage": "Load Image", "VAEDecode": "VAE Decode"}


REGISTRY = Registry()


def ui_fixture():
    return json.loads((FIXTURES / "svd_img2vid_ui.json").read_text())


def api_fixture():
    return json.loads((FIXTURES / "svd_img2vid_api.json").read_text())


def _strip(prompt):
    return {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}


def node(ui, node_id):
    return next(n for n in ui["nodes"] if n["id"] == node_id)


def test_svd_ui_workflow_converts_to_the_hand_written_api_prompt():
    assert ui_to_api(ui_fixture(), REGISTRY) == api_fixture()


def test_schema_version_1_links_as_objects_give_the_same_prompt():
    ui = ui_fixture()
    ui["version"] = 1
    ui["links"] = [dict(zip(["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], row))
                   for row in ui["links"]]
    assert ui_to_api(ui, REGISTRY) == api_fixture()


def test_primitive_value_wins_over_the_stale_widget_value():
    ui = ui_fixture()
    node(ui, 10)["widgets_values"] = [12, "increment"]
    assert ui_to_api(ui, REGISTRY)["4"]["inputs"]["fps"] == 12


def test_seed_converted_to_an_input_and_fed_by_a_primitive():
    ui = ui_fixture()
    ks = node(ui, 6)
    ks["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 20})
    ui["nodes"].append({"id": 20, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "seed"}, "links": [20]}],
                        "widgets_values": [42, "fixed"]})
    ui["links"].append([20, 20, 0, 6, 4, "INT"])
    inputs = ui_to_api(ui, REGISTRY)["6"]["inputs"]
    assert inputs["seed"] == 42 and inputs["steps"] == 20 and inputs["sampler_name"] == "euler"


def test_seed_without_its_control_value_still_maps_positionally():
    ui = ui_fixture()
    node(ui, 6)["widgets_values"] = [5, 30, 3.0, "dpmpp_2m", "normal", 0.8]
    inputs = ui_to_api(ui, REGISTRY)["6"]["inputs"]
    assert (inputs["seed"], inputs["steps"], inputs["cfg"], inputs["scheduler"], inputs["denoise"]) == \
        (5, 30, 3.0, "normal", 0.8)


def test_legacy_noise_seed_control_value_is_skipped():
    ui = {"nodes": [{"id": 1, "type": "KSamplerAdvanced", "mode": 0, "inputs": [], "outputs": [],
                     "widgets_values": ["enable", 99, "fixed", 25, 2.5, "euler", "karras", 0, 10000, "disable"]}],
          "links": []}
    inputs = ui_to_api(ui, REGISTRY)["1"]["inputs"]
    assert inputs == {"add_noise": "enable", "noise_seed": 99, "steps": 25, "cfg": 2.5, "sampler_name": "euler",
                      "scheduler": "karras", "start_at_step": 0, "end_at_step": 10000,
                      "return_with_leftover_noise": "disable"}


def test_force_input_takes_no_widget_value_and_optional_widgets_follow_required():
    ui = {"nodes": [{"id": 3, "type": "StringConcat", "mode": 0, "inputs": [{"name": "a", "type": "STRING", "link": None}],
                     "outputs": [], "widgets_values": ["tail", ", "]}], "links": []}
    assert ui_to_api(ui, REGISTRY)["3"]["inputs"] == {"b": "tail", "sep": ", "}


def test_missing_trailing_widget_values_take_the_declared_default():
    ui = ui_fixture()
    node(ui, 4)["widgets_values"] = [512, 320, 14]
    inputs = ui_to_api(ui, REGISTRY)["4"]["inputs"]
    assert (inputs["width"], inputs["motion_bucket_id"], inputs["augmentation_level"]) == (512, 127, 0.0)


@pytest.mark.parametrize("values", [["mask.png", "red", "image"], ["mask.png", "red"]])
def test_upload_button_value_comes_after_the_required_widgets(values):
    ui = {"nodes": [{"id": 1, "type": "LoadImageMask", "mode": 0, "inputs": [], "outputs": [],
                     "widgets_values": values}], "links": []}
    assert ui_to_api(ui, REGISTRY)["1"]["inputs"] == {"image": "mask.png", "channel": "red"}


def test_dict_widgets_values_and_list_values_are_wrapped():
    ui = {"nodes": [{"id": 1, "type": "StringConcat", "mode": 0, "inputs": [], "outputs": [],
                     "widgets_values": {"b": ["x", "y"], "sep": "-"}}], "links": []}
    assert ui_to_api(ui, REGISTRY)["1"]["inputs"] == {"b": {"__value__": ["x", "y"]}, "sep": "-"}


def test_muted_upstream_drops_the_input_so_validation_reports_it():
    ui = ui_fixture()
    node(ui, 3)["mode"] = 2  # mute the CFG guidance: KSampler loses its model
    prompt = ui_to_api(ui, REGISTRY)
    assert "3" not in prompt and "model" not in prompt["6"]["inputs"]


def test_bypass_forwards_by_type_and_drops_when_nothing_matches():
    ui = ui_fixture()
    node(ui, 3)["mode"] = 4  # bypass the CFG guidance: MODEL passes through from the loader
    assert ui_to_api(ui, REGISTRY)["6"]["inputs"]["model"] == ["1", 0]
    node(ui, 12)["inputs"][0]["type"] = "MASK"  # the bypassed scaler has no IMAGE input to forward
    assert "init_image" not in ui_to_api(ui, REGISTRY)["4"]["inputs"]


def test_chained_reroutes_are_followed():
    ui = ui_fixture()
    ui["nodes"].append({"id": 30, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 31}],
                        "outputs": [{"name": "", "type": "VAE", "links": [10]}]})
    ui["links"] = [row for row in ui["links"] if row[0] != 10] + [[31, 5, 0, 30, 0, "VAE"], [10, 30, 0, 7, 1, "VAE"]]
    assert ui_to_api(ui, REGISTRY)["7"]["inputs"]["vae"] == ["1", 2]


@pytest.mark.parametrize("mutate, expected", [
    (lambda ui: node(ui, 6).update(type="KSamplerTurbo"), "node 6 has type 'KSamplerTurbo'"),
    (lambda ui: ui.update(links=[r for r in ui["links"] if r[0] != 11]), "node 7 input 'samples': link 11"),
    (lambda ui: ui["links"].__setitem__(10, [11, 99, 0, 7, 0, "LATENT"]), "comes from node 99"),
    (lambda ui: node(ui, 8).update(widgets_values="svd"), r"node 8 \(SaveAnimatedWEBP\): widgets_values must be a list"),
    (lambda ui: ui["links"].append([40, 1]), "malformed link"),
    (lambda ui: ui["links"].append([41, 1, "MODEL", 3, 0, "MODEL"]), "slots as integers"),
    (lambda ui: node(ui, 7).update(type=["VAEDecode"]), "node 7 has no type"),
    (lambda ui: ui["nodes"].append({"id": 1, "type": "Note"}), "two nodes with id 1"),
    (lambda ui: node(ui, 5)["inputs"][0].update(link=10), "loops"),
    (lambda ui: node(ui, 10).update(widgets_values=[]), "primitive node 10 has no value"),
])
def test_malformed_ui_workflows_name_the_node_and_the_problem(mutate, expected):
    ui = ui_fixture()
    mutate(ui)
    with pytest.raises(WorkflowError, match=expected) as info:
        ui_to_api(ui, REGISTRY)
    assert info.value.to_json()["error"]["type"] == "invalid_prompt"


def subgraph_fixture():
    return json.loads((FIXTURES / "svd_subgraph_ui.json").read_text())


def test_subgraph_is_flattened_with_editor_style_ids():
    prompt = _strip(ui_to_api(subgraph_fixture(), REGISTRY))
    assert set(prompt) == {"1", "2", "4", "20:1", "20:2", "20:3", "8"}
    assert prompt["20:1"]["inputs"] == {"model": ["1", 0], "min_cfg": 1.5}
    assert prompt["20:2"]["inputs"] == {"seed": 99, "steps": 25, "cfg": 3, "sampler_name": "euler",  # promoted seed
                                        "scheduler": "karras", "denoise": 1, "model": ["20:1", 0],
                                        "positive": ["4", 0], "negative": ["4", 1], "latent_image": ["4", 2]}
    assert prompt["20:3"]["inputs"] == {"samples": ["20:2", 0], "vae": ["1", 2]}
    assert prompt["8"]["inputs"]["images"] == ["20:3", 0]


def test_subgraph_input_linked_outside_and_muted_instance():
    ui = subgraph_fixture()
    node(ui, 20)["inputs"][5]["link"] = 10  # the promoted seed now comes from a primitive outside
    ui["nodes"].append({"id": 21, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                        "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "seed"}, "links": [10]}],
                        "widgets_values": [7, "fixed"]})
    ui["links"].append([10, 21, 0, 20, 5, "INT"])
    assert ui_to_api(ui, REGISTRY)["20:2"]["inputs"]["seed"] == 7
    node(ui, 20)["mode"] = 2
    prompt = ui_to_api(ui, REGISTRY)
    assert not any(key.startswith("20:") for key in prompt) and "images" not in prompt["8"]["inputs"]


def test_subgraph_that_contains_itself_is_refused():
    ui = subgraph_fixture()
    definition = ui["definitions"]["subgraphs"][0]
    definition["nodes"].append({"id": 4, "type": definition["id"], "mode": 0, "inputs": [], "outputs": []})
    with pytest.raises(WorkflowError, match="contains itself"):
        ui_to_api(ui, REGISTRY)


def test_muted_and_bypassed_unknown_nodes_are_tolerated():
    ui = ui_fixture()
    ui["nodes"].append({"id": 60, "type": "SomeMissingPackNode", "mode": 2, "inputs": [], "outputs": []})
    ui["nodes"].append({"id": 61, "type": "AnotherMissingNode", "mode": 4, "inputs": [], "outputs": []})
    assert set(ui_to_api(ui, REGISTRY)) == {"1", "2", "3", "4", "6", "7", "8"}


# ---------------------------------------------------------------------------- load_workflow

def test_load_api_file_keeps_meta_and_stringifies_ids(tmp_path):
    api = {1: {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0]}, "_meta": {"title": "x"}}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(api))
    assert load_workflow(path, REGISTRY) == {"1": api[1]}
    assert load_workflow(str(path), REGISTRY) == {"1": api[1]}
    assert load_workflow(api, REGISTRY) == {"1": api[1]}


def test_load_ui_from_path_bytes_text_and_dict_agree():
    path = FIXTURES / "svd_img2vid_ui.json"
    expected = api_fixture()
    for source in (path, str(path), path.read_bytes(), path.read_text(), ui_fixture()):
        assert load_workflow(source, REGISTRY) == expected
    loaded = read_workflow(path, REGISTRY)
    assert loaded.source_format == "ui" and loaded.ui["last_node_id"] == 12


def test_a_prompt_request_body_loads_with_its_ui_graph():
    body = {"prompt": api_fixture(), "client_id": "x", "extra_data": {"extra_pnginfo": {"workflow": ui_fixture()}}}
    loaded = read_workflow(body, REGISTRY)
    assert loaded.prompt == api_fixture() and loaded.ui["version"] == 0.4


def test_embedded_metadata_saved_as_json_loads_like_the_file_it_came_from():
    """{"prompt": ..., "workflow": ...}: what read_embedded_metadata returns, and what metadata
    tools save; the prompt runs and the editor graph is kept for the outputs."""
    loaded = read_workflow({"prompt": api_fixture(), "workflow": ui_fixture()}, REGISTRY)
    assert loaded.prompt == api_fixture() and loaded.ui["version"] == 0.4
    odd = read_workflow({"prompt": api_fixture(), "extra_data": "not an object"}, REGISTRY)
    assert odd.prompt == api_fixture() and odd.ui is None


def _png(**text):
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_png_prefers_the_embedded_prompt_and_keeps_the_workflow():
    prompt = {"7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}}}
    loaded = read_workflow(_png(prompt=prompt, workflow=ui_fixture()), REGISTRY)
    assert loaded.prompt == prompt and loaded.source_format == "png" and loaded.ui["version"] == 0.4


def test_png_with_only_a_workflow_is_converted(tmp_path):
    path = tmp_path / "result.png"
    path.write_bytes(_png(workflow=ui_fixture()))
    assert load_workflow(path, REGISTRY) == api_fixture()


def test_webp_with_embedded_workflow_loads():
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "WEBP", exif=metadata.webp_exif(api_fixture(), {"workflow": ui_fixture()}))
    assert read_workflow(out.getvalue(), REGISTRY).source_format == "webp"
    assert load_workflow(out.getvalue(), REGISTRY) == api_fixture()


@pytest.mark.parametrize("source, expected", [
    (b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0" * 17 + b"\0\0\0\0IEND\xaeB`\x82", "no embedded"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "neither JSON nor"),
    ("[1, 2]", "must be a JSON object"),
    ({"nodes_x": 1}, "not a workflow"),
    ({}, "not a workflow"),
    (12, "cannot load a workflow from a int"),
    ("/no/such/workflow.json", "workflow file not found"),
])
def test_bad_sources_give_clear_errors(source, expected):
    with pytest.raises(WorkflowError, match=expected):
        load_workflow(source, REGISTRY)


# ------------------------------------------------ cross-check with the independent API → UI export

def test_round_trip_through_the_editor_export_of_another_module():
    from vidgraph.engine.ui_export import api_to_ui
    api = api_fixture()
    assert _strip(ui_to_api(api_to_ui(api, REGISTRY.classes), REGISTRY)) == _strip(api)


def test_editor_export_writes_the_control_value_of_a_legacy_seed():
    """The editors give an INT named seed/noise_seed a control widget even without
    control_after_generate; positional readers expect its value."""
    from vidgraph.engine.ui_export import api_to_ui
    api = {"1": {"class_type": "KSamplerAdvanced", "inputs": {
        "add_noise": "enable", "noise_seed": 99, "steps": 25, "cfg": 2.5, "sampler_name": "euler",
        "scheduler": "karras", "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}}
    classes = REGISTRY.classes
    assert "control_after_generate" not in classes["KSamplerAdvanced"].INPUT_TYPES()["required"]["noise_seed"][1]
    exported = api_to_ui(api, classes)
    assert exported["nodes"][0]["widgets_values"] == ["enable", 99, "fixed", 25, 2.5, "euler", "karras", 0, 10000,
                                                      "disable"]


class _PickWithControl:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "f"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"name": (["a", "b", "c"], {"control_after_generate": True}),
                             "count": ("INT", {"default": 1}),
                             "seed": ("INT", {"default": 0, "control_after_generate": False})}}


@pytest.mark.parametrize("values", [["b", "increment", "", 4, 9], ["b", "increment", 4, 9], ["b", 4, 9]])
def test_a_combo_with_a_control_saves_a_filter_value_too(values):
    """The editors follow a combo's control_after_generate value with its control_filter_list text;
    an explicit control_after_generate False turns the legacy seed rule off."""
    from vidgraph.engine.ui_export import api_to_ui
    classes = {"Pick": _PickWithControl}
    ui = {"nodes": [{"id": 1, "type": "Pick", "mode": 0, "inputs": [], "outputs": [], "widgets_values": values}],
          "links": []}
    api = ui_to_api(ui, classes)
    assert api["1"]["inputs"] == {"name": "b", "count": 4, "seed": 9}
    assert api_to_ui(api, classes)["nodes"][0]["widgets_values"] == ["b", "fixed", "", 4, 9]


def test_editor_export_keeps_links_under_undeclared_input_names():
    """Nodes with dynamic inputs get links under names INPUT_TYPES does not list; the engine runs
    them (ComfyUI's rule), so the round trip through the editor format keeps them."""
    from vidgraph.engine.ui_export import api_to_ui
    api = api_fixture()
    target = next(nid for nid, n in api.items() if n["class_type"] == "VAEDecode")
    source = next(nid for nid, n in api.items() if n["class_type"] == "LoadImage")
    api[target]["inputs"]["extra_1"] = [source, 0]
    assert _strip(ui_to_api(api_to_ui(api, REGISTRY.classes), REGISTRY)) == _strip(api)


def _real_registry(needed):
    from vidgraph.runtime import build_registry
    registry = build_registry()
    missing = set(needed) - set(registry.classes)
    if missing:
        pytest.skip(f"nodes not written yet: {sorted(missing)}")
    return registry


def test_the_hand_written_editor_file_converts_with_the_real_node_pack():
    """The built-in nodes declare their inputs in ComfyUI's order, so editor files map right."""
    api = api_fixture()
    registry = _real_registry({n["class_type"] for n in api.values()} | {"ImageScaleBy", "PreviewImage"})
    assert _strip(ui_to_api(ui_fixture(), registry)) == _strip(api)


@pytest.mark.parametrize("name", ["svd_img2vid.json", "svd_xt_img2vid.json", "svd_xt_long_chained.json"])
def test_bundled_workflows_round_trip_with_the_real_registry(name):
    from vidgraph.engine.ui_export import api_to_ui
    path = Path(__file__).parents[2] / "workflows" / name
    if not path.exists():
        pytest.skip(f"workflows/{name} not written yet")
    api = json.loads(path.read_text())
    registry = _real_registry({n["class_type"] for n in api.values()})
    assert _strip(ui_to_api(api_to_ui(api, registry.classes), registry)) == _strip(api)


def test_loading_a_dict_never_aliases_the_callers_inputs():
    api = api_fixture()
    prompt = load_workflow(api, REGISTRY)
    prompt["6"]["inputs"]["seed"] = 1
    assert api["6"]["inputs"]["seed"] == 237514639057514


def test_node_classes_that_list_files_find_the_folders_in_the_context(tmp_path):
    """INPUT_TYPES() is called with no argument (a pack may wrap it as f(*args)); a vidgraph node
    that lists files finds the registry's folders through current_context() instead."""
    class PickFile:
        @classmethod
        def INPUT_TYPES(cls):
            names = sorted(p.name for p in current_context().folders.input_dir.iterdir())
            return {"required": {"name": (names,), "strength": ("FLOAT", {"default": 1.0})}}
        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"

    class Registry:
        classes = {"PickFile": PickFile}
        folders = Folders(tmp_path)

    Registry.folders.ensure_dirs()
    for name in ("b.bin", "a.bin"):
        (Registry.folders.input_dir / name).write_bytes(b"")
    ui = {"nodes": [{"id": 1, "type": "PickFile", "mode": 0, "widgets_values": ["b.bin", 0.5]}], "links": []}
    assert ui_to_api(ui, Registry())["1"]["inputs"] == {"name": "b.bin", "strength": 0.5}
    assert current_context() is None  # the scope ends with the call


# ------------------------------------------------------------------------------- damaged files
# Random damage to real-shaped files: every failure must be a WorkflowError naming the problem.

JUNK = [None, 1, -1, 99, "x", [], {}, [1], {"a": 1}, 2.5, True, "*", [1, 2, 3, 4, 5, 6], -10, -20]


def _paths(value, path=()):
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, path + (key,))


def _damage(ui: dict, rng: random.Random) -> dict:
    ui = copy.deepcopy(ui)
    paths = list(_paths(ui))[1:]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        target = ui
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = copy.deepcopy(rng.choice(JUNK))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed this path
    return ui


@pytest.mark.parametrize("name", ["svd_img2vid_ui.json", "svd_subgraph_ui.json", "core_math_ui.json"])
def test_damaged_ui_workflows_raise_only_workflow_errors(name):
    base = json.loads((FIXTURES / name).read_text())
    rng = random.Random(name)
    for _ in range(400):
        try:
            ui_to_api(_damage(base, rng), REGISTRY)
        except WorkflowError as exc:
            assert str(exc)
