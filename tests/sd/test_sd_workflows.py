"""The bundled SD workflows (workflows/sd15_txt2img, sdxl_txt2img, sdxl_svd_xt_txt2vid and their UI twins):
valid once the checkpoints they name exist, and running at test size on tiny checkpoints saved under
those names (the UI form through the engine's UI -> API conversion)."""
import json

import pytest

from vidgraph import data_path
from vidgraph.engine.executor import Executor
from vidgraph.engine.validation import validate_prompt
from vidgraph.engine.workflow import load_workflow
from vidgraph.nodes.sd.tiny import write_tiny_sd_checkpoint
from vidgraph.nodes.svd.tiny import write_tiny_checkpoint
from vidgraph.runtime import build_registry

from sd_shared import model_folders

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKFLOWS = data_path("workflows")
# workflow -> {checkpoint name it loads: how to write a tiny one}
CHECKPOINTS = {
    "sd15_txt2img.json": {"v1-5-pruned-emaonly.safetensors": "sd1"},
    "sdxl_txt2img.json": {"sd_xl_base_1.0.safetensors": "sdxl"},
    "sdxl_svd_xt_txt2vid.json": {"sd_xl_base_1.0.safetensors": "sdxl", "svd_xt.safetensors": "svd"},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return model_folders(tmp_path_factory.mktemp("sd-workflows"))


def put_checkpoints(folders, name):
    for ckpt, family in CHECKPOINTS[name].items():
        path = folders.models_dir / "checkpoints" / ckpt
        if not path.exists():
            write_tiny_checkpoint(path) if family == "svd" else write_tiny_sd_checkpoint(path, family)


def shrink(prompt: dict) -> dict:
    """Test size: 64x64 stills, 3 frames, 2 steps."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in ("EmptyLatentImage", "SVD_img2vid_Conditioning", "CLIPTextEncodeSDXL"):
            inputs.update({k: 64 for k in ("width", "height", "target_width", "target_height") if k in inputs})
        if node["class_type"] == "SVD_img2vid_Conditioning":
            inputs["video_frames"] = 3
        if node["class_type"] == "KSampler":
            inputs["steps"] = 2
    return prompt


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_sd_workflow_validates_once_its_checkpoints_exist(env, name):
    prompt = json.loads((WORKFLOWS / name).read_text())
    for ckpt in CHECKPOINTS[name]:
        (env.models_dir / "checkpoints" / ckpt).unlink(missing_ok=True)
    missing = validate_prompt(build_registry(env), prompt).to_json()["node_errors"]
    assert any(e["extra_info"]["input_name"] == "ckpt_name" for n in missing.values() for e in n["errors"])
    put_checkpoints(env, name)
    registry = build_registry(env)
    assert validate_prompt(registry, prompt).ok
    assert validate_prompt(registry, load_workflow(WORKFLOWS / "ui" / name, registry)).ok


@pytest.mark.parametrize("form", ["api", "ui"])
@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_sd_workflow_runs_at_test_size(env, name, form):
    put_checkpoints(env, name)
    registry = build_registry(env)
    prompt = load_workflow(WORKFLOWS / ("ui/" + name if form == "ui" else name), registry)
    assert prompt == json.loads((WORKFLOWS / name).read_text())
    result = Executor(registry, env, settings={"device": "cpu", "previews": False}).run(shrink(prompt))
    assert result.status == "success", result.error
    files = [env.output_dir / e["subfolder"] / e["filename"] for ui in result.outputs.values() for e in ui.get("images", [])]
    suffixes = sorted(p.suffix for p in files)
    assert suffixes == ([".mp4", ".png"] if "svd" in name else [".png"]) and all(p.stat().st_size for p in files)
