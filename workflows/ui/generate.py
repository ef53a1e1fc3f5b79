"""Write the UI-format (editor) versions of the bundled API workflows in this folder.

    .venv/bin/python workflows/ui/generate.py [--check]

Each `workflows/NAME.json` (API format) becomes `workflows/ui/NAME.json` through the engine's
`api_to_ui`, with the node titles kept, so the editor and ComfyUI's frontend open it with a
readable layout. `--check` writes nothing and exits 1 when a file here is missing or stale
(tests/svd_nodes/test_workflows.py runs the same comparison).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from vidgraph.engine.folders import Folders
from vidgraph.engine.registry import NodeRegistry
from vidgraph.engine.ui_export import api_to_ui

UI_DIR = Path(__file__).resolve().parent
API_DIR = UI_DIR.parent


def bundled_api_workflows() -> list[Path]:
    return sorted(API_DIR.glob("*.json"))


def render(api_path: Path, classes) -> str:
    prompt = json.loads(api_path.read_text(encoding="utf-8"))
    return json.dumps(api_to_ui(prompt, classes), indent=2) + "\n"


def node_classes():
    # Folders only matter for file-combo options, which api_to_ui does not write.
    registry = NodeRegistry(Folders(base_dir=UI_DIR / ".unused"))
    registry.load_module_pack("vidgraph.nodes")
    return registry.classes


def main(argv: list[str]) -> int:
    check = "--check" in argv
    classes = node_classes()
    stale = []
    for api_path in bundled_api_workflows():
        target = UI_DIR / api_path.name
        text = render(api_path, classes)
        if check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target}")
    if stale:
        print("stale UI workflows (run workflows/ui/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
