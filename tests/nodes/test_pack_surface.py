"""ComfyUI's module surface for packs, through a small pack of our own (tests/fixtures_packs)."""
from pathlib import Path

import pytest
import torch

from vidgraph.engine.executor import Executor
from vidgraph.runtime import build_folders, build_registry

PACKS = Path(__file__).resolve().parents[1] / "fixtures_packs"


@pytest.fixture
def surface(tmp_path):
    folders = build_folders(tmp_path)
    folders.ensure_dirs()
    registry = build_registry(folders, ("vidgraph.nodes",), [PACKS], entry_points=False, report=None)
    assert not registry.load_errors, registry.load_errors
    return folders, registry


def test_the_pack_loads_with_its_web_directory(surface):
    folders, registry = surface
    assert {"SurfaceHalfSize", "SurfaceSamplers", "SurfacePreview", "SurfaceControlNet"} <= set(registry.classes)
    assert registry.web_directories["comfy_surface_pack"].name == "js"
    import comfy_surface_pack
    assert comfy_surface_pack.SURFACE_FACTS["root"] == str(folders.base_dir)
    assert ".png" in comfy_surface_pack.SURFACE_FACTS["folder_of_images"]


def test_a_save_image_subclass_runs_with_comfyui_helpers(surface):
    folders, registry = surface
    events = []
    image = torch.rand(1, 8, 12, 3)

    class Source:
        RETURN_TYPES = ("IMAGE",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def f(self):
            return (image,)

    registry.register("SurfaceSource", Source)
    prompt = {"1": {"class_type": "SurfaceSource", "inputs": {}},
              "2": {"class_type": "SurfaceHalfSize", "inputs": {"images": ["1", 0], "method": "area"}},
              "3": {"class_type": "SurfacePreview", "inputs": {"images": ["2", 0]}},
              "4": {"class_type": "SurfaceSamplers", "inputs": {"sampler": "euler", "scheduler": "karras",
                                                                "width": 64}},
              "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}}
    result = Executor(registry).run(prompt, on_event=lambda e, d: events.append((e, d)))
    assert result.status == "success", result.error
    (saved,) = result.outputs["2"]["images"]
    assert saved["subfolder"] == "surface" and saved["filename"].startswith("half_half_") and saved["type"] == "output"
    assert (folders.output_dir / "surface" / saved["filename"]).is_file()
    (preview,) = result.outputs["3"]["images"]
    assert preview["type"] == "temp" and (folders.temp_dir / preview["filename"]).is_file()
    assert [d["size"] for e, d in events if e == "surface.progress"] == [[1, 4, 6, 3]]
    assert [(d["value"], d["max"]) for e, d in events if e == "progress" and d["node"] == "2"] == [(1, 2), (2, 2)]
    assert result.outputs["5"]["text"] == ["euler/karras/64/3"]


def test_a_core_node_vidgraph_lacks_loads_and_says_why_when_run(surface):
    folders, registry = surface
    node = registry.classes["SurfaceControlNet"]()
    with pytest.raises(NotImplementedError, match="ControlNetApply.*vidgraph has no such node yet"):
        getattr(node, node.FUNCTION)()
    import nodes
    with pytest.raises(ImportError):
        from nodes import NoSuchCoreNode  # noqa: F401  (only ComfyUI's own names are answered)
    assert nodes.SaveImage is registry.classes["SaveImage"]
    # a core node vidgraph has: its own class (LoraLoader's face answers ComfyUI's plain tuple)
    assert issubclass(nodes.LoraLoader, registry.classes["LoraLoader"]) and nodes.LoraLoader is nodes.LoraLoader
    from comfy_extras.nodes_custom_sampler import BasicScheduler
    assert BasicScheduler is registry.classes.get("BasicScheduler", BasicScheduler)
    assert (BasicScheduler is registry.classes["BasicScheduler"]) == ("BasicScheduler" in registry.classes)
