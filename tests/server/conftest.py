"""Fixtures for the server tests (the harness itself is in server_harness.py)."""
import pytest

from server_harness import start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)
    assert running.unexpected_errors == 0, "a request reached the last-resort error handler"

