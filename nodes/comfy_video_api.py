"""`comfy_api.latest`'s video types for node packs (`Types`, `InputImpl`), as faces over vidgraph's
VIDEO (nodes/video.py): `Types.VideoComponents` is vidgraph's, `InputImpl.VideoFromFile` /
`VideoFromComponents` make vidgraph's `Video`, and the container/codec enums list what SaveVideo writes.
"""
from __future__ import annotations

import enum
from fractions import Fraction
from types import SimpleNamespace

from .video import Video, VideoComponents


class _Choices(str, enum.Enum):
    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]


class VideoContainer(_Choices):
    AUTO = "auto"
    MP4 = "mp4"

    @classmethod
    def get_extension(cls, value) -> str:
        return "mp4" if cls(value) in (cls.AUTO, cls.MP4) else str(value)


class VideoCodec(_Choices):
    AUTO = "auto"
    H264 = "h264"


def video_from_file(path) -> Video:
    return Video.from_file(path)


def video_from_components(components: VideoComponents) -> Video:
    return Video(components.images, Fraction(components.frame_rate), components.audio)


TYPES = SimpleNamespace(VideoComponents=VideoComponents, VideoContainer=VideoContainer, VideoCodec=VideoCodec)
INPUT_IMPL = SimpleNamespace(VideoFromFile=video_from_file, VideoFromComponents=video_from_components)


def fill_video_api(module, registry) -> None:
    module.Types = TYPES
    module.InputImpl = INPUT_IMPL
    module.Input = SimpleNamespace(Video=Video)


VIDGRAPH_COMPAT_FACES = {f"comfy_api.{version}": fill_video_api for version in ("latest", "v0_0_2")}
