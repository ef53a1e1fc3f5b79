"""The layering rule, checked on the source: engine knows no torch/HTTP/PIL, nodes no HTTP, server no SVD,
the top-level package (runtime builder, CLI) loads node packs and the server by name only."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "engine": ("torch", "aiohttp", "PIL", "av", "numpy", "safetensors", "vidgraph.nodes", "vidgraph.server"),
    "nodes": ("aiohttp", "vidgraph.server"),
    "server": ("torch", "safetensors", "vidgraph.nodes.svd", "vidgraph.nodes.ksampler", "vidgraph.nodes.loaders"),
    "vidgraph": ("torch", "aiohttp", "PIL", "safetensors", "vidgraph.nodes", "vidgraph.server"),
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer):
    offences = []
    files = sorted((ROOT / layer).rglob("*.py"))
    assert files, f"no Python files found under {layer}/"
    for path in files:
        for module in imported_modules(path):
            for banned in FORBIDDEN[layer]:
                if module == banned or module.startswith(banned + "."):
                    offences.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offences, "layering broken:\n" + "\n".join(offences)


def test_model_files_import_only_the_weights_module_from_the_node_pack():
    """nodes/svd/ is the bottom layer under the node modules: from the rest of the pack it may
    use `nodes/weights.py` only (no node module, no cycle dodged with a lazy import)."""
    offences = []
    for path in sorted((ROOT / "nodes" / "svd").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module != "weights":
                offences.append(f"{path.relative_to(ROOT)} imports {'.' * node.level}{node.module or ''}")
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("vidgraph.nodes") \
                    and node.module not in ("vidgraph.nodes.weights",) and not node.module.startswith("vidgraph.nodes.svd"):
                offences.append(f"{path.relative_to(ROOT)} imports {node.module}")
    assert not offences, "model files reach up into the node pack:\n" + "\n".join(offences)
