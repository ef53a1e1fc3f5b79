"""The motion bench's modules (bench/motion.py and bench/motion_metrics.py), imported from bench/:
bench/ is scripts, not a package."""
import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str):
    # a venv set up before opencv joined the test extras: `./dev setup` installs it (CI always does)
    pytest.importorskip("cv2", reason="opencv-python-headless is not installed: run ./dev setup")
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(scope="session")
def motion():
    """bench/motion.py: the runner and its report."""
    return bench_module("motion")


@pytest.fixture(scope="session")
def metrics():
    """bench/motion_metrics.py: the yardstick's measurements on frames."""
    return bench_module("motion_metrics")


@pytest.fixture(scope="session")
def drift_bench():
    """bench/long_clip_drift.py: long clips made through the real nodes, and their drift and objects."""
    return bench_module("long_clip_drift")
