"""Real packs' nodes running under vidgraph (the "What runs" figures of docs/compatibility.md).

1. VideoHelperSuite: a 12-frame lossless clip (frame i has its own colours) is loaded with
   VHS_LoadVideoPath, every 2nd frame from frame 1 kept by VHS_SelectEveryNthImage and written by
   VHS_VideoCombine as FFV1; the output, decoded independently with PyAV, is compared with source
   frames 1, 3, 5, ...
2. Custom-Scripts + rgthree + WAS: pack_workflows/packs_smoke.json, run with `vidgraph run --json`.
3. LoRA through packs: pack_workflows/packs_lora.json, a tiny random-weight SD 1.5 checkpoint through
   rgthree's Power Lora Loader and Custom-Scripts' LoraLoader|pysssss (both call the core LoraLoader),
   with a one-layer LoRA file; a probe node of the bench's own reads back each MODEL's weight patches.
4. A pack's sampler: WAS's `KSampler (WAS)` (it calls `nodes.common_ksampler`) against vidgraph's
   KSampler on the same tiny checkpoint, seed and settings (pack_workflows/packs_sampling.json); a
   probe node reads the largest difference between the two latents.
5. Model-free nodes of the packs that load through the packs environment: pack_workflows/packs_tools.json
   (essentials' ImageResize+ and ImageFlip+, KJNodes' ImageSharpenKJ (V3 MatchType + DynamicCombo) and
   SimpleCalculatorKJ (V3 Autogrow), AnimateDiff-Evolved's context options, Advanced-ControlNet's
   TimestepKeyframe (V3)).
6. ComfyUI's model and sampling API through packs: pack_workflows/packs_model_api.json. WAS's
   `Checkpoint Loader (Simple)` (comfy.sd.load_checkpoint_guess_config) loads the tiny checkpoint;
   KJNodes' `ScheduledCFGGuidance` (a comfy.samplers.CFGGuider subclass whose predict_noise reads the
   run's sigmas and calls sampling_function) over the whole run against vidgraph's CFGGuider, and
   over the first 40% of it; Frame-Interpolation's `KSampler Gradually Adding More Denoise`
   (comfy.sample.sample with comfy.sample.prepare_noise) at denoise 0.5 and 0.6, its second latent
   against vidgraph's KSampler at 0.6. Probe nodes read the largest latent differences.

Run:  .venv/bin/python bench/pack_workflows.py PACKS_DIR   (PACKS_DIR holds the pack checkouts)
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).parent / "pack_workflows"
VIDGRAPH = str(Path(sys.executable).with_name("vidgraph"))


def make_clip(path: Path, frames: int = 12) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for i in range(frames):
            a = np.zeros((48, 64, 3), np.uint8)
            a[..., 0] = i * 20
            a[:, : 5 * i + 4, 1] = 200
            a[10:20, 10:30, 2] = 255 - i * 10
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]


def run(workflow: Path, custom: Path, cwd: Path) -> dict:
    done = subprocess.run([VIDGRAPH, "run", str(workflow), "--custom-nodes", str(custom), "--json",
                           "--base-dir", str(cwd)], capture_output=True, text=True, cwd=cwd, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    packs = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        custom = work / "custom_nodes"
        custom.mkdir()
        for name in ("ComfyUI-VideoHelperSuite", "ComfyUI-Custom-Scripts", "rgthree-comfy", "was-node-suite-comfyui"):
            (custom / name).symlink_to(packs / name)
        make_clip(work / "clip.mkv")
        shutil.copy(HERE / "vhs_select.json", work)
        report = run(work / "vhs_select.json", custom, work)
        produced = Path(report["outputs"]["3"]["gifs"][0]["fullpath"])
        source, out = decoded(work / "clip.mkv"), decoded(produced)
        expected = source[1::2]
        diff = max(int(np.abs(a - b).max()) for a, b in zip(expected, out))
        print(f"VHS load -> select every 2nd from 1 -> combine: {report['status']}; source {len(source)} frames, "
              f"output {len(out)} (expected {len(expected)}), max level difference {diff}")
        report = run(HERE / "packs_smoke.json", custom, work)
        shown = {k: v.get("text", v.get("value", [f"{len(v.get('images', []))} image(s)"])) for k, v in
                 sorted(report["outputs"].items())}
        print(f"Custom-Scripts + rgthree + WAS workflow: {report['status']}; executed {len(report['executed'])} "
              f"nodes; outputs {shown}")
        write_lora_models(work / "models")
        (custom / "vidgraph_bench_probe.py").write_text(PROBE)
        report = run(HERE / "packs_lora.json", custom, work)
        patched = {name: report["outputs"].get(node, {}).get("text", report.get("error"))
                   for node, name in (("4", "rgthree"), ("5", "pysssss"))}
        print(f"LoRA through rgthree and Custom-Scripts: {report['status']}; weight patches {patched}")
        report = run(HERE / "packs_sampling.json", custom, work)
        difference = report["outputs"].get("8", {}).get("text", report.get("error"))
        print(f"KSampler (WAS) vs KSampler: {report['status']}; largest latent difference {difference}")
        for name in ("ComfyUI-KJNodes", "ComfyUI_essentials", "ComfyUI-AnimateDiff-Evolved", "ComfyUI-Advanced-ControlNet"):
            (custom / name).symlink_to(packs / name)
        report = run(HERE / "packs_tools.json", custom, work)
        shown = {k: [t.split(" object at ")[0].rsplit(".", 1)[-1] for t in v["text"]] if "text" in v else
                 f"{len(v.get('images', []))} image(s)" for k, v in sorted(report["outputs"].items())}
        print(f"essentials + KJNodes + AnimateDiff-Evolved + Advanced-ControlNet tools: {report['status']}; "
              f"executed {len(report['executed'])} nodes; outputs {shown}")
        (custom / "ComfyUI-Frame-Interpolation").symlink_to(packs / "ComfyUI-Frame-Interpolation")
        report = run(HERE / "packs_model_api.json", custom, work)
        difference = {name: report["outputs"].get(node, {}).get("text", report.get("error"))
                      for node, name in (("12", "ScheduledCFGGuidance 0-100% vs CFGGuider"),
                                         ("15", "ScheduledCFGGuidance 0-40% vs CFGGuider"),
                                         ("19", "Gradually More Denoise 2nd vs KSampler 0.6"))}
        print(f"WAS checkpoint loader + KJNodes scheduled CFG + Frame-Interpolation sampler: {report['status']}; "
              f"largest latent differences {difference}")


PROBE = '''
class BenchWeightPatches:
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def probe(self, model):
        return {"ui": {"text": sorted(model.weight_patches)}}


class BenchLatentDifference:
    RETURN_TYPES = ()
    FUNCTION = "probe"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("LATENT",), "b": ("LATENT",)}}

    def probe(self, a, b):
        return {"ui": {"text": [float((a["samples"] - b["samples"]).abs().max())]}}


NODE_CLASS_MAPPINGS = {"BenchWeightPatches": BenchWeightPatches, "BenchLatentDifference": BenchLatentDifference}
'''


def write_lora_models(models: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from vidgraph.nodes.sd.tiny import write_tiny_sd_checkpoint

    for folder in ("checkpoints", "loras"):
        (models / folder).mkdir(parents=True, exist_ok=True)
    write_tiny_sd_checkpoint(models / "checkpoints" / "tiny.safetensors", "sd1", dtype=torch.float32)
    base = "lora_unet_input_blocks_1_1_proj_in"
    generator = torch.Generator().manual_seed(0)
    save_file({f"{base}.lora_up.weight": torch.randn(32, 2, generator=generator),
               f"{base}.lora_down.weight": torch.randn(2, 32, generator=generator)},
              str(models / "loras" / "one.safetensors"))


if __name__ == "__main__":
    main()
