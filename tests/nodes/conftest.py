"""Fixtures for node tests: real Folders in a tmp dir and the engine's real NodeContext."""
import struct
import zlib

import pytest

from vidgraph.engine.context import NodeContext
from vidgraph.engine.folders import Folders
from vidgraph.engine.resources import ResourceCache


@pytest.fixture
def folders(tmp_path):
    f = Folders(base_dir=tmp_path)
    f.ensure_dirs()
    return f


@pytest.fixture
def make_context(folders):
    def make(class_type="Test", settings=None):
        return NodeContext("prompt-1", "1", class_type, folders, ResourceCache(), settings or {})
    return make


@pytest.fixture
def context(make_context):
    return make_context()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR claims width x height (8-bit RGB) with little or no pixel data: cheap
    to build, and a decoder that trusted it would allocate width * height * 3 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


@pytest.fixture
def header_only_png():
    """`png_header_only(width, height)` as a fixture, so tests need not import this conftest."""
    return png_header_only
