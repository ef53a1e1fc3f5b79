"""ComfyUI's own txt_to_image_to_video template (its editor file, from the comfyui-workflow-templates-json
package) runs unchanged on tiny SDXL and SVD-XT checkpoints saved under the names it expects."""
import importlib.util
import json
from pathlib import Path

import pytest

from vidgraph.engine.executor import Executor
from vidgraph.engine.folders import Folders
from vidgraph.engine.workflow import load_workflow
from vidgraph.nodes.sd.tiny import write_tiny_sd_checkpoint
from vidgraph.nodes.svd.tiny import write_tiny_checkpoint
from vidgraph.runtime import build_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def template() -> dict:
    spec = importlib.util.find_spec("comfyui_workflow_templates_json")
    if spec is None:
        pytest.skip("comfyui-workflow-templates-json is not installed (the [test] extra brings it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "templates" / "txt_to_image_to_video.json"
    return json.loads(path.read_text())


def test_comfyuis_text_to_image_to_video_template_runs(tmp_path):
    ui = template()
    folders = Folders(base_dir=tmp_path)
    folders.ensure_dirs()
    checkpoints = folders.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    write_tiny_sd_checkpoint(checkpoints / "sd_xl_base_1.0.safetensors", "sdxl")
    write_tiny_checkpoint(checkpoints / "svd_xt.safetensors")
    registry = build_registry(folders)
    prompt = load_workflow(ui, registry)
    classes = {node["class_type"] for node in prompt.values()}
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "SVD_img2vid_Conditioning", "SaveVideo"} <= classes
    # the template's sizes (1024x576, 25 frames, 20 + 15 steps) would take minutes on a CPU: shrink them
    by_class = {node["class_type"]: node for node in prompt.values()}
    by_class["EmptyLatentImage"]["inputs"].update(width=64, height=64)
    by_class["SVD_img2vid_Conditioning"]["inputs"].update(width=64, height=64, video_frames=4)
    for node in prompt.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
    result = Executor(registry, folders, settings={"device": "cpu", "previews": False}).run(prompt)
    assert result.status == "success", result.error
    video = [entry for outputs in result.outputs.values() for entry in outputs.get("images", [])
             if entry["filename"].endswith(".mp4")]
    assert video and (folders.output_dir / video[0]["subfolder"] / video[0]["filename"]).stat().st_size > 0
