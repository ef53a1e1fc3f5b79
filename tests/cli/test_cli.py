"""`vidgraph run` / `vidgraph nodes`, in-process (main(argv)) and as a real subprocess."""
import io
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from vidgraph import cli
from vidgraph.cli_run import ProgressBars, parse_override

FIXTURES = Path(__file__).parents[1] / "engine" / "fixtures"

MATH = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
        "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 3, "operation": "multiply"}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}, "_meta": {"title": "product"}}}

PACK = textwrap.dedent('''
    import os, signal

    class SettingsProbe:
        OUTPUT_NODE = True
        RETURN_TYPES = ()
        FUNCTION = "probe"
        CATEGORY = "test"
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"tag": ("STRING", {"default": "x"})}, "hidden": {"context": "NODE_CONTEXT"}}
        def probe(self, tag, context):
            s = context.settings
            checkpoints = ",".join(context.folders.get_filename_list("checkpoints"))
            return {"ui": {"text": [f"{tag} {s['device']} {s['dtype']} {s['lowvram']} {context.folders.output_dir}",
                                    checkpoints]}, "result": ()}

    class Stepper:
        OUTPUT_NODE = True
        RETURN_TYPES = ()
        FUNCTION = "step"
        CATEGORY = "test"
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"steps": ("INT", {"default": 3, "min": 1, "max": 100}),
                                 "ctrl_c_at": ("INT", {"default": -1, "min": -1, "max": 100})},
                    "optional": {"presses": ("INT", {"default": 1, "min": 1, "max": 2})},
                    "hidden": {"context": "NODE_CONTEXT"}}
        def step(self, steps, ctrl_c_at, context, presses=1):
            for i in range(steps):
                if i == ctrl_c_at:
                    for _ in range(presses):
                        os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C does
                context.progress(i + 1, steps)
            return {"ui": {"text": [f"{steps} steps"]}, "result": ()}

    class LateCtrlC:
        """Ctrl-C while finishing, after the node's last interrupt check."""
        OUTPUT_NODE = True
        RETURN_TYPES = ()
        FUNCTION = "finish"
        CATEGORY = "test"
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}
        def finish(self):
            os.kill(os.getpid(), signal.SIGINT)
            return {"ui": {"text": ["done"]}, "result": ()}

    NODE_CLASS_MAPPINGS = {"SettingsProbe": SettingsProbe, "Stepper": Stepper, "LateCtrlC": LateCtrlC}
''')


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A working folder with a custom-node pack (plus a broken one) and workflow files."""
    monkeypatch.chdir(tmp_path)
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "probe_pack.py").write_text(PACK)
    (packs / "broken_pack.py").write_text("raise ImportError('needs a library that is not installed')\n")

    def write(name, data):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return str(path)

    return types.SimpleNamespace(root=tmp_path, packs=str(packs), write=write)


def run_json(capsys, *argv):
    code = cli.main(["run", *argv, "--json"])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


def test_success_line_has_the_documented_fields(env, capsys):
    code, lines, _ = run_json(capsys, env.write("math.json", MATH))
    assert code == 0 and len(lines) == 1
    line = lines[0]
    assert {"prompt_id", "status", "outputs", "executed", "cached", "error"} <= set(line)
    assert line["status"] == "success" and line["error"] is None
    assert line["outputs"] == {"3": {"text": ["15"]}}
    assert sorted(line["executed"]) == ["1", "2", "3"] and line["cached"] == []


def test_workflows_in_one_process_share_the_cache(env, capsys):
    path = env.write("math.json", MATH)
    changed = dict(MATH, **{"2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 4, "operation": "multiply"}}})
    code, lines, _ = run_json(capsys, path, path, env.write("changed.json", changed))
    assert code == 0
    assert lines[1]["executed"] == [] and sorted(lines[1]["cached"]) == ["1", "2", "3"]
    assert lines[1]["outputs"] == {"3": {"text": ["15"]}}
    assert sorted(lines[2]["executed"]) == ["2", "3"] and lines[2]["cached"] == ["1"]
    assert lines[2]["outputs"] == {"3": {"text": ["20"]}}
    assert len({line["prompt_id"] for line in lines}) == 3


def test_set_overrides_inputs_with_json_or_string_values(env, capsys):
    code, lines, _ = run_json(capsys, env.write("math.json", MATH), "--set", "1.value=7", "--set", "2.operation=add")
    assert code == 0 and lines[0]["outputs"]["3"]["text"] == ["10"]
    assert parse_override("12:5.text=hello world").__dict__ == {"node_id": "12:5", "input_name": "text",
                                                                  "value": "hello world"}
    assert parse_override('4.image=["1", 0]').value == ["1", 0]


@pytest.mark.parametrize("argv, message", [
    (["--set", "seed=5"], "expected NODE_ID.INPUT=VALUE"),
    (["--set", "9.value=1"], "has no node '9'"),
])
def test_bad_set_is_an_invalid_workflow(env, capsys, argv, message):
    code = cli.main(["run", env.write("math.json", MATH), *argv])
    assert code == 2 and message in capsys.readouterr().err


def test_invalid_workflow_exits_2_with_the_400_body(env, capsys):
    bad = dict(MATH, **{"2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 3, "operation": "root"}}})
    code, lines, _ = run_json(capsys, env.write("bad.json", bad), env.write("math.json", MATH))
    assert code == 2
    error = lines[0]["error"]
    assert lines[0]["status"] == "error" and lines[0]["executed"] == []
    assert error["error"]["type"] == "prompt_outputs_failed_validation"
    assert error["node_errors"]["2"]["errors"][0]["type"] == "value_not_in_list"
    assert lines[1]["status"] == "success"  # the next workflow still runs


def test_unknown_node_type_and_missing_file_are_invalid(env, capsys):
    unknown = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    code, lines, _ = run_json(capsys, env.write("unknown.json", unknown), str(env.root / "missing.json"))
    assert code == 2
    assert lines[0]["error"]["error"]["type"] == "invalid_prompt"
    assert "not found" in lines[1]["error"]["error"]["message"]


def test_every_json_line_has_every_documented_field(env, capsys):
    """Success, an invalid prompt and an unreadable file: one shape, so scripts need no special cases."""
    invalid = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    _, lines, _ = run_json(capsys, env.write("math.json", MATH), env.write("invalid.json", invalid),
                           str(env.root / "missing.json"))
    documented = {"workflow", "prompt_id", "status", "outputs", "executed", "cached", "error", "invalid", "seconds"}
    assert [set(line) for line in lines] == [documented] * 3
    assert [line["invalid"] for line in lines] == [False, True, True]
    assert all(isinstance(line["seconds"], float) for line in lines)


def test_failure_while_running_exits_1_and_names_the_node(env, capsys):
    failing = dict(MATH, **{"2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 0, "operation": "divide"}}})
    code, lines, _ = run_json(capsys, env.write("fail.json", failing))
    assert code == 1 and lines[0]["status"] == "error"
    assert lines[0]["error"]["node_id"] == "2" and lines[0]["error"]["exception_type"].endswith("ZeroDivisionError")
    code = cli.main(["run", env.write("fail.json", failing)])
    err = capsys.readouterr().err
    assert code == 1 and "node #2 (IntMath) raised" in err and "divide by zero" in err


def test_ui_format_and_png_embedded_workflows_run(env, capsys):
    ui = json.loads((FIXTURES / "core_math_ui.json").read_text())
    info = PngImagePlugin.PngInfo()
    info.add_text("workflow", json.dumps(ui))  # no "prompt": the graph itself is converted
    png = env.root / "result.png"
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    code, lines, _ = run_json(capsys, str(FIXTURES / "core_math_ui.json"), str(png), "--set", "3.b=4")
    assert code == 0
    assert lines[0]["outputs"] == {"4": {"text": ["20"]}}   # muted node 5 is not run
    assert lines[1]["executed"] == [] and lines[1]["outputs"] == {"4": {"text": ["20"]}}


def test_custom_nodes_folders_device_flags_and_a_broken_pack(env, capsys):
    for models, name in (("mine", "own.safetensors"), ("comfy/models", "shared.safetensors")):
        (env.root / models / "checkpoints").mkdir(parents=True)
        (env.root / models / "checkpoints" / name).write_bytes(b"")
    (env.root / "extra.yaml").write_text("comfyui:\n  base_path: comfy\n  checkpoints: models/checkpoints\n")
    wf = env.write("probe.json", {"1": {"class_type": "SettingsProbe", "inputs": {"tag": "hi"}}})
    code, lines, err = run_json(capsys, wf, "--custom-nodes", env.packs, "--cpu", "--lowvram", "--dtype", "bf16",
                                "--output-dir", str(env.root / "out"), "--models-dir", str(env.root / "mine"),
                                "--extra-model-paths", str(env.root / "extra.yaml"))
    assert code == 0
    assert lines[0]["outputs"]["1"]["text"] == [f"hi cpu bf16 True {env.root / 'out'}",
                                                "own.safetensors,shared.safetensors"]
    assert "broken_pack" in err and "needs a library" in err


def test_unreadable_extra_model_paths_is_a_usage_error(env, capsys):
    (env.root / "bad.yaml").write_text("comfyui: [unclosed\n")
    assert cli.main(["nodes", "--extra-model-paths", str(env.root / "bad.yaml")]) == 2
    assert "cannot use extra model paths file" in capsys.readouterr().err


def test_ctrl_c_interrupts_the_running_workflow_and_stops_the_batch(env, capsys):
    wf = env.write("steps.json", {"1": {"class_type": "Stepper", "inputs": {"steps": 5, "ctrl_c_at": 2}}})
    code, lines, _ = run_json(capsys, wf, env.write("math.json", MATH), "--custom-nodes", env.packs)
    assert code == 1 and len(lines) == 1 and lines[0]["status"] == "interrupted"


def test_ctrl_c_after_a_workflows_last_check_skips_the_rest_of_the_batch(env, capsys):
    """The flag the first Ctrl-C sets stops the batch even when no node checks it again, so a
    following (here: fully cached) workflow does not run as if nothing had been pressed."""
    math = env.write("math.json", MATH)
    late = env.write("late.json", {"1": {"class_type": "LateCtrlC", "inputs": {}}})
    code, lines, _ = run_json(capsys, math, late, math, "--custom-nodes", env.packs)
    assert code == 1 and [line["workflow"] for line in lines] == [math, late]
    assert [line["status"] for line in lines] == ["success", "success"]


def test_a_second_ctrl_c_aborts_at_once(env, capsys):
    wf = env.write("steps.json", {"1": {"class_type": "Stepper", "inputs": {"steps": 5, "ctrl_c_at": 1, "presses": 2}}})
    assert cli.main(["run", wf, "--custom-nodes", env.packs]) == 130
    assert "aborted" in capsys.readouterr().err


def test_progress_bars_follow_progress_events():
    stderr = io.StringIO()
    real, sys.stderr = sys.stderr, stderr
    try:
        with ProgressBars(True, {"5": {"class_type": "KSampler"}}) as bars:
            for i in range(1, 4):
                bars.on_event("progress", {"node": "5", "value": i, "max": 3, "prompt_id": "p"})
            bars.on_event("executing", {"node": None, "prompt_id": "p"})
    finally:
        sys.stderr = real
    assert "#5 KSampler" in stderr.getvalue() and "3/3" in stderr.getvalue()


def test_serve_and_demo_are_dispatched_with_the_rest_of_the_command_line(monkeypatch):
    calls = []
    serve = types.ModuleType("vidgraph.server.serve")  # declares its options: gets a Namespace
    serve.add_arguments = lambda parser: parser.add_argument("--port", type=int, default=8188)
    serve.main = lambda args: calls.append(("serve", args.port)) or 0
    demo = types.ModuleType("vidgraph.nodes.demo")     # no add_arguments: gets the raw argv
    demo.main = lambda argv: calls.append(("demo", argv)) or 3
    monkeypatch.setitem(sys.modules, "vidgraph.server.serve", serve)
    monkeypatch.setitem(sys.modules, "vidgraph.nodes.demo", demo)
    assert cli.main(["serve", "--port", "9000"]) == 0
    assert cli.main(["demo", "--cpu"]) == 3
    assert calls == [("serve", 9000), ("demo", ["--cpu"])]


def test_nodes_lists_object_info(env, capsys):
    assert cli.main(["nodes", "--json", "--custom-nodes", env.packs]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["IntMath"]["input_order"]["required"] == ["a", "b", "operation"]
    assert info["SettingsProbe"]["output_node"] is True
    assert cli.main(["nodes"]) == 0
    assert "PreviewAny" in capsys.readouterr().out


def test_subprocess_run(env):
    """The installed console script, as a user runs it: JSON lines on stdout, exit status 2."""
    script = Path(sys.executable).parent / "vidgraph"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vidgraph.cli"]
    math = env.write("math.json", MATH)
    bad = env.write("bad.json", dict(MATH, **{"1": {"class_type": "PrimitiveInt", "inputs": {"value": "five"}}}))
    done = subprocess.run([*command, "run", math, bad, "-", "--json"], capture_output=True, text=True, timeout=120,
                          input=json.dumps(dict(MATH, **{"1": {"class_type": "PrimitiveInt", "inputs": {"value": 2}}})))
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 2, done.stderr
    assert lines[0]["status"] == "success" and lines[0]["outputs"]["3"]["text"] == ["15"]
    assert lines[1]["error"]["node_errors"]["1"]["errors"][0]["type"] == "invalid_input_type"
    assert lines[2]["workflow"] == "-" and lines[2]["outputs"]["3"]["text"] == ["6"]  # read from stdin


def test_ui_workflow_is_embedded_in_outputs_and_the_output_runs_again(env, capsys):
    """run a UI-format file → the saved PNG carries prompt + workflow → running the PNG reproduces it."""
    ui = {"nodes": [
        {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
         "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "widgets_values": [8, 4, 1, 16711680]},
        {"id": 2, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 1}],
         "outputs": [], "widgets_values": ["roundtrip/red"]}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]], "groups": [], "version": 0.4}
    out = env.root / "out"
    code, lines, _ = run_json(capsys, env.write("ui.json", ui), "--output-dir", str(out))
    assert code == 0, lines
    saved = lines[0]["outputs"]["2"]["images"][0]
    png = out / saved["subfolder"] / saved["filename"]
    with Image.open(png) as image:
        assert image.size == (8, 4) and image.getpixel((0, 0)) == (255, 0, 0)
        assert json.loads(image.text["workflow"]) == ui
    code, lines, _ = run_json(capsys, str(png), "--output-dir", str(out))
    assert code == 0 and sorted(lines[0]["executed"]) == ["1", "2"]  # a new process: nothing cached
    assert lines[0]["outputs"]["2"]["images"][0]["filename"] != saved["filename"]  # never overwrites
    code, lines, _ = run_json(capsys, env.write("ui.json", ui), "--output-dir", str(out), "--disable-metadata")
    saved = lines[0]["outputs"]["2"]["images"][0]
    with Image.open(out / saved["subfolder"] / saved["filename"]) as image:
        assert code == 0 and "workflow" not in image.text and "prompt" not in image.text


def test_outputs_with_invalid_inputs_are_skipped_and_reported(env, capsys):
    partial = dict(MATH, **{"4": {"class_type": "PreviewAny", "inputs": {}}})  # a second output, missing its input
    code, lines, _ = run_json(capsys, env.write("partial.json", partial))
    assert code == 0 and lines[0]["outputs"] == {"3": {"text": ["15"]}}
    assert lines[0]["node_errors"]["4"]["errors"][0]["type"] == "required_input_missing"
    assert cli.main(["run", env.write("partial.json", partial)]) == 0
    assert "node #4 (PreviewAny) input 'source': Required input is missing" in capsys.readouterr().err


def test_json_lines_stay_valid_json_when_an_output_holds_nan(env, capsys):
    """A node's ui output with NaN must not make the --json line unparsable by strict JSON readers."""
    (Path(env.packs) / "nan_pack.py").write_text(
        "class NanOut:\n"
        "    RETURN_TYPES = ()\n    FUNCTION = 'run'\n    OUTPUT_NODE = True\n    CATEGORY = 't'\n"
        "    @classmethod\n    def INPUT_TYPES(cls):\n        return {'required': {}}\n"
        "    def run(self):\n        return {'ui': {'value': [float('nan'), 1.5]}}\n"
        "NODE_CLASS_MAPPINGS = {'NanOut': NanOut}\n")
    wf = env.write("nan.json", {"1": {"class_type": "NanOut", "inputs": {}}})
    code = cli.main(["run", wf, "--custom-nodes", env.packs, "--json"])
    out = capsys.readouterr().out

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    line = json.loads(out.strip().splitlines()[-1], parse_constant=refuse)
    assert code == 0 and line["outputs"]["1"]["value"] == [None, 1.5]
