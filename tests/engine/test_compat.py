"""ComfyUI's module API for packs: comfy_types, comfy_api, comfy_execution, folder_paths, the seam."""
from __future__ import annotations

import sys
import textwrap

from vidgraph.engine.executor import Executor
from vidgraph.engine.registry import NodeRegistry


def test_comfy_types_io_matches_like_comfyui(registry):
    from comfy.comfy_types import IO, ComfyNodeABC, InputTypeDict  # noqa: F401
    from comfy.comfy_types.node_typing import IO as same

    assert same is IO
    assert not (IO.ANY != "IMAGE") and not (IO.IMAGE != "*")
    assert IO.IMAGE != "MASK" and not (IO.NUMBER != "INT") and not (IO.IMAGE != "IMAGE")
    assert str(IO.FLOAT) == "FLOAT" and IO.FLOAT == "FLOAT"


def test_comfy_api_progress_and_a_pack_of_v1_nodes_using_it(folders, tmp_path):
    pack = tmp_path / "custom_nodes"
    pack.mkdir()
    (pack / "api_pack.py").write_text(textwrap.dedent('''
        import asyncio
        from comfy.comfy_types import IO, ComfyNodeABC
        from comfy_api.latest import ComfyAPI, ComfyAPISync
        from comfy_execution.graph import ExecutionBlocker
        from comfy_execution.graph_utils import GraphBuilder

        api, api_sync = ComfyAPI(), ComfyAPISync()

        class Steps(ComfyNodeABC):
            RETURN_TYPES = (IO.INT,)
            FUNCTION = "run"
            CATEGORY = "test"

            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"n": (IO.INT, {"default": 2})}}

            async def run(self, n):
                for i in range(n):
                    await api.execution.set_progress(value=i + 1, max_value=n)
                api_sync.execution.set_progress(value=n, max_value=n)
                return (n,)

        NODE_CLASS_MAPPINGS = {"Steps": Steps}
    '''))
    registry = NodeRegistry(folders)
    registry.load_module_pack("vidgraph.nodes.core")
    registry.load_custom_node_dirs([pack])
    assert not registry.load_errors, registry.load_errors
    events = []
    result = Executor(registry).run({"1": {"class_type": "Steps", "inputs": {"n": 3}},
                                     "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
                                    on_event=lambda e, d: events.append((e, d)))
    assert result.status == "success", result.error
    assert [(d["value"], d["max"], d["node"]) for e, d in events if e == "progress"] == [
        (1, 3, "1"), (2, 3, "1"), (3, 3, "1"), (3, 3, "1")]


def test_face_modules_have_files_under_the_base_folder(registry, folders):
    import comfy.utils
    import folder_paths

    assert folder_paths.__file__ == str(folders.base_dir / "folder_paths.py")
    assert comfy.utils.__file__ == str(folders.base_dir / "comfy" / "utils.py")
    assert sys.modules["comfy"].__file__ == str(folders.base_dir / "comfy" / "__init__.py")


def test_other_layers_fill_modules_through_the_seam(folders):
    registry = NodeRegistry(folders)
    registry.load_module_pack("vidgraph.nodes.core")

    def samplers(module, reg):
        module.KSAMPLER_NAMES = ["euler"]
        module.registry = reg

    registry.add_compat_faces({"comfy.samplers": samplers})
    import comfy
    import comfy.samplers

    assert comfy.samplers.KSAMPLER_NAMES == ["euler"] and comfy.samplers is sys.modules["comfy.samplers"]
    assert getattr(comfy, "samplers") is comfy.samplers
    # a new registry installs its faces afresh, contributions included
    again = NodeRegistry(folders)
    again.add_compat_faces({"comfy.samplers": samplers})
    again.load_module_pack("vidgraph.nodes.core")
    assert sys.modules["comfy.samplers"].KSAMPLER_NAMES == ["euler"]
    assert sys.modules["comfy.samplers"].registry is again and comfy.samplers.registry is registry


def test_folder_paths_in_full(registry, folders):
    import folder_paths

    (folders.input_dir / "clips" / "a").mkdir(parents=True)
    assert folder_paths.get_input_subfolders() == ["clips", "clips/a"]
    assert folder_paths.filter_files_extensions(["a.PNG", "b.txt"], [".png"]) == ["a.PNG"]
    assert folder_paths.filter_files_content_types(["a.png", "b.mp4", "c.txt"], ["video"]) == ["b.mp4"]
    assert folder_paths.annotated_filepath("x.png [output]") == ("x.png", str(folders.output_dir))
    assert folder_paths.get_directory_by_type("temp") == str(folders.temp_dir)
    assert folder_paths.map_legacy("unet") == "diffusion_models"
    files, dirs = folder_paths.recursive_search(str(folders.input_dir))
    assert files == [] and str(folders.input_dir / "clips") in dirs
