"""How much of each ComfyUI node pack vidgraph loads (the figures in docs/compatibility.md).

For each pack folder given: the nodes vidgraph registers from it and the first import error, and
the nodes the pack declares. The declared count comes from a second import, in a fresh process,
with every module vidgraph's compatibility layer and the environment lack replaced by a permissive
stand-in (so a pack that stops at an import can still be counted); "?" when even that fails.
Each measurement runs in its own process with its own base folder.

Run:  .venv/bin/python bench/packs.py /path/to/ComfyUI-VideoHelperSuite [...] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

LOAD = r"""
import json, pathlib, sys, tempfile
from vidgraph.runtime import build_folders, build_registry
pack = pathlib.Path(sys.argv[1])
folders = build_folders(tempfile.mkdtemp())
folders.ensure_dirs()
registry = build_registry(folders, ("vidgraph.nodes",), [], report=None)
registry.load_compat_faces("vidgraph.server.pack_server")
before = set(registry.classes)
registry.load_pack_path(pack)
loaded = sorted(set(registry.classes) - before)
errors = [e.reason.splitlines()[0] for e in registry.load_errors]
print("@@" + json.dumps({"loaded": loaded, "errors": errors}))
"""

COUNT = r"""
import importlib.abc, importlib.machinery, importlib.util, json, pathlib, sys, tempfile, types
from vidgraph.runtime import build_folders, build_registry
pack = pathlib.Path(sys.argv[1])
folders = build_folders(tempfile.mkdtemp())
folders.ensure_dirs()
registry = build_registry(folders, ("vidgraph.nodes",), [], report=None)

class StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return StubMeta(name, (Stub,), {})
    def __iter__(cls):
        return iter(())
    def __call__(cls, *args, **kwargs):
        return StubMeta(cls.__name__, (Stub,), {})
    def __getitem__(cls, key):
        return StubMeta("item", (Stub,), {})
    def __or__(cls, other):
        return cls
    __ror__ = __or__

class Stub(metaclass=StubMeta):
    pass

class StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return StubMeta(name, (Stub,), {})

class StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = StubModule(spec.name)
        module.__path__ = []
        return module
    def exec_module(self, module):
        pass

class StubFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, StubLoader(), is_package=True)

sys.meta_path.append(StubFinder())   # last: only what nothing else provides
for name, module in list(sys.modules.items()):   # faces: missing names resolve to stand-ins too
    if getattr(module, "__vidgraph_compat__", False) and not hasattr(module, "__getattr__"):
        module.__getattr__ = lambda attr, _name=name: StubMeta(attr, (Stub,), {})
sys.path.insert(0, str(pack))
spec = importlib.util.spec_from_file_location(pack.name, pack / "__init__.py", submodule_search_locations=[str(pack)])
module = importlib.util.module_from_spec(spec)
sys.modules[pack.name] = module
spec.loader.exec_module(module)
count = len(getattr(module, "NODE_CLASS_MAPPINGS", {}) or {})
print("@@" + json.dumps({"declared": count}))
"""


def run(script: str, pack: str) -> dict | None:
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run([sys.executable, "-c", script, pack], capture_output=True, text=True, cwd=cwd,
                              timeout=600)
    for line in done.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("packs", nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for pack in args.packs:
        loaded = run(LOAD, pack) or {"loaded": [], "errors": ["the loader process failed"]}
        declared = len(loaded["loaded"]) if loaded["loaded"] and not loaded["errors"] else \
            (run(COUNT, pack) or {}).get("declared")
        rows.append({"pack": pack.rstrip("/").rsplit("/", 1)[-1], "loaded": len(loaded["loaded"]),
                     "declared": declared, "error": loaded["errors"][0] if loaded["errors"] else ""})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for row in rows:
        declared = "?" if row["declared"] is None else row["declared"]
        print(f"{row['pack']:32} {row['loaded']:4} / {declared!s:4}  {row['error'][:110]}")
    total = sum(r["loaded"] for r in rows)
    print(f"{'all':32} {total:4} / {sum(r['declared'] or 0 for r in rows):4}")


if __name__ == "__main__":
    main()
