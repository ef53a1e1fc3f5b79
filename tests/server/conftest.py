"""Fixtures for the server tests (the harness itself is in server_harness.py)."""
import os

import pytest
from PIL import Image

from server_harness import PACK_DIR, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)
    assert running.unexpected_errors == 0, "a request reached the last-resort error handler"


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    """Core nodes, LoadImage, the test pack, two broken packs, symlinks to /etc, an .html output."""
    base = tmp_path_factory.mktemp("bad")
    broken = base / "broken_packs"
    broken.mkdir()
    (broken / "raises_at_import.py").write_text("raise RuntimeError('pack is broken')\n")
    (broken / "duplicate_name.py").write_text(
        "class X:\n    RETURN_TYPES = ()\n    FUNCTION = 'f'\n    OUTPUT_NODE = True\n"
        "    @classmethod\n    def INPUT_TYPES(cls): return {'required': {}}\n"
        "NODE_CLASS_MAPPINGS = {'TestSlow': X}\n")
    running = start_server(base, node_packs=["vidgraph.nodes.core", "vidgraph.nodes.images"],
                           custom_node_dirs=[str(PACK_DIR), str(broken)])
    (base / "input").mkdir(exist_ok=True)
    Image.new("RGB", (4, 4)).save(base / "input" / "ok.png")
    os.symlink("/etc", base / "input" / "etc_link")
    os.symlink("/etc", base / "output" / "etc_link")
    (base / "output" / "evil.html").write_text("<script>alert(1)</script>")
    (base / "output" / "evil.svg").write_text("<svg onload=alert(1)></svg>")
    yield running
    stop_server(running)
    assert running.unexpected_errors == 0, "a request reached the last-resort error handler"
