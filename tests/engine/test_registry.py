import importlib.metadata
import json
import sys
import textwrap
import types

import pytest

from vidgraph.engine.executor import Executor
from vidgraph.engine.registry import NodeRegistry
from vidgraph.engine.spec import types_match

GOOD_PACK = '''
import nodes
import folder_paths

BUILTINS_AT_IMPORT = sorted(nodes.NODE_CLASS_MAPPINGS)
MODELS_DIR = folder_paths.models_dir

class Echo:
    CATEGORY = "test/echo"
    DESCRIPTION = "echo a string"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "go"
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi", "multiline": True})},
                "optional": {"mode": (["a", "b"],)},
                "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}}
    def go(self, text, mode="a", prompt=None, unique_id=None):
        return (f"{text}:{folder_paths.get_output_directory()}",)

NODE_CLASS_MAPPINGS = {"Echo": Echo}
NODE_DISPLAY_NAME_MAPPINGS = {"Echo": "Echo!"}
'''


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def base(tmp_path, folders):
    reg = NodeRegistry(folders)
    assert reg.load_module_pack("vidgraph.nodes.core")
    yield reg, tmp_path / "custom_nodes"
    for name in ("good", "broken", "clash", "pkg", "ok_after"):
        sys.modules.pop(name, None)


def test_custom_node_dir_loads_good_skips_broken_and_clash(base):
    reg, cn = base
    write(cn / "good.py", GOOD_PACK)
    write(cn / "broken.py", "raise ImportError('needs a missing library')\n")
    write(cn / "clash.py", """
        class Other:
            RETURN_TYPES = ("INT",)
            FUNCTION = "f"
            @classmethod
            def INPUT_TYPES(cls): return {}
            def f(self): return (1,)
        class Fresh(Other): pass
        NODE_CLASS_MAPPINGS = {"PrimitiveInt": Other, "Fresh": Fresh}
        """)
    write(cn / "old.py.disabled", "raise SystemExit('must not be imported')\n")
    write(cn / "ok_after.py", "NODE_CLASS_MAPPINGS = {}\n")
    reg.load_custom_node_dirs([cn])

    assert "Echo" in reg.classes and reg.display_names["Echo"] == "Echo!"
    reasons = {e.pack: e.reason for e in reg.load_errors}
    assert set(reasons) == {"broken", "clash"}
    assert "needs a missing library" in reasons["broken"]
    assert "PrimitiveInt" in reasons["clash"] and "vidgraph.nodes.core" in reasons["clash"]
    assert "Fresh" not in reg.classes  # a clashing pack is skipped as a whole
    assert "ok_after" in reg.loaded_packs
    good = sys.modules["good"]
    assert "PrimitiveInt" in good.BUILTINS_AT_IMPORT  # `import nodes` already held the built-ins
    assert good.MODELS_DIR == str(reg.folders.models_dir)


def test_pack_module_runs_and_folder_paths_follow_the_running_context(base, tmp_path):
    reg, cn = base
    write(cn / "good.py", GOOD_PACK)
    reg.load_custom_node_dirs([cn])
    import nodes
    assert nodes.NODE_CLASS_MAPPINGS is reg.classes  # the live dict
    prompt = {"1": {"class_type": "Echo", "inputs": {"text": "x"}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = Executor(reg).run(prompt)
    assert result.status == "success", result.error
    assert result.outputs["2"]["text"] == [f"x:{reg.folders.output_dir}"]


def test_package_with_web_directory_and_relative_import(base):
    reg, cn = base
    write(cn / "pkg" / "helpers.py", "SUFFIX = '!'\n")
    write(cn / "pkg" / "js" / "ext.js", "export {}\n")
    write(cn / "pkg" / "__init__.py", """
        from .helpers import SUFFIX
        class Loud:
            RETURN_TYPES = ("STRING",)
            FUNCTION = "f"
            @classmethod
            def INPUT_TYPES(cls): return {"required": {"s": ("STRING", {})}}
            def f(self, s): return (s + SUFFIX,)
        NODE_CLASS_MAPPINGS = {"Loud": Loud}
        WEB_DIRECTORY = "./js"
        """)
    reg.load_custom_node_dirs([cn])
    assert reg.load_errors == []
    assert reg.web_directories["pkg"] == (cn / "pkg" / "js").resolve()
    assert reg.object_info("Loud")["Loud"]["python_module"] == "custom_nodes.pkg"


def test_missing_dir_and_module_without_mappings_are_reported(base, tmp_path):
    reg, cn = base
    write(cn / "empty.py", "X = 1\n")
    reg.load_custom_node_dirs([cn, tmp_path / "nope"])
    reasons = {e.pack: e.reason for e in reg.load_errors}
    assert "NODE_CLASS_MAPPINGS" in reasons["empty"]
    assert reasons[str(tmp_path / "nope")] == "not a directory"
    sys.modules.pop("empty", None)


def test_invalid_node_class_is_reported(base):
    reg, _ = base

    class NoFunction:
        RETURN_TYPES = ()

        @classmethod
        def INPUT_TYPES(cls):
            return {}

    assert not reg.register_pack("bad", {"NoFunction": NoFunction})
    assert "FUNCTION" in reg.load_errors[-1].reason and "NoFunction" not in reg.classes


def test_entry_points(base, monkeypatch):
    reg, _ = base
    module = types.ModuleType("ep_pack")

    class Twice:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"n": ("INT", {})}}

        def f(self, n):
            return (2 * n,)

    module.NODE_CLASS_MAPPINGS = {"Twice": Twice}

    class EntryPoint:
        def __init__(self, name, value, loaded):
            self.name, self.value, self._loaded = name, value, loaded

        def load(self):
            if isinstance(self._loaded, Exception):
                raise self._loaded
            return self._loaded

    seen_groups = []

    def entry_points(group):
        seen_groups.append(group)
        return [EntryPoint("twice", "ep_pack", module),
                EntryPoint("dict_pack", "x:MAP", {"Half": Twice}),
                EntryPoint("bad", "bad_pack", ModuleNotFoundError("no module named bad_pack"))]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    reg.load_entry_points()
    assert seen_groups == ["vidgraph.nodes"]
    assert reg.classes["Twice"] is Twice and reg.classes["Half"] is Twice
    assert [(e.pack, "bad_pack" in e.reason) for e in reg.load_errors] == [("bad", True)]


def test_object_info_shape_and_json(registry):
    info = registry.object_info()
    json.dumps(info)  # serialisable as is
    entry = info["IntMath"]
    assert set(entry) >= {"input", "input_order", "output", "output_is_list", "output_name", "name",
                          "display_name", "description", "python_module", "category", "output_node"}
    assert entry["input_order"] == {"required": ["a", "b", "operation"]}
    assert entry["input"]["required"]["operation"][0][0] == "add"  # legacy combo: the list is the type
    assert entry["output"] == ["INT"] and entry["output_is_list"] == [False]
    assert entry["display_name"] == "Int Math" and entry["output_node"] is False
    switch = info["Switch"]
    assert switch["output"] == ["*"] and type(switch["output"][0]) is str  # AnyType serialised plainly
    assert info["PreviewAny"]["output_node"] is True
    assert registry.object_info("Number")["Number"]["input_order"]["hidden"] == ["unique_id"]
    assert registry.object_info("Nope") == {}


def test_types_match_rules():
    class Anything(str):
        def __ne__(self, other):
            return False

    assert types_match("IMAGE", "IMAGE")
    assert not types_match("IMAGE", "MASK")
    assert types_match("INT", "FLOAT,INT") and types_match("FLOAT,INT", "INT")
    assert types_match("VAE", "*") and types_match("*", "VAE")
    assert types_match("VAE", Anything("whatever")) and types_match(Anything("x"), "VAE")
    assert types_match("COMBO", ["a", "b"]) and not types_match("IMAGE", ["a", "b"])


def test_compat_progress_bar_and_interrupt_inside_a_node(folders):
    reg = NodeRegistry(folders)
    reg.load_module_pack("vidgraph.nodes.core")
    import comfy.model_management
    import comfy.utils

    class Legacy:
        RETURN_TYPES = ("INT",)
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"n": ("INT", {})}}

        def f(self, n):
            bar = comfy.utils.ProgressBar(n)
            for i in range(n):
                bar.update(1)
                comfy.model_management.throw_exception_if_processing_interrupted()
                if i == 1:
                    comfy.model_management.interrupt_current_processing()
            return (n,)

    reg.register("Legacy", Legacy)
    events = []
    result = Executor(reg).run({"1": {"class_type": "Legacy", "inputs": {"n": 5}},
                                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
                               on_event=lambda e, d: events.append((e, d)))
    assert result.status == "interrupted"
    assert [d["value"] for e, d in events if e == "progress"] == [1, 2]
    assert events[-1][0] == "execution_interrupted" and events[-1][1]["node_id"] == "1"
    assert not comfy.model_management.processing_interrupted()  # no node running now


def test_object_info_skips_a_node_whose_input_types_raises(registry):
    class Broken:
        RETURN_TYPES = ()
        FUNCTION = "f"

        @classmethod
        def INPUT_TYPES(cls):
            raise OSError("model folder unreadable")

        def f(self):
            return ()

    registry.register("Broken", Broken)
    info = registry.object_info()
    assert "Broken" not in info and "IntMath" in info


def test_load_module_pack_failure_is_reported(folders):
    reg = NodeRegistry(folders)
    assert not reg.load_module_pack("vidgraph_no_such_pack")
    assert reg.load_errors[0].pack == "vidgraph_no_such_pack"
    assert "ModuleNotFoundError" in reg.load_errors[0].reason


def test_folder_paths_compat_functions(folders, tmp_path):
    reg = NodeRegistry(folders)
    reg.load_module_pack("vidgraph.nodes.core")
    import folder_paths
    import nodes

    assert nodes.MAX_RESOLUTION == 16384
    (folders.models_dir / "vae").mkdir(parents=True)
    (folders.models_dir / "vae" / "v.safetensors").write_bytes(b"")
    assert folder_paths.get_filename_list("vae") == ["v.safetensors"]
    assert folder_paths.get_full_path("vae", "v.safetensors").endswith("v.safetensors")
    assert folder_paths.get_annotated_filepath("a.png [temp]") == str(folders.temp_dir / "a.png")
    assert folder_paths.get_input_directory() == str(folders.input_dir)
    full, name, counter, sub, _ = folder_paths.get_save_image_path("x/clip", folder_paths.get_output_directory())
    assert (name, counter, sub) == ("clip", 1, "x")
    folder_paths.add_model_folder_path("loras", str(tmp_path / "more_loras"))
    assert str(tmp_path / "more_loras") in folders.folder_names_and_paths["loras"][0]
    assert folder_paths.folder_names_and_paths is folders.folder_names_and_paths


def test_pack_named_like_an_imported_module_is_refused(base):
    reg, cn = base
    write(cn / "json.py", "NODE_CLASS_MAPPINGS = {}\n")
    write(cn / "nodes" / "__init__.py", "NODE_CLASS_MAPPINGS = {}\n")
    reg.load_custom_node_dirs([cn])
    assert {e.pack for e in reg.load_errors} == {"json", "nodes"}
    import json as json_module
    assert hasattr(json_module, "dumps")  # the standard library is untouched
