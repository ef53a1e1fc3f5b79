"""IMAGE batches kept in a file: a long clip goes from the VAE to the encoder a chunk at a time.

An IMAGE is ComfyUI's float32 [frames, H, W, C] tensor in 0..1. A clip whose frames would take
more memory than `stream_threshold(settings)` travels as a FrameStream instead: frames in a raw
file in the temp folder (`FrameFile`, written by VAEDecode as it decodes) or in a video file
decoded on the fly (`VideoFileFrames`, from LoadVideo). Nodes that read a clip in order declare
their IMAGE input with `{"stream": True}` and take either form through `frame_chunks`; every other
node, ComfyUI packs included, gets a plain tensor, because the executor materialises deferred
values (`vidgraph_materialize()`) for inputs that do not declare it. So memory stays flat from the
decoder to the saved file however long the clip is, and nothing else has to know.
"""
from __future__ import annotations

import os
import secrets
import tempfile
import weakref
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .common import check_fits_in_memory
from .image_io import check_image_batch

# Frames read at once from a stream: enough to keep encoders busy, small beside a model.
CHUNK_BYTES = 32 << 20
# Decoded clips larger than this go to a file; `settings["stream_frames_over_mb"]` overrides it.
# 256 MB keeps short clips (SVD-XT's 25 frames at 1024 x 576 are 177 MB) in memory, as ComfyUI has them.
DEFAULT_STREAM_THRESHOLD = 256 << 20


def stream_threshold(settings) -> float:
    """Bytes of frames above which a node writes its IMAGE output to a file rather than memory."""
    value = (settings or {}).get("stream_frames_over_mb")
    return DEFAULT_STREAM_THRESHOLD if value is None else float(value) * (1 << 20)


class FrameStream:
    """Frames [T,H,W,C] float32 in 0..1 that are read in order, a chunk at a time.

    Subclasses give `shape` and `_read(frames_per_chunk)`; the executor turns a stream into a
    tensor (`vidgraph_materialize`) for any input that does not declare `"stream": True`.
    """

    shape: tuple[int, int, int, int]
    dtype = torch.float32

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def frame_bytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.shape[3] * 4

    def chunk_frames(self) -> int:
        return max(1, CHUNK_BYTES // self.frame_bytes)

    def chunks(self, frames_per_chunk: int | None = None) -> Iterator[torch.Tensor]:
        """[n,H,W,C] float32 tensors in order, n <= frames_per_chunk, T frames in all."""
        return self._read(frames_per_chunk or self.chunk_frames())

    def _read(self, frames_per_chunk: int) -> Iterator[torch.Tensor]:
        raise NotImplementedError

    def vidgraph_materialize(self) -> torch.Tensor:
        check_fits_in_memory(self.shape, "IMAGE", "images")
        out = torch.empty(self.shape, dtype=torch.float32)
        start = 0
        for chunk in self.chunks():
            out[start:start + len(chunk)] = chunk
            start += len(chunk)
        if start != len(out):
            raise ValueError(f"{self!r} gave {start} frames, expected {len(out)}")
        return out

    def vidgraph_nbytes(self) -> int:
        return 0  # the frames are on disk; what a consumer reads is counted where it is held


class FrameFile(FrameStream):
    """Frames stored raw (float32, native order) in a temp file, deleted with this object."""

    def __init__(self, path: Path, shape: tuple[int, int, int, int]):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self._remove = weakref.finalize(self, _unlink, str(self.path))

    def _read(self, frames_per_chunk):
        with open(self.path, "rb", buffering=0) as f:
            for start in range(0, self.shape[0], frames_per_chunk):
                count = min(frames_per_chunk, self.shape[0] - start)
                chunk = np.empty((count, *self.shape[1:]), dtype=np.float32)
                if f.readinto(memoryview(chunk).cast("B")) != chunk.nbytes:
                    raise ValueError(f"frame file {self.path.name} is truncated at frame {start}")
                yield torch.from_numpy(chunk)

    def __repr__(self):
        return f"FrameFile({self.shape[0]} frames of {self.shape[2]} x {self.shape[1]}, {self.path.name})"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class FrameFileWriter:
    """Appends [n,H,W,C] chunks to a new FrameFile in `directory`; `finish()` returns it.

    Used as a context manager, the partial file is removed if anything fails before `finish()`."""

    def __init__(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"vidgraph-frames-{secrets.token_hex(8)}.f32"
        self._file = open(self.path, "xb")
        self._frame_shape: tuple[int, ...] | None = None
        self._frames = 0

    def append(self, chunk: torch.Tensor) -> None:
        if self._frame_shape is None:
            self._frame_shape = tuple(chunk.shape[1:])
        elif tuple(chunk.shape[1:]) != self._frame_shape:
            raise ValueError(f"frames of shape {list(chunk.shape[1:])} after {list(self._frame_shape)}")
        array = chunk.detach().to("cpu", torch.float32).contiguous().numpy()
        self._file.write(memoryview(array).cast("B"))
        self._frames += chunk.shape[0]

    def finish(self) -> FrameFile:
        self._file.close()
        if not self._frames:
            raise ValueError("no frames were written")
        return FrameFile(self.path, (self._frames, *self._frame_shape))

    def abort(self) -> None:
        self._file.close()
        _unlink(str(self.path))

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None:
            self.abort()


class InMemoryFrames(FrameStream):
    """A tensor seen through the stream interface, so one code path serves both."""

    def __init__(self, images: torch.Tensor):
        self.images = images
        self.shape = tuple(images.shape)

    def _read(self, frames_per_chunk):
        for start in range(0, self.shape[0], frames_per_chunk):
            yield self.images[start:start + frames_per_chunk]

    def vidgraph_materialize(self) -> torch.Tensor:
        return self.images


def as_frame_stream(images, node: str, input_name: str = "images") -> FrameStream:
    """An IMAGE input that may be a stream, as a FrameStream (a tensor is checked and wrapped)."""
    if isinstance(images, FrameStream):
        return images
    return InMemoryFrames(check_image_batch(images, node, input_name))


def frame_chunks(images, node: str, input_name: str = "images",
                 frames_per_chunk: int | None = None) -> Iterator[torch.Tensor]:
    return as_frame_stream(images, node, input_name).chunks(frames_per_chunk)


def frames_of(images, node: str, input_name: str = "images") -> Iterator[torch.Tensor]:
    """Each [H,W,C] frame of an IMAGE tensor or stream, in order."""
    for chunk in frame_chunks(images, node, input_name):
        yield from chunk


class FrameSink:
    """Collects an IMAGE output chunk by chunk: in memory while it is small, in a FrameFile once
    the whole clip (its final frame count known up front) would pass the streaming threshold."""

    def __init__(self, frames: int, frame_shape: tuple[int, int, int], settings, temp_dir):
        total = frames * int(np.prod(frame_shape)) * 4
        self.streaming = total > stream_threshold(settings)
        self._writer = FrameFileWriter(temp_dir or tempfile.gettempdir()) if self.streaming else None
        self._chunks: list[torch.Tensor] = []

    def append(self, chunk: torch.Tensor) -> None:
        if self._writer is not None:
            self._writer.append(chunk)
        else:
            self._chunks.append(chunk)

    def finish(self):
        """The IMAGE: a tensor, or a FrameFile when streaming."""
        if self._writer is not None:
            return self._writer.finish()
        return self._chunks[0] if len(self._chunks) == 1 else torch.cat(self._chunks)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and self._writer is not None:
            self._writer.abort()
