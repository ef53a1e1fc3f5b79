"""The bundled workflows: UI versions in sync with the API ones, both valid with the real registry,
and the chained long-clip workflow running end to end on the tiny checkpoint."""
from __future__ import annotations

import importlib.util
import json
import shutil

import av
import pytest

from svd_nodes_support import CHECKPOINT, WORKFLOWS, bundled_api
from vidgraph.engine.ui_export import api_to_ui
from vidgraph.engine.validation import validate_prompt
from vidgraph.engine.workflow import load_workflow, read_workflow, ui_to_api

UI_DIR = WORKFLOWS / "ui"
API_NAMES = sorted(p.name for p in WORKFLOWS.glob("*.json"))
SVD_NAMES = [name for name in API_NAMES if not name.startswith("sd")]  # the SD family's run in tests/sd


def load_generator():
    spec = importlib.util.spec_from_file_location("vidgraph_ui_generate", UI_DIR / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_bundled_workflow_has_a_ui_version():
    assert API_NAMES == ["sd15_txt2img.json", "sdxl_svd_xt_txt2vid.json", "sdxl_txt2img.json", "svd_img2vid.json", "svd_xt_camera.json", "svd_xt_directed.json", "svd_xt_img2vid.json",
                         "svd_xt_keyframes.json", "svd_xt_long_chained.json", "svd_xt_loop.json",
                         "svd_xt_motion_brush.json", "svd_xt_n_seconds.json", "svd_xt_trajectory.json",
                         "tiny_svd_demo.json"]
    assert sorted(p.name for p in UI_DIR.glob("*.json")) == API_NAMES


def test_ui_files_are_what_the_generator_writes(svd_env, capsys):
    """A changed API workflow must be followed by `workflows/ui/generate.py`."""
    generator = load_generator()
    assert generator.main(["--check"]) == 0, capsys.readouterr().err
    for name in API_NAMES:
        expected = api_to_ui(bundled_api(name), svd_env.registry.classes)
        assert json.loads((UI_DIR / name).read_text()) == expected, name


@pytest.mark.parametrize("name", API_NAMES)
def test_ui_workflow_converts_back_to_the_api_workflow(svd_env, name):
    ui = json.loads((UI_DIR / name).read_text())
    api = bundled_api(name)
    assert ui_to_api(ui, svd_env.registry) == api
    loaded = read_workflow(UI_DIR / name, svd_env.registry)
    assert loaded.source_format == "ui" and loaded.prompt == api


@pytest.mark.parametrize("name", API_NAMES)
def test_ui_workflow_keeps_titles_and_seed_control(name, svd_env):
    ui = json.loads((UI_DIR / name).read_text())
    api = bundled_api(name)
    titles = {str(node["id"]): node.get("title") for node in ui["nodes"]}
    assert titles == {nid: node["_meta"]["title"] for nid, node in api.items()}
    for node in ui["nodes"]:
        if node["type"] == "KSampler":  # seed, then the editor's "control after generate" value
            assert node["widgets_values"][:2] == [api[str(node["id"])]["inputs"]["seed"], "fixed"]


@pytest.mark.parametrize("name", API_NAMES)
def test_ui_workflow_links_agree_with_node_slots(name, svd_env):
    """The frontends trust both ends of a link: the row, the target's input and the origin's output."""
    ui = json.loads((UI_DIR / name).read_text())
    nodes = {node["id"]: node for node in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == len(ui["links"])
    for link_id, origin, origin_slot, target, target_slot, link_type in ui["links"]:
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert link_id in nodes[origin]["outputs"][origin_slot]["links"]
        assert nodes[origin]["outputs"][origin_slot]["type"] == link_type == nodes[target]["inputs"][target_slot]["type"]
        assert nodes[origin]["order"] < nodes[target]["order"]  # execution order is topological
    linked = {i["link"] for node in ui["nodes"] for i in node["inputs"] if i["link"] is not None}
    assert linked == {row[0] for row in ui["links"]}
    assert sorted(node["order"] for node in ui["nodes"]) == list(range(len(nodes)))


@pytest.mark.parametrize("name", SVD_NAMES)
def test_api_workflow_validates_once_its_checkpoint_exists(svd_env, name):
    prompt = bundled_api(name)
    wanted = prompt["1"]["inputs"]["ckpt_name"]
    missing = validate_prompt(svd_env.registry, prompt)
    assert not {"7", "9"} & set(missing.outputs)   # a camera-path preview needs no checkpoint and may still run
    errors = missing.to_json()["node_errors"]["1"]["errors"]
    assert errors[0]["type"] == "value_not_in_list" and errors[0]["extra_info"]["input_name"] == "ckpt_name"
    assert wanted in errors[0]["details"]

    svd_env.put_checkpoint(wanted)
    validation = validate_prompt(svd_env.registry, prompt)
    assert validation.ok, validation.to_json()
    # the motion workflows save previews and overlays as well
    assert ({"8"} if name == "svd_xt_n_seconds.json" else {"7", "9"}) <= set(validation.outputs)


def test_ui_workflow_validates_like_its_api_twin(svd_env):
    svd_env.put_checkpoint("svd_xt.safetensors")
    prompt = load_workflow(UI_DIR / "svd_xt_img2vid.json", svd_env.registry)
    assert validate_prompt(svd_env.registry, prompt).ok


def test_chained_long_clip_runs_and_joins_two_segments(svd_env):
    """svd_xt_long_chained at test size: segment 2 starts from segment 1's last frame, so the clip
    has 2F - 1 frames and segment 2's first frame is conditioned on segment 1's last."""
    frames = 3
    prompt = bundled_api("svd_xt_long_chained.json")
    prompt["1"]["inputs"]["ckpt_name"] = CHECKPOINT
    for node in ("3", "11"):
        prompt[node]["inputs"].update(width=64, height=64, video_frames=frames)
    for node in ("5", "12"):
        prompt[node]["inputs"]["steps"] = 2
    prompt["10"]["inputs"]["batch_index"] = frames - 1
    prompt["14"]["inputs"].update(batch_index=1, length=frames - 1)
    result = svd_env.executor().run(prompt)
    assert result.status == "success", result.error
    mp4 = svd_env.output_files(result, "9")[0]
    with av.open(str(mp4)) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == 2 * frames - 1
    assert (decoded[0].width, decoded[0].height) == (64, 64)


def test_chained_workflow_defaults_join_25_plus_24_frames():
    """The bundled numbers agree with each other: last frame index, and the frames kept of segment 2."""
    prompt = bundled_api("svd_xt_long_chained.json")
    frames = prompt["3"]["inputs"]["video_frames"]
    assert prompt["11"]["inputs"]["video_frames"] == frames
    assert prompt["10"]["inputs"] == {"image": ["6", 0], "batch_index": frames - 1, "length": 1}
    assert prompt["14"]["inputs"] == {"image": ["13", 0], "batch_index": 1, "length": frames - 1}
    assert prompt["12"]["inputs"]["seed"] != prompt["5"]["inputs"]["seed"]


def test_ui_workflow_runs_from_the_command_line(svd_env, tmp_path, capsys):
    """`vidgraph run workflows/ui/...` with --set overrides: the UI file is as runnable as the API one."""
    from vidgraph import cli

    shutil.copyfile(svd_env.tiny_checkpoint, svd_env.folders.models_dir / "checkpoints" / "svd.safetensors")
    code = cli.main(["run", str(UI_DIR / "svd_img2vid.json"), "--json", "--cpu",
                     "--models-dir", str(svd_env.folders.models_dir),
                     "--input-dir", str(svd_env.folders.input_dir),
                     "--output-dir", str(svd_env.folders.output_dir),
                     "--set", "3.width=64", "--set", "3.height=64", "--set", "3.video_frames=2",
                     "--set", "5.steps=2"])
    out = capsys.readouterr().out
    assert code == 0, out
    line = json.loads(out.strip().splitlines()[-1])
    assert line["status"] == "success"
    files = [svd_env.output_path(entry) for ui in line["outputs"].values() for entry in ui["images"]]
    assert sorted(p.suffix for p in files) == [".mp4", ".webp"] and all(p.is_file() for p in files)


def test_ui_workflows_are_packaged():
    import tomllib

    pyproject = tomllib.loads((WORKFLOWS.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["vidgraph.workflows"]
    packaged = {path for pattern in patterns for path in WORKFLOWS.glob(pattern)}
    assert set(UI_DIR.glob("*.json")) <= packaged
    assert set(WORKFLOWS.glob("*.json")) <= packaged


def test_clip_of_n_seconds_workflow_runs_at_test_size(svd_env):
    """The bundled "clip of N seconds" workflow, shrunk: 2 s at 6 fps in segments of 5 frames, then
    interpolated 4x: (12 - 1) x 4 + 1 = 45 frames at 24 fps in the MP4."""
    prompt = bundled_api("svd_xt_n_seconds.json")
    prompt["1"]["inputs"]["ckpt_name"] = CHECKPOINT
    prompt["3"]["inputs"].update(width=64, height=64)
    prompt["5"]["inputs"].update(seconds=2.0, video_frames=5, overlap_frames=2, steps=2)
    result = svd_env.executor().run(prompt)
    assert result.status == "success", result.error
    (path,) = svd_env.output_files(result, "8")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert frames == 45 and stream.average_rate == 24
