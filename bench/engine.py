"""Executor overhead on big graphs of trivial nodes (issue 2 §8).

Shapes, each at 1,000 and 10,000 nodes:
  chain   PrimitiveInt -> IntMath -> IntMath -> ... -> PreviewAny
  fan-in  N/2 PrimitiveInt leaves summed pairwise by IntMath nodes down to one PreviewAny
          (wide and shallow: depth log2(N/2))
Phases: validation alone; first run (cold cache, validation included); unchanged re-run;
re-run after one widget changed (the first leaf's value, so everything downstream re-runs on a
chain, and one root-to-leaf path on the fan-in).

Run:  .venv/bin/python bench/engine.py [--repeat 3]
"""
from __future__ import annotations

import argparse
import copy
import os
import time

from vidgraph.engine.executor import Executor
from vidgraph.runtime import build_registry
from vidgraph.engine.validation import validate_prompt

TARGET_FIRST_US_PER_NODE_10K = 30.0
TARGET_UNCHANGED_1K_MS = 5.0
# ComfyUI 0.3.64 on this machine (issue 2): 500-node chain 5.2 s, 250 independent pairs 0.58 s.
COMFY_CHAIN_US_PER_NODE = 5.2e6 / 500
COMFY_PAIRS_US_PER_NODE = 0.58e6 / 500


def chain(n: int) -> dict:
    prompt = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "b": 1, "operation": "add"}}
    prompt[str(n - 1)] = {"class_type": "PreviewAny", "inputs": {"source": [str(n - 2), 0]}}
    return prompt


def fan_in(n: int) -> dict:
    """Leaves summed pairwise; about n nodes in all (n/2 leaves, n/2 - 1 adders, 1 preview)."""
    prompt = {}
    level = []
    for i in range(n // 2):
        prompt[str(i)] = {"class_type": "PrimitiveInt", "inputs": {"value": i}}
        level.append(str(i))
    next_id = n // 2
    while len(level) > 1:
        paired = []
        for j in range(0, len(level) - 1, 2):
            prompt[str(next_id)] = {"class_type": "IntMath",
                                    "inputs": {"a": [level[j], 0], "b": [level[j + 1], 0], "operation": "add"}}
            paired.append(str(next_id))
            next_id += 1
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    prompt[str(next_id)] = {"class_type": "PreviewAny", "inputs": {"source": [level[0], 0]}}
    return prompt


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(registry, prompt: dict, repeat: int) -> dict:
    n = len(prompt)
    quick = max(10, 5 * repeat)  # cheap phases: more tries, so the best is less at the mercy of load
    validation = timed(lambda: validate_prompt(registry, prompt), quick)

    first_times = []
    for _ in range(repeat):
        executor = Executor(registry)
        start = time.perf_counter()
        result = executor.run(prompt)
        first_times.append(time.perf_counter() - start)
        assert result.status == "success" and len(result.executed) == n, result.error
    first = min(first_times)

    unchanged = timed(lambda: executor.run(prompt), quick)
    assert not executor.run(prompt).executed

    changed_times = []
    for k in range(repeat):
        edited = copy.deepcopy(prompt)
        edited["0"]["inputs"]["value"] = 1000 + k
        start = time.perf_counter()
        result = executor.run(edited)
        changed_times.append(time.perf_counter() - start)
    return {"nodes": n, "validation": validation, "first": first, "unchanged": unchanged,
            "changed": min(changed_times), "changed_executed": len(result.executed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} at start (others' work inflates the figures)")
    registry = build_registry()
    rows = []
    for shape, build, comfy in (("chain", chain, COMFY_CHAIN_US_PER_NODE),
                                ("fan-in", fan_in, COMFY_PAIRS_US_PER_NODE)):
        for size in args.sizes:
            rows.append((shape, measure(registry, build(size), args.repeat), comfy))

    print(f"{'shape':7} {'nodes':>6} | {'validate':>9} {'first':>9} {'unchanged':>10} {'1 changed':>10}"
          f"  (us/node, best of {args.repeat}+) | re-executed | ComfyUI first us/node")
    for shape, m, comfy in rows:
        per = lambda t: f"{t / m['nodes'] * 1e6:9.2f}"
        print(f"{shape:7} {m['nodes']:6d} | {per(m['validation'])} {per(m['first'])} {per(m['unchanged']):>10}"
              f" {per(m['changed']):>10} | {m['changed_executed']:11d} | {comfy:9.0f}")
    print()
    for shape, m, comfy in rows:
        first_us = m["first"] / m["nodes"] * 1e6
        if m["nodes"] == 10000:
            print(f"target {shape} first run @10k: {first_us:.2f} us/node vs <= {TARGET_FIRST_US_PER_NODE_10K} "
                  f"-> ratio {first_us / TARGET_FIRST_US_PER_NODE_10K:.2f} "
                  f"({'met' if first_us <= TARGET_FIRST_US_PER_NODE_10K else 'MISSED'}); "
                  f"ComfyUI/vidgraph {comfy / first_us:.0f}x")
        if m["nodes"] == 1000:
            ms = m["unchanged"] * 1e3
            print(f"target {shape} unchanged re-run @1k: {ms:.2f} ms vs <= {TARGET_UNCHANGED_1K_MS} ms "
                  f"-> ratio {ms / TARGET_UNCHANGED_1K_MS:.2f} "
                  f"({'met' if ms <= TARGET_UNCHANGED_1K_MS else 'MISSED'})")


if __name__ == "__main__":
    main()
