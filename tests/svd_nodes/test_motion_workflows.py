"""The bundled motion-control workflows run end to end on the tiny checkpoint (shrunk to test size)."""
from __future__ import annotations

import pytest

from svd_nodes_support import CHECKPOINT, bundled_api

SIZE, FRAMES = 64, 3


def shrunk(name: str) -> dict:
    prompt = bundled_api(name)
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "ImageOnlyCheckpointLoader":
            inputs["ckpt_name"] = CHECKPOINT
        elif kind == "SVD_img2vid_Conditioning":
            inputs.update(width=SIZE, height=SIZE, video_frames=FRAMES)
        elif kind == "KSampler":
            inputs["steps"] = 3
        elif kind == "ImageScale":
            inputs.update(width=SIZE, height=SIZE)
        elif kind in ("CameraPath", "TrajectoryWarpImage"):
            inputs["frames"] = FRAMES
        elif kind == "TrajectoryGuidance":
            inputs.update(iterations=1, start_at=0.0, end_at=0.5)
    return prompt


@pytest.mark.parametrize("name", ["svd_xt_motion_brush.json", "svd_xt_trajectory.json", "svd_xt_camera.json",
                                  "svd_xt_keyframes.json", "svd_xt_loop.json", "svd_xt_directed.json"])
def test_motion_workflow_runs_and_writes_its_clip(svd_env, name):
    result = svd_env.executor().run(shrunk(name))
    assert result.status == "success", result.error
    files = svd_env.output_files(result, "7") + svd_env.output_files(result, "9")
    assert [p.suffix for p in files] == [".webp", ".mp4"] and all(p.stat().st_size > 0 for p in files)
    for node_id, node in shrunk(name).items():      # previews and overlays have a frame per video frame
        if node["class_type"] == "SaveAnimatedWEBP" and node_id != "7":
            assert svd_env.output_files(result, node_id)
