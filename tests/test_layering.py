"""The layering rule, checked on the source: engine knows no torch/HTTP/PIL, nodes no HTTP, server no SVD."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "engine": ("torch", "aiohttp", "PIL", "av", "numpy", "safetensors", "vidgraph.nodes", "vidgraph.server"),
    "nodes": ("aiohttp", "vidgraph.server"),
    "server": ("torch", "safetensors", "vidgraph.nodes.svd", "vidgraph.nodes.ksampler", "vidgraph.nodes.loaders"),
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
