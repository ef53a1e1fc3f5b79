"""`vidgraph serve`: options, the loud warning for exposed addresses, and running the app.

The CLI (vidgraph/cli.py) calls `add_arguments(parser)` to declare the options and `main(args)`
with the parsed namespace; `python -m vidgraph.server.serve ...` does the same on its own.
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import sys
from pathlib import Path

from aiohttp import web

from vidgraph.engine.registry import NodeRegistry
from vidgraph.runtime import UsageError, add_runtime_options, build_runtime

from .app import create_app
from .security import is_loopback, is_wildcard
from .state import ServerConfig

log = logging.getLogger("vidgraph.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_runtime_options(parser)  # folders, packs and device flags, shared with `vidgraph run`
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else exposes "
                             "an unauthenticated server that runs workflows)")
    server.add_argument("--port", type=int, default=8188)
    server.add_argument("--user-dir", default=None, metavar="DIR",
                        help="holds the queue/history database and the editor's saved data "
                             "(default BASE_DIR/user)")
    server.add_argument("--enable-cors-header", default=None, metavar="ORIGIN",
                        help="allow exactly this origin (e.g. https://my.host:8443) cross-site")
    server.add_argument("--allow-host", dest="allow_host", action="append", default=[],
                        metavar="NAME", help="extra Host header name to accept (reverse proxies)")
    server.add_argument("--max-upload-size", type=float, default=100, metavar="MB")
    server.add_argument("--max-attempts", type=int, default=2,
                        help="runs of a prompt that keeps being cut off by crashes (default 2)")
    server.add_argument("--max-queue", type=int, default=10_000, metavar="N",
                        help="pending prompts at most; one more is refused with 429 (default 10000)")
    server.add_argument("--queue", default=None, metavar="URL",
                        help="redis://[:PASSWORD@]HOST:PORT/DB: put prompts on Redis Streams for "
                             "`vidgraph worker` processes instead of running them here "
                             "(needs vidgraph[redis])")
    server.add_argument("--no-builtin-nodes", action="store_true",
                        help="load only --custom-nodes packs (tests and benchmarks)")
    server.add_argument("--show", action="append", default=[], metavar="OUTPUT",
                        help="open the editor on this output file's embedded workflow with the file as its "
                             "result; a saver's filename prefix (vidgraph/demo) means its newest files (repeatable)")
    server.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace) -> tuple[ServerConfig, NodeRegistry]:
    runtime = build_runtime(args, user_dir=args.user_dir, builtin_nodes=not args.no_builtin_nodes)
    config = ServerConfig(
        folders=runtime.folders, host=args.host, port=args.port, node_packs=[],
        custom_node_dirs=list(args.custom_nodes), enable_cors_header=args.enable_cors_header,
        allowed_hosts=set(args.allow_host), settings=runtime.settings,
        max_attempts=max(1, args.max_attempts), queue_url=args.queue, show=list(args.show))
    config.limits.upload = int(args.max_upload_size * 1024 * 1024)
    config.limits.max_queue = max(1, args.max_queue)
    return config, runtime.registry


def lock_user_dir(user_dir: Path):
    """One server per user dir: two workers on one queue would each re-queue the other's
    running prompt at start-up. The OS drops the lock when the process dies, kill -9 included."""
    user_dir.mkdir(parents=True, exist_ok=True)
    handle = open(user_dir / "vidgraph-server.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError(f"another vidgraph server is using {user_dir} (its queue and history); "
                         "stop it or pass another --user-dir") from None
    return handle


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
        config, registry = config_from_args(args)
        if config.queue_url:
            try:
                from .queue_redis import unreachable
            except ImportError as e:
                raise UsageError(f"--queue needs the redis package ({e}): "
                                 "pip install 'vidgraph[redis]'") from None
            problem = unreachable(config.queue_url)
            if problem:
                raise UsageError(problem)
        lock = lock_user_dir(Path(config.folders.user_dir))
        app = create_app(config, registry=registry)
    except (ValueError, UsageError) as e:
        print(f"vidgraph serve: {e}", file=sys.stderr)
        return 2
    warn_if_exposed(config.host)
    host = None if is_wildcard(config.host) else config.host.strip("[]")
    print(f"vidgraph serving on http://{config.host}:{config.port}", flush=True)
    try:
        web.run_app(app, host=host, port=config.port, print=None, access_log=None,
                    handle_signals=True, shutdown_timeout=5)
    finally:
        lock.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="vidgraph serve")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
