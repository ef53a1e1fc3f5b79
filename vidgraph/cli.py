"""The ``vidgraph`` command.

    vidgraph run WORKFLOW [WORKFLOW ...]   run workflows headless (API/UI JSON, or a PNG/WEBP/MP4)
    vidgraph nodes [--json]                list the registered nodes
    vidgraph serve [...]                   the HTTP/websocket server and editor (vidgraph.server.serve)
    vidgraph demo [...]                    a demo video on the tiny trained SVD (vidgraph.nodes.demo)
    vidgraph worker --queue URL [...]      run prompts from a Redis queue (vidgraph.server.redis_worker)

The runtime (folders, the built-in pack ``vidgraph.nodes`` loaded by name like any other pack,
executor settings) comes from `vidgraph.runtime`. ``serve`` and ``demo`` are owned by other
modules: a module with ``add_arguments(parser)`` gets ``main(namespace)``, one without gets
``main(argv_rest)``; both may reuse `vidgraph.runtime.add_runtime_options` / `build_runtime`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Sequence

from .runtime import UsageError, add_pack_options, add_runtime_options, build_runtime
# Commands whose implementation lives elsewhere: module, and what it does (for --help).
DELEGATED = {
    "serve": ("vidgraph.server.serve", "start the HTTP/websocket server and the editor"),
    "demo": ("vidgraph.nodes.demo", "make a demo video on the tiny trained SVD that ships with vidgraph (no downloads)"),
    "worker": ("vidgraph.server.redis_worker", "run prompts from a Redis queue (one per GPU; needs vidgraph[redis])"),
}
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_ABORTED = 130  # the shell's convention for SIGINT


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


def cmd_nodes(args: argparse.Namespace) -> int:
    runtime = build_runtime(args)
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
