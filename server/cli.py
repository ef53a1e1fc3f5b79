"""The ``vidgraph`` command.

    vidgraph run WORKFLOW [WORKFLOW ...]   run workflows headless (API/UI JSON, or a PNG/WEBP/MP4)
    vidgraph nodes [--json]                list the registered nodes
    vidgraph serve [...]                   the HTTP/websocket server and editor (vidgraph.server.serve)
    vidgraph demo [...]                    a demo video on a tiny random model (vidgraph.nodes.demo)

The CLI wires the parts together: it builds the folders, loads the built-in pack
``vidgraph.nodes`` through the registry like any other pack, then hands prompts to one Executor.
``serve`` and ``demo`` are owned by other modules: a module with ``add_arguments(parser)`` gets
``main(namespace)``, one without gets ``main(argv_rest)``; both may reuse `add_runtime_options` /
`make_runtime` from here.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from vidgraph.engine.folders import Folders
from vidgraph.engine.registry import NodeRegistry

BUILTIN_PACK = "vidgraph.nodes"
# Commands whose implementation lives elsewhere: module, and what it does (for --help).
DELEGATED = {
    "serve": ("vidgraph.server.serve", "start the HTTP/websocket server and the editor"),
    "demo": ("vidgraph.nodes.demo", "make a demo video on a tiny random-weight model (no downloads)"),
}
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_ABORTED = 130  # the shell's convention for SIGINT


class UsageError(Exception):
    """A bad command line or configuration file: reported in one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help(sys.stderr)
        return EXIT_INVALID
    try:
        if args.command == "nodes":
            return cmd_nodes(args)
        from .cli_run import cmd_run  # the executor is only imported when something runs
        return cmd_run(args)
    except UsageError as exc:
        print(f"vidgraph {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:  # a second Ctrl-C while a workflow runs
        print("vidgraph: aborted", file=sys.stderr)
        return EXIT_ABORTED


def _delegate(command: str, rest: list[str]) -> int:
    module_name = DELEGATED[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"vidgraph {command}: not available in this installation ({module_name} is missing)",
                  file=sys.stderr)
            return EXIT_FAILED
        raise
    if hasattr(module, "add_arguments"):  # the module declares its options; it gets a Namespace
        parser = argparse.ArgumentParser(prog=f"vidgraph {command}", description=DELEGATED[command][1])
        module.add_arguments(parser)
        result = module.main(parser.parse_args(rest))
    else:
        result = module.main(rest)
    return int(result or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidgraph", description="A ComfyUI-compatible node-graph engine "
                                     "for Stable Video Diffusion.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run workflows headless", description=(
        "Run workflows in the order given, in one process: they share the result cache and loaded "
        "models. Exit status: 0 all succeeded, 1 a workflow failed, or Ctrl-C interrupted one or "
        "skipped the rest, 2 a workflow was invalid."))
    run.add_argument("workflows", nargs="+", metavar="WORKFLOW",
                     help="API-format JSON, UI-format JSON, or a PNG/WEBP/MP4 with an embedded workflow "
                          "('-' reads one from stdin)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                     help="override an input in every workflow; VALUE is JSON when it parses, else a string")
    run.add_argument("--json", action="store_true",
                     help="print one JSON object per workflow on its own line (stdout)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars even on a terminal")
    add_runtime_options(run)

    nodes = commands.add_parser("nodes", help="list the registered nodes")
    nodes.add_argument("--json", action="store_true", help="the /object_info dict for every node")
    add_pack_options(nodes)

    for name, (_module, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)  # listed in --help; main() dispatches
    return parser


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


@dataclass
class Runtime:
    folders: Folders
    registry: NodeRegistry
    settings: dict


def make_runtime(args: argparse.Namespace, user_dir: str | None = None) -> Runtime:
    """Folders, a registry with the built-in pack, custom packs and entry-point packs, and the
    Executor settings. Packs that fail to load are reported on stderr and skipped."""
    folders = Folders(base_dir=args.base_dir, models_dir=args.models_dir, input_dir=getattr(args, "input_dir", None),
                      output_dir=getattr(args, "output_dir", None), temp_dir=getattr(args, "temp_dir", None),
                      user_dir=user_dir)
    default_yaml = folders.base_dir / "extra_model_paths.yaml"
    for yaml_path in ([default_yaml] if default_yaml.is_file() else []) + list(args.extra_model_paths):
        try:
            folders.load_extra_model_paths(yaml_path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise UsageError(f"cannot use extra model paths file {yaml_path}: {exc}") from None
    registry = NodeRegistry(folders)
    registry.load_module_pack(BUILTIN_PACK)
    registry.load_entry_points()
    registry.load_custom_node_dirs([Path(d) for d in args.custom_nodes])
    for problem in registry.load_errors:
        print(f"vidgraph: node pack {problem.pack!r} skipped: {problem.reason.rstrip()}", file=sys.stderr)
    return Runtime(folders, registry, executor_settings(args))


def executor_settings(args: argparse.Namespace) -> dict:
    return {
        "device": "cpu" if getattr(args, "cpu", False) else (getattr(args, "device", None) or "auto"),
        "dtype": getattr(args, "dtype", "auto"),
        "lowvram": bool(getattr(args, "lowvram", False)),
        "disable_metadata": bool(getattr(args, "disable_metadata", False)),
    }


def cmd_nodes(args: argparse.Namespace) -> int:
    runtime = make_runtime(args)
    info = runtime.registry.object_info()
    if args.json:
        json.dump(info, sys.stdout)
        sys.stdout.write("\n")
        return EXIT_OK
    width = max((len(name) for name in info), default=0)
    for name, entry in sorted(info.items(), key=lambda item: (item[1].get("category", ""), item[0])):
        outputs = ", ".join(map(str, entry.get("output") or [])) or "-"
        print(f"{name:<{width}}  {entry.get('category', '')}  -> {outputs}")
    print(f"{len(info)} nodes", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
