"""`vidgraph serve`: options, the loud warning for exposed addresses, and running the app.

The CLI (server/cli.py) calls `add_arguments(parser)` to declare the options and `main(args)`
with the parsed namespace; `python -m vidgraph.server.serve ...` does the same on its own.
"""
from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from vidgraph.engine.folders import Folders

from .app import create_app
from .security import is_loopback, is_wildcard
from .state import ServerConfig

log = logging.getLogger("vidgraph.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else exposes "
                             "an unauthenticated server that runs workflows)")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--custom-nodes", dest="custom_nodes", action="append", default=[],
                        metavar="DIR", help="a folder of custom node packs (repeatable)")
    parser.add_argument("--no-builtin-nodes", action="store_true",
                        help="do not load vidgraph's own node pack")
    parser.add_argument("--base-dir", default=None,
                        help="folder holding models/, input/, output/, temp/, user/ (default: cwd)")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--input-dir", default=None)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--temp-dir", default=None)
    parser.add_argument("--user-dir", default=None,
                        help="holds the queue/history database and the editor's saved data")
    parser.add_argument("--extra-model-paths", default=None, metavar="YAML")
    parser.add_argument("--enable-cors-header", default=None, metavar="ORIGIN",
                        help="allow exactly this origin (e.g. https://my.host:8443) cross-site")
    parser.add_argument("--allow-host", dest="allow_host", action="append", default=[],
                        metavar="NAME", help="extra Host header name to accept (reverse proxies)")
    parser.add_argument("--max-upload-size", type=float, default=100, metavar="MB")
    parser.add_argument("--max-attempts", type=int, default=2,
                        help="runs of a prompt that keeps being cut off by crashes (default 2)")
    try:  # the CLI may already declare the device flags for every subcommand
        parser.add_argument("--cpu", action="store_true", help="run nodes on the CPU")
        parser.add_argument("--lowvram", action="store_true")
        parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"])
    except argparse.ArgumentError:
        pass
    parser.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    folders = Folders(base_dir=getattr(args, "base_dir", None), models_dir=args.models_dir,
                      input_dir=args.input_dir, output_dir=args.output_dir,
                      temp_dir=getattr(args, "temp_dir", None), user_dir=args.user_dir)
    if getattr(args, "extra_model_paths", None):
        folders.load_extra_model_paths(args.extra_model_paths)
    settings = {"device": "cpu" if getattr(args, "cpu", False) else "auto",
                "lowvram": bool(getattr(args, "lowvram", False)),
                "dtype": getattr(args, "dtype", None)}
    config = ServerConfig(
        folders=folders, host=args.host, port=args.port,
        node_packs=[] if getattr(args, "no_builtin_nodes", False) else ["vidgraph.nodes"],
        custom_node_dirs=list(args.custom_nodes or []),
        enable_cors_header=getattr(args, "enable_cors_header", None),
        allowed_hosts=set(getattr(args, "allow_host", []) or []), settings=settings,
        max_attempts=max(1, getattr(args, "max_attempts", 2)))
    config.limits.upload = int(getattr(args, "max_upload_size", 100) * 1024 * 1024)
    return config


def warn_if_exposed(host: str) -> None:
    if is_loopback(host):
        return
    where = "EVERY network interface" if is_wildcard(host) else host
    banner = "!" * 78
    log.warning("\n%s\n  vidgraph is listening on %s.\n  There is no authentication: anyone who "
                "can reach this port can run workflows,\n  read outputs and upload files. Bind "
                "to 127.0.0.1 unless this network is trusted.\n%s", banner, where, banner)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(args, "log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
        app = create_app(config)
    except ValueError as e:
        print(f"vidgraph serve: {e}", file=sys.stderr)
        return 2
    warn_if_exposed(config.host)
    host = None if is_wildcard(config.host) else config.host.strip("[]")
    print(f"vidgraph serving on http://{config.host}:{config.port}", flush=True)
    web.run_app(app, host=host, port=config.port, print=None, access_log=None,
                handle_signals=True, shutdown_timeout=5)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="vidgraph serve")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
