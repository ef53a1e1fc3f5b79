"""The motion bench module (bench/motion.py), imported by file: bench/ is scripts, not a package."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "motion.py"


@pytest.fixture(scope="session")
def motion():
    # a venv set up before opencv joined the test extras: `./dev setup` installs it (CI always does)
    pytest.importorskip("cv2", reason="opencv-python-headless is not installed: run ./dev setup")
    name = "vidgraph_bench_motion"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules[name]
