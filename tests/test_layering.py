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


def _pack_imports(path: Path) -> tuple[set[str], bool]:
    """(modules of the node pack that `path` imports, as paths relative to nodes/ without .py;
    whether one of those imports sits inside a function or class)."""
    package = list(path.parent.relative_to(ROOT / "nodes").parts)
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    found, lazy = set(), False
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
        elif node.module == "vidgraph.nodes" or (node.module or "").startswith("vidgraph.nodes."):
            base = node.module.split(".")[2:]
        else:
            continue
        hits = {"/".join(candidate) for candidate in [base] + [base + [alias.name] for alias in node.names]
                if candidate and ((ROOT / "nodes" / ("/".join(candidate) + ".py")).is_file()
                                  or (ROOT / "nodes" / "/".join(candidate) / "__init__.py").is_file())}
        found |= hits
        lazy = lazy or (bool(hits) and id(node) not in top_level)
    return found, lazy


def _is_node_module(path: Path) -> bool:
    tree = ast.parse(path.read_text(), str(path))
    return any(isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODE_CLASS_MAPPINGS" for t in node.targets)
               for node in tree.body) and path.name != "__init__.py"


def test_model_files_sit_below_the_node_modules():
    """nodes/svd/ (the models) may use the pack's bottom layer (weights, model, model_sampling, ...)
    but never reach a node module, directly or through another module, nor import lazily to dodge
    a cycle."""
    nodes = ROOT / "nodes"
    graph = {str(p.relative_to(nodes).with_suffix("")): _pack_imports(p) for p in nodes.rglob("*.py")}
    node_modules = {str(p.relative_to(nodes).with_suffix("")) for p in nodes.rglob("*.py") if _is_node_module(p)}
    offences = []
    for name, (imports, lazy) in sorted(graph.items()):
        if not name.startswith("svd/"):
            continue
        if lazy:
            offences.append(f"nodes/{name}.py imports from the pack inside a function")
        seen, todo = set(), list(imports)
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            if current in node_modules:
                offences.append(f"nodes/{name}.py reaches the node module nodes/{current}.py")
            todo.extend(graph.get(current, (set(), False))[0])
    assert node_modules, "no node modules found: the check would pass vacuously"
    assert not offences, "model files reach up into the node modules:\n" + "\n".join(sorted(set(offences)))


def test_node_modules_do_not_import_each_other():
    """Node modules are peers: what two of them share lives in a helper module named for it
    (resizing, vae_coding, sampling_run, image_conditioning, ...), never inside the first node
    module that needed it. The pack's __init__ gathers them by name and is not one of them."""
    nodes = ROOT / "nodes"
    node_modules = {str(p.relative_to(nodes).with_suffix("")) for p in nodes.rglob("*.py") if _is_node_module(p)}
    offences = [f"nodes/{name}.py imports the node module nodes/{other}.py"
                for name in sorted(node_modules)
                for other in sorted(_pack_imports(nodes / f"{name}.py")[0] & node_modules) if other != name]
    assert len(node_modules) > 5, "too few node modules found: the check would pass vacuously"
    assert not offences, "node modules import each other:\n" + "\n".join(offences)
