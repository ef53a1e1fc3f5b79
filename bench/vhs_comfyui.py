"""VideoHelperSuite load -> select -> combine: the same workflow in a real ComfyUI and in vidgraph.

A 12-frame lossless clip (frame i has its own colours, bench/pack_workflows.make_clip) is loaded by
VHS_LoadVideoPath, every 2nd frame from frame 1 kept by VHS_SelectEveryNthImage and written by
VHS_VideoCombine, once as FFV1 (lossless) and once as H.264 MP4 (VHS's default format). ComfyUI
runs headless on the CPU (`main.py --cpu`, its own Python), driven through its HTTP API; vidgraph
runs the same API-format workflow with `vidgraph run`. Both outputs are decoded with PyAV and
compared: frame count, frame rate, and the largest difference between corresponding frames (and
against the source frames they should be).

Nothing of ComfyUI or the pack is kept here: their checkouts are given by path.

Run:  .venv/bin/python bench/vhs_comfyui.py --comfyui /work/comfy --comfy-python /work/venv-comfy/bin/python \\
          --vhs /work/packs/ComfyUI-VideoHelperSuite
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import av
import numpy as np

from pack_workflows import VIDGRAPH, decoded, make_clip

FORMATS = ("video/ffv1-mkv", "video/h264-mp4")


def workflow(clip: Path, video_format: str, prefix: str) -> dict:
    return {"1": {"class_type": "VHS_LoadVideoPath",
                  "inputs": {"video": str(clip), "force_rate": 0, "custom_width": 0, "custom_height": 0,
                             "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1}},
            "2": {"class_type": "VHS_SelectEveryNthImage",
                  "inputs": {"images": ["1", 0], "select_every_nth": 2, "skip_first_images": 1}},
            "3": {"class_type": "VHS_VideoCombine",
                  "inputs": {"images": ["2", 0], "frame_rate": 4, "loop_count": 0, "filename_prefix": prefix,
                             "format": video_format, "pingpong": False, "save_output": True,
                             **({"pix_fmt": "yuv420p", "crf": 19, "save_metadata": True, "trim_to_audio": False}
                                if video_format == "video/h264-mp4" else {})}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port: int, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def run_comfyui(comfyui: Path, python: str, base: Path, prompts: list[dict]) -> list[Path]:
    port = free_port()
    log = open(base / "comfyui.log", "w")
    server = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                               "--base-directory", str(base), "--disable-auto-launch"],
                              cwd=comfyui, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while True:
            try:
                http(port, "/system_stats")
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"ComfyUI did not start; see {base / 'comfyui.log'}") from None
                time.sleep(1)
        outputs = []
        for prompt in prompts:
            prompt_id = http(port, "/prompt", {"prompt": prompt, "client_id": "bench"})["prompt_id"]
            while True:
                history = http(port, f"/history/{prompt_id}").get(prompt_id)
                if history and history.get("status", {}).get("completed") is not None:
                    break
                time.sleep(0.5)
            if history["status"].get("status_str") != "success":
                raise RuntimeError(f"ComfyUI: {history['status']}")
            outputs.append(Path(history["outputs"]["3"]["gifs"][0]["fullpath"]))
        return outputs
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def run_vidgraph(base: Path, custom: Path, prompts: list[dict]) -> list[Path]:
    outputs = []
    for i, prompt in enumerate(prompts):
        path = base / f"workflow{i}.json"
        path.write_text(json.dumps(prompt))
        done = subprocess.run([VIDGRAPH, "run", str(path), "--custom-nodes", str(custom), "--json",
                               "--base-dir", str(base)], capture_output=True, text=True, cwd=base, timeout=600)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        if report["status"] != "success":
            raise RuntimeError(f"vidgraph: {report}")
        outputs.append(Path(report["outputs"]["3"]["gifs"][0]["fullpath"]))
    return outputs


def rate(path: Path) -> str:
    with av.open(str(path)) as container:
        return str(container.streams.video[0].average_rate)


def largest_difference(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x - y).max()) for x, y in zip(a, b)) if a and b else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--comfyui", required=True, type=Path, help="a ComfyUI checkout (main.py)")
    parser.add_argument("--comfy-python", required=True, help="the Python of ComfyUI's environment")
    parser.add_argument("--vhs", required=True, type=Path, help="a ComfyUI-VideoHelperSuite checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = work / "clip.mkv"
        make_clip(clip)
        source = decoded(clip)
        prompts = [workflow(clip, fmt, f"vhs_{fmt.split('/')[1]}") for fmt in FORMATS]
        comfy_base, vidgraph_base = work / "comfyui", work / "vidgraph"
        for base in (comfy_base, vidgraph_base):
            (base / "custom_nodes").mkdir(parents=True)
            (base / "custom_nodes" / args.vhs.name).symlink_to(args.vhs.resolve())
        theirs = run_comfyui(args.comfyui.resolve(), args.comfy_python, comfy_base, prompts)
        ours = run_vidgraph(vidgraph_base, vidgraph_base / "custom_nodes", prompts)
        expected = source[1::2]
        print(f"source: {len(source)} frames; expected output: {len(expected)} frames at 4 fps")
        for fmt, their_file, our_file in zip(FORMATS, theirs, ours):
            a, b = decoded(their_file), decoded(our_file)
            identical = their_file.read_bytes() == our_file.read_bytes()
            print(f"{fmt:16} ComfyUI {len(a)} frames @ {rate(their_file)} fps | vidgraph {len(b)} frames @ "
                  f"{rate(our_file)} fps | max level difference ComfyUI vs vidgraph {largest_difference(a, b)}, "
                  f"vs source: ComfyUI {largest_difference(a, expected)}, vidgraph {largest_difference(b, expected)}"
                  f" | files byte-identical: {identical}")


if __name__ == "__main__":
    sys.exit(main())
