"""The runtime every entry point builds the same way: folders, a node registry, executor settings.

`vidgraph run`, `vidgraph serve`, the demo, the server's app factory and the tests all call
`build_registry` / `build_runtime` here, so a pack, a folder or a setting means the same thing
everywhere. Only the engine is imported: node packs are loaded by module name, like a third
party's (the built-in one is `vidgraph.nodes`).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import yaml

from vidgraph.engine.folders import Folders
from vidgraph.engine.registry import NodeRegistry

BUILTIN_PACK = "vidgraph.nodes"
SERVER_FACES = "vidgraph.server.pack_server"   # loaded by name, like the packs


class UsageError(Exception):
    """A bad command line or configuration file: reported in one line, exit status 2."""


@dataclass
class Runtime:
    folders: Folders
    registry: NodeRegistry
    settings: dict


def print_pack_error(message: str) -> None:
    print(f"vidgraph: {message}", file=sys.stderr)


def build_folders(base_dir=None, models_dir=None, input_dir=None, output_dir=None, temp_dir=None,
                  user_dir=None, extra_model_paths: Iterable = ()) -> Folders:
    """Folders, with BASE_DIR/extra_model_paths.yaml (when present) and `extra_model_paths` read."""
    folders = Folders(base_dir=base_dir, models_dir=models_dir, input_dir=input_dir, output_dir=output_dir,
                      temp_dir=temp_dir, user_dir=user_dir)
    default_yaml = folders.base_dir / "extra_model_paths.yaml"
    for yaml_path in ([default_yaml] if default_yaml.is_file() else []) + list(extra_model_paths):
        try:
            folders.load_extra_model_paths(yaml_path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot use extra model paths file {yaml_path}: {exc}") from None
    return folders


def build_registry(folders: Folders | None = None, node_packs: Sequence[str] = (BUILTIN_PACK,),
                   custom_node_dirs: Iterable = (), entry_points: bool = True,
                   report: Callable[[str], None] | None = print_pack_error) -> NodeRegistry:
    """A registry with the module packs `node_packs`, installed entry-point packs (when
    `entry_points`), then the packs in `custom_node_dirs`. A pack that fails to load is skipped
    and described to `report` (None: only kept in `registry.load_errors`)."""
    registry = NodeRegistry(folders)
    registry.load_compat_faces(SERVER_FACES)   # `server.web` for packs, with or without a server
    for module_name in node_packs:
        registry.load_module_pack(module_name)
    if entry_points:
        registry.load_entry_points()
    registry.load_custom_node_dirs([Path(d) for d in custom_node_dirs])
    if report is not None:
        for problem in registry.load_errors:
            report(f"node pack {problem.pack!r} skipped: {problem.reason.rstrip()}")
    return registry


def executor_settings(cpu: bool = False, device: str | None = None, dtype: str = "auto", lowvram: bool = False,
                      disable_metadata: bool = False) -> dict:
    """The Executor's settings (docs/ARCHITECTURE.md, "command line")."""
    return {"device": "cpu" if cpu else (device or "auto"), "dtype": dtype or "auto",
            "lowvram": bool(lowvram), "disable_metadata": bool(disable_metadata)}


def add_pack_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--custom-nodes", action="append", default=[], metavar="DIR",
                        help="a folder of node packs (.py modules or packages); repeatable")
    parser.add_argument("--models-dir", metavar="DIR", help="model folders root (default BASE_DIR/models)")
    parser.add_argument("--base-dir", metavar="DIR",
                        help="folder holding models/, input/, output/, temp/ (default: the current folder)")
    parser.add_argument("--extra-model-paths", "--extra-model-paths-config", dest="extra_model_paths",
                        action="append", default=[], metavar="YAML",
                        help="ComfyUI's extra_model_paths.yaml (repeatable); BASE_DIR/extra_model_paths.yaml "
                             "is read when present")


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Folder, pack and device options shared by `run` and `serve`."""
    add_pack_options(parser)
    parser.add_argument("--input-dir", metavar="DIR", help="where LoadImage and friends read (default BASE_DIR/input)")
    parser.add_argument("--output-dir", metavar="DIR", help="where outputs are written (default BASE_DIR/output)")
    parser.add_argument("--temp-dir", metavar="DIR", help="previews and temporary files (default BASE_DIR/temp)")
    device = parser.add_argument_group("device")
    device.add_argument("--cpu", action="store_true", help="run everything on the CPU")
    device.add_argument("--device", default=None, metavar="DEV", help="torch device, e.g. cuda:1 (default: auto)")
    device.add_argument("--lowvram", action="store_true",
                        help="keep sub-models on the CPU and move each to the GPU only while it runs")
    device.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="UNet compute dtype (default auto)")
    parser.add_argument("--disable-metadata", action="store_true",
                        help="do not embed the workflow in saved images and videos")


def build_runtime(args: argparse.Namespace, user_dir: str | None = None, builtin_nodes: bool = True) -> Runtime:
    """The runtime a command line asks for (the options of `add_runtime_options` or
    `add_pack_options`). Without `builtin_nodes` only the --custom-nodes packs load."""
    folders = build_folders(args.base_dir, args.models_dir, getattr(args, "input_dir", None),
                            getattr(args, "output_dir", None), getattr(args, "temp_dir", None), user_dir,
                            args.extra_model_paths)
    folders.input_dir.mkdir(parents=True, exist_ok=True)   # packs list it while they load, as `serve` has it
    registry = build_registry(folders, (BUILTIN_PACK,) if builtin_nodes else (), args.custom_nodes,
                              entry_points=builtin_nodes)
    settings = executor_settings(getattr(args, "cpu", False), getattr(args, "device", None),
                                 getattr(args, "dtype", "auto"), getattr(args, "lowvram", False),
                                 getattr(args, "disable_metadata", False))
    return Runtime(folders, registry, settings)
