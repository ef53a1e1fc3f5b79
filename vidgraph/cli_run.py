"""``vidgraph run``: load, override, validate and run workflows in one process, and report."""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from vidgraph.engine.executor import Executor
from vidgraph.engine.interrupt import InterruptFlag
from vidgraph.engine.jsontext import json_text
from vidgraph.engine.validation import id_order
from vidgraph.engine.workflow import WorkflowError, read_workflow

from .cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from .runtime import Runtime, build_runtime


@dataclass
class Override:
    node_id: str
    input_name: str
    value: Any


def parse_override(text: str) -> Override:
    """``NODE_ID.INPUT=VALUE``; VALUE is JSON when it parses (5, 2.5, true, ["4", 0]), else a string."""
    target, sep, raw = text.partition("=")
    node_id, dot, input_name = target.rpartition(".")
    if not sep or not dot or not node_id or not input_name:
        raise ValueError(f"--set {text!r}: expected NODE_ID.INPUT=VALUE, e.g. --set 3.seed=42")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return Override(node_id, input_name, value)


def apply_overrides(prompt: dict, overrides: list[Override]) -> None:
    for override in overrides:
        node = prompt.get(override.node_id)
        if not isinstance(node, dict):
            raise WorkflowError(f"--set {override.node_id}.{override.input_name}: the workflow has no node "
                                f"{override.node_id!r} (its nodes: {', '.join(sorted(prompt, key=id_order))})",
                                override.node_id)
        inputs = node.setdefault("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowError(f"node {override.node_id}: 'inputs' is not an object", override.node_id)
        inputs[override.input_name] = override.value


def cmd_run(args: argparse.Namespace) -> int:
    try:
        overrides = [parse_override(text) for text in args.overrides]
    except ValueError as exc:
        print(f"vidgraph run: {exc}", file=sys.stderr)
        return EXIT_INVALID
    runtime = build_runtime(args)
    executor = Executor(runtime.registry, runtime.folders, settings=runtime.settings)
    show_progress = not args.no_progress and sys.stderr.isatty()
    exit_code = EXIT_OK
    interrupt = InterruptFlag()
    with _interrupt_on_sigint(interrupt):
        for index, source in enumerate(args.workflows):
            # Nodes that print (packs do) write to stderr: with --json, stdout holds only the reports.
            with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
                report = run_one(executor, runtime, source, overrides, interrupt, show_progress)
            if args.json:
                print(json_text(report), flush=True)
            else:
                print_report(report, runtime)
            if report["invalid"]:
                exit_code = EXIT_INVALID
            elif report["status"] != "success" and exit_code == EXIT_OK:
                exit_code = EXIT_FAILED
            if report["status"] == "interrupted":
                break  # Ctrl-C stops the batch, not only the current workflow
            if interrupt.is_set() and index + 1 < len(args.workflows):
                # ... also when it came after the workflow's last interrupt check: the rest is skipped
                exit_code = exit_code or EXIT_FAILED
                break
    return exit_code


def run_one(executor: Executor, runtime: Runtime, source: str, overrides: list[Override],
            interrupt: InterruptFlag, show_progress: bool) -> dict:
    """One workflow: its `--json` line (RunResult's fields, plus `workflow` and `invalid`)."""
    prompt_id = str(uuid.uuid4())
    started = time.perf_counter()
    base = {"workflow": source, "prompt_id": prompt_id, "status": "error", "outputs": {},
            "executed": [], "cached": [], "error": None, "invalid": True}
    try:
        loaded = read_workflow(sys.stdin.buffer.read() if source == "-" else source, runtime.registry)
        apply_overrides(loaded.prompt, overrides)
    except WorkflowError as exc:
        return {**base, "error": exc.to_json(), "seconds": _since(started)}
    extra_data = {"extra_pnginfo": {"workflow": loaded.ui}} if loaded.ui else {}
    with ProgressBars(show_progress, loaded.prompt) as progress:
        result = executor.run(loaded.prompt, prompt_id=prompt_id, extra_data=extra_data,
                              on_event=progress.on_event, interrupt=interrupt)
    # The executor validates first; an invalid prompt comes back with the 400 body as its error.
    report = {**base, **result.to_json(), "workflow": source, "invalid": result.invalid,
              "seconds": _since(started)}
    validation = result.validation
    if validation is not None and validation.ok and validation.node_errors:
        report["node_errors"] = validation.node_errors  # outputs that were dropped, as ComfyUI's 200 reply
    return report


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


@contextmanager
def _interrupt_on_sigint(flag: InterruptFlag) -> Iterator[None]:
    """First Ctrl-C asks the running prompt to stop at its next check; a second one aborts."""
    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        print("\nvidgraph: interrupting (Ctrl-C again to abort)", file=sys.stderr)
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. called from a test thread): no handler
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class ProgressBars:
    """tqdm bars on stderr, one per node that reports progress; silent when disabled."""

    def __init__(self, enabled: bool, prompt: dict):
        self.enabled = enabled
        self.prompt = prompt
        self.bar = None
        self.bar_node = None

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc) -> None:
        self._close()

    def on_event(self, event: str, data: dict) -> None:
        if not self.enabled:
            return
        if event == "progress":
            node_id, total = data.get("node"), data.get("max") or 0
            if self.bar is None or self.bar_node != node_id:
                self._open(node_id, total)
            self.bar.total = total
            self.bar.n = data.get("value", 0)
            self.bar.refresh()
        elif event == "executing" and data.get("node") != self.bar_node:
            self._close()

    def _open(self, node_id: Any, total: int) -> None:
        from tqdm import tqdm
        self._close()
        class_type = (self.prompt.get(str(node_id)) or {}).get("class_type", "")
        self.bar = tqdm(total=total, desc=f"#{node_id} {class_type}", file=sys.stderr, leave=True)
        self.bar_node = node_id

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = self.bar_node = None


def print_report(report: dict, runtime: Runtime) -> None:
    """The human-readable summary: results on stdout, problems on stderr."""
    source, status, error = report["workflow"], report["status"], report["error"]
    if report["invalid"]:
        print(f"{source}: invalid workflow", file=sys.stderr)
        for line in describe_validation_error(error):
            print(f"  {line}", file=sys.stderr)
        return
    seconds = report.get("seconds")
    timing = f" in {seconds:.2f} s" if isinstance(seconds, (int, float)) else ""
    print(f"{source}: {status}{timing} ({len(report['executed'])} executed, {len(report['cached'])} cached)")
    if report.get("node_errors"):
        print(f"{source}: some outputs were skipped because their inputs are invalid:", file=sys.stderr)
        for line in describe_validation_error({"node_errors": report["node_errors"]})[1:]:
            print(f"  {line}", file=sys.stderr)
    for node_id, ui in (report.get("outputs") or {}).items():
        for path in output_files(ui, runtime):
            print(f"  #{node_id}: {path}")
        for text in (ui or {}).get("text", []) if isinstance(ui, dict) else []:
            print(f"  #{node_id}: {text}")
    if status == "error" and error:
        print(f"{source}: node #{error.get('node_id')} ({error.get('node_type')}) raised "
              f"{error.get('exception_type')}: {error.get('exception_message')}", file=sys.stderr)
        trace = error.get("traceback")
        if trace:
            print("".join(trace) if isinstance(trace, list) else str(trace), file=sys.stderr)
    elif status == "interrupted":
        print(f"{source}: interrupted", file=sys.stderr)


def describe_validation_error(body: dict | None) -> list[str]:
    """ComfyUI's 400 body as lines: the top error, then one line per input problem."""
    if not body:
        return ["(no details)"]
    top = body.get("error") or {}
    lines = [": ".join(part for part in (top.get("message"), top.get("details")) if part)]
    for node_id, entry in (body.get("node_errors") or {}).items():
        for err in entry.get("errors", []):
            name = (err.get("extra_info") or {}).get("input_name")
            where = f"node #{node_id} ({entry.get('class_type')})" + (f" input '{name}'" if name else "")
            detail = err.get("details")
            lines.append(f"{where}: {err.get('message')}" + (f" ({detail})" if detail and detail != name else ""))
    return lines


def output_files(ui: Any, runtime: Runtime) -> list[Path]:
    """Files named in an output node's ui dict ({"images": [{filename, subfolder, type}], ...})."""
    roots = {"output": runtime.folders.output_dir, "temp": runtime.folders.temp_dir,
             "input": runtime.folders.input_dir}
    paths = []
    for entries in (ui.values() if isinstance(ui, dict) else []):
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and "filename" in entry:
                root = roots.get(entry.get("type", "output"), runtime.folders.output_dir)
                paths.append(root / entry.get("subfolder", "") / entry["filename"])
    return paths
