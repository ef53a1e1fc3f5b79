"""Video nodes: animated WEBP/PNG, the VIDEO object, MP4 (H.264 through PyAV) in and out."""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image, ImageSequence

from vidgraph.engine import metadata
from vidgraph.engine.context import check_current_interrupt

from vidgraph.engine.nodecall import materialized

from .common import SAVE_HIDDEN, NodeInputError, folders_in_scope
from .frames import FrameStream, as_frame_stream, frames_of
from .image_io import ImageLimits, check_image_batch, check_size, tensor_to_pil, to_uint8
from .input_files import input_file_hash, list_input_files, resolve_input_file, validate_input_file
from .outputs import apng_comf_info, embedded_metadata, output_files

WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
# A damaged container can surface from PyAV as any of these (codec_context None, undecodable
# metadata strings, ...), besides FFmpeg's own errors.
VIDEO_DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, AttributeError, IndexError,
                       TypeError, ZeroDivisionError, UnicodeDecodeError)


# -- the VIDEO object ---------------------------------------------------------------------------------

@dataclass
class VideoComponents:
    images: torch.Tensor          # IMAGE [frames, H, W, 3]
    audio: dict | None            # AUDIO {"waveform": [1, channels, samples], "sample_rate": int}
    frame_rate: Fraction


class Video:
    """What flows on a VIDEO link: frames in memory or in a FrameStream, or a video file read on use.

    `frames()` gives the frames as they are (a tensor, or a stream read in order: a file is decoded
    lazily, a chunk at a time); `get_components()` gives ComfyUI's VideoComponents with the frames as
    a tensor (packs expect one); `save_to(path, metadata=...)` writes MP4/H.264 a chunk at a time.
    """

    def __init__(self, images: torch.Tensor | FrameStream | None = None, fps: float | Fraction = 30,
                 audio: dict | None = None, source: Path | None = None,
                 limits: ImageLimits = ImageLimits(), node: str = "LoadVideo", input_name: str = "file"):
        if images is None and source is None:
            raise ValueError("a Video needs frames or a source file")
        self.source = source
        self._limits, self._node, self._input = limits, node, input_name
        self._images, self._audio, self._rate = images, audio, _as_fraction(fps)
        self._components = None

    @classmethod
    def from_file(cls, path, limits: ImageLimits = ImageLimits(), node="LoadVideo", input_name="file"):
        """A lazily decoded file; the header is checked here, so bad files fail early."""
        probe_video(path, limits, node, input_name, whole_clip=False)
        return cls(source=Path(path), limits=limits, node=node, input_name=input_name)

    def frames(self) -> torch.Tensor | FrameStream:
        """The frames without loading them all: a tensor, a FrameStream, or the file decoded on the fly."""
        if self._images is None:
            self._images = VideoFileFrames(self.source, self._limits, self._node, self._input)
        return self._images

    def audio(self) -> dict | None:
        if self.source is not None and self._audio is None:
            self._audio = _decode_audio(self.source)
        return self._audio

    @property
    def frame_rate(self) -> Fraction:
        if self.source is not None and self._images is None:
            self.frames()
        if isinstance(self._images, VideoFileFrames):
            return self._images.frame_rate
        return self._rate

    def get_components(self) -> VideoComponents:
        if self._components is None:
            self._components = VideoComponents(materialized(self.frames()), self.audio(), self.frame_rate)
        return self._components

    def get_dimensions(self) -> tuple[int, int]:
        """(width, height)."""
        if self._images is None:
            return probe_video(self.source, self._limits, self._node, self._input, whole_clip=False)[:2]
        return self._images.shape[2], self._images.shape[1]

    @property
    def fps(self) -> Fraction:
        return self.frame_rate

    def save_to(self, path, metadata: dict[str, str] | None = None) -> None:
        encode_mp4(path, as_frame_stream(self.frames(), "SaveVideo", "video"), self.frame_rate, self.audio(),
                   metadata or {})

    def __repr__(self):
        where = f"file {self.source}" if self.source is not None else f"{self._images!r}"[:60]
        return f"Video({where})"


def _as_fraction(fps) -> Fraction:
    return fps if isinstance(fps, Fraction) else Fraction(round(float(fps) * 1000), 1000)


# -- MP4 encode / decode ------------------------------------------------------------------------------

def even_frames(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row/column of odd-sized [T,H,W,3] frames."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def encode_mp4(path, frames: FrameStream, frame_rate: Fraction, audio: dict | None, tags: dict[str, str]) -> None:
    """H.264 yuv420p in MP4, container tags kept under their own names (use_metadata_tags).

    Frames are read from the stream a chunk at a time, so a long clip never sits in memory whole."""
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update(tags)
        stream = out.add_stream("libx264", rate=frame_rate)
        height, width = frames.shape[1:3]
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        audio_track = _audio_track(out, audio, len(frames), frame_rate) if audio is not None else None
        for chunk in frames.chunks():
            chunk = chunk.expand(*chunk.shape[:3], 3) if chunk.shape[-1] == 1 else chunk[..., :3]
            for array in even_frames(to_uint8(chunk)):
                check_current_interrupt()
                out.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(stream.encode())
        if audio_track is not None:
            audio_stream, audio_frame = audio_track
            out.mux(audio_stream.encode(audio_frame))
            out.mux(audio_stream.encode())


def _audio_track(out, audio: dict, frame_count: int, frame_rate: Fraction):
    """An AAC stream and the whole waveform as one frame (the encoder cuts it into its frame size)."""
    waveform = audio["waveform"]
    rate = int(audio["sample_rate"])
    waveform = waveform[0] if waveform.ndim == 3 else waveform
    waveform = waveform.detach().to("cpu", torch.float32).numpy()[:2]  # AAC here: mono or stereo
    keep = math.ceil(frame_count / frame_rate * rate)  # no sound past the last frame
    waveform = np.ascontiguousarray(waveform[:, :keep])
    layout = "mono" if waveform.shape[0] == 1 else "stereo"
    stream = out.add_stream("aac", rate=rate)
    stream.layout = layout
    frame = av.AudioFrame.from_ndarray(waveform, format="fltp", layout=layout)
    frame.sample_rate = rate
    frame.pts = 0
    return stream, frame


def probe_video(path, limits: ImageLimits, node: str, input_name: str,
                whole_clip: bool = True) -> tuple[int, int, int]:
    """(width, height, frames) from the container header; refuses empty, huge or unreadable files.

    `whole_clip=False` checks one frame's size and the frame count only: the clip is read a chunk
    at a time, and the total is checked when something asks for all of its frames at once."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise NodeInputError(node, input_name, f"file {Path(path).name!r} has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = stream.frames or _estimated_frames(stream, container)
    except NodeInputError:
        raise
    except VIDEO_DECODE_ERRORS as e:
        raise NodeInputError(node, input_name, f"file {Path(path).name!r} is not a readable video ({e})") from None
    if whole_clip:
        check_size(width, height, frames, limits, node, input_name, f"video {Path(path).name!r}")
    else:
        check_size(width, height, 1, limits, node, input_name, f"video {Path(path).name!r}")
        if frames > limits.max_frames:
            check_size(width, height, frames, limits, node, input_name, f"video {Path(path).name!r}")
    return width, height, frames


def _estimated_frames(stream, container) -> int:
    duration = (float(stream.duration * stream.time_base) if stream.duration
                else (container.duration or 0) / av.time_base)
    return math.ceil(duration * float(stream.average_rate or 0))


class VideoFileFrames(FrameStream):
    """The frames of a video file as a FrameStream: decoded in order, a chunk at a time, on each read."""

    def __init__(self, path, limits: ImageLimits, node: str, input_name: str):
        self.path, self._limits, self._node, self._input = Path(path), limits, node, input_name
        width, height, _ = probe_video(path, limits, node, input_name, whole_clip=False)
        frames, self.frame_rate = self._count_frames()
        if frames == 0:
            raise NodeInputError(node, input_name, f"video {self.path.name!r} has no frames")
        self.shape = (frames, height, width, 3)

    def _count_frames(self) -> tuple[int, Fraction]:
        """Frames and rate from the packets (no decoding); headers may estimate the count."""
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                rate = Fraction(stream.average_rate or stream.guessed_rate or Fraction(30))
                count = sum(1 for packet in container.demux(stream) if packet.size)
        except VIDEO_DECODE_ERRORS as e:
            raise NodeInputError(self._node, self._input, f"video {self.path.name!r} is corrupt ({e})") from None
        if count > self._limits.max_frames:
            raise NodeInputError(self._node, self._input, f"video {self.path.name!r} has {count} frames; "
                                 f"the limit is {self._limits.max_frames}")
        return count, rate

    def _read(self, frames_per_chunk):
        total, height, width, _ = self.shape
        done, batch = 0, []
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                for frame in container.decode(stream):
                    check_current_interrupt()
                    if done + len(batch) >= total:
                        break
                    if (frame.width, frame.height) != (width, height):
                        raise NodeInputError(self._node, self._input, f"video {self.path.name!r} changes size "
                                             f"mid-stream ({width} x {height} to {frame.width} x {frame.height})")
                    batch.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
                    if len(batch) == frames_per_chunk:
                        yield torch.stack(batch).to(torch.float32) / 255.0
                        done, batch = done + len(batch), []
        except NodeInputError:
            raise
        except VIDEO_DECODE_ERRORS as e:
            raise NodeInputError(self._node, self._input, f"video {self.path.name!r} is corrupt ({e})") from None
        if done + len(batch) < total:  # damaged packets: the decoder drops their frames without an error
            raise NodeInputError(self._node, self._input, f"video {self.path.name!r} is damaged: {total} frames "
                                 f"stored, {done + len(batch)} decodable")
        if batch:
            yield torch.stack(batch).to(torch.float32) / 255.0

    def vidgraph_materialize(self) -> torch.Tensor:
        check_size(self.shape[2], self.shape[1], self.shape[0], self._limits, self._node, self._input,
                   f"video {self.path.name!r}")
        return super().vidgraph_materialize()

    def __repr__(self):
        return f"VideoFileFrames({self.path.name}, {self.shape[0]} frames)"


def _decode_audio(path) -> dict | None:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        parts = [f.to_ndarray() for frame in container.decode(stream) for f in resampler.resample(frame)]
        parts += [f.to_ndarray() for f in resampler.resample(None)]
    if not parts:
        return None
    waveform = torch.from_numpy(np.concatenate(parts, axis=1))[None]
    return {"waveform": waveform, "sample_rate": stream.rate}


# -- nodes --------------------------------------------------------------------------------------------

def _check_fps(fps, node):
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise NodeInputError(node, "fps", f"must be a positive number, got {fps!r}")


def save_animation(node, images, fps, filename_prefix, prompt, extra_pnginfo, context, extension, write,
                   check=lambda: None) -> tuple[dict, int]:
    """One animated file of `images` (a tensor or a FrameStream): checks the images, fps and then
    `check()`, and calls `write(path, first, rest, frame_duration_ms, prompt, extra_pnginfo)` with the
    first frame as a PIL image and the others as one lazily read multi-frame PIL image (None for a
    single frame), so a long clip is converted a frame at a time. Returns (ui entry, frames)."""
    frames = as_frame_stream(images, node)
    _check_fps(fps, node)
    check()
    files = output_files(context, filename_prefix, "output", frames, node)
    prompt, extra_pnginfo = embedded_metadata(context.settings, prompt, extra_pnginfo)

    def write_file(path):
        pictures = (tensor_to_pil(frame) for frame in frames_of(frames, node))
        first = next(pictures)
        rest = LazyFrames(pictures, len(frames) - 1, first) if len(frames) > 1 else None
        write(path, first, rest, int(1000.0 / fps), prompt, extra_pnginfo)

    return files.save(write_file, extension), len(frames)


class LazyFrames(Image.Image):
    """Frames 2..T as one multi-frame PIL image whose frames are made on `seek`, in order.

    Pillow's animated writers take `append_images` and walk each one's frames with seek(); giving
    them this instead of a list keeps one frame in memory at a time (WEBP's encoder takes each
    frame as it comes; APNG's walks them twice, so it gets copies)."""

    def __init__(self, pictures, count: int, like: Image.Image):
        super().__init__()
        self._pictures, self.n_frames, self.is_animated = pictures, count, count > 1
        self._mode, self._size, self._index = like.mode, like.size, -1
        self.seek(0)

    def seek(self, frame: int) -> None:
        if frame == self._index:
            return
        if frame != self._index + 1 or frame >= self.n_frames:
            raise EOFError(f"frames are read in order: asked for {frame} after {self._index}")
        picture = next(self._pictures)
        self.im, self._mode, self._size, self._index = picture.im, picture.mode, picture.size, frame

    def tell(self) -> int:
        return self._index


# The inputs both animation savers start with, in ComfyUI's order (saved workflows list widget values by it).
ANIMATION_INPUTS = {
    "images": ("IMAGE", {"stream": True}),
    "filename_prefix": ("STRING", {"default": "ComfyUI"}),
    "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                      "tooltip": "Playback rate of the saved file, in frames per second."}),
}


class SaveAnimatedWEBP:
    CATEGORY = "image/animation"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    **ANIMATION_INPUTS,
                    "lossless": ("BOOLEAN", {"default": True}),
                    "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                    "method": (list(WEBP_METHODS),)},
                "hidden": SAVE_HIDDEN}

    def save_images(self, images, fps, filename_prefix="ComfyUI", lossless=True, quality=80,
                    method="default", prompt=None, extra_pnginfo=None, context=None):
        def check():
            if method not in WEBP_METHODS:
                raise NodeInputError("SaveAnimatedWEBP", "method", f"{method!r} is not one of {', '.join(WEBP_METHODS)}")

        def write(path, first, rest, duration, prompt, extra_pnginfo):
            first.save(path, format="WEBP", save_all=True, append_images=[rest] if rest else [], duration=duration,
                             exif=metadata.webp_exif(prompt, extra_pnginfo), lossless=lossless, quality=quality,
                             method=WEBP_METHODS[method])

        entry, frames = save_animation("SaveAnimatedWEBP", images, fps, filename_prefix, prompt, extra_pnginfo,
                                       context, "webp", write, check)
        return {"ui": {"images": [entry], "animated": (frames != 1,)}}


class SaveAnimatedPNG:
    CATEGORY = "image/animation"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    **ANIMATION_INPUTS,
                    "compress_level": ("INT", {"default": 4, "min": 0, "max": 9})},
                "hidden": SAVE_HIDDEN}

    def save_images(self, images, fps, compress_level, filename_prefix="ComfyUI", prompt=None,
                    extra_pnginfo=None, context=None):
        def write(path, first, rest, duration, prompt, extra_pnginfo):
            # Pillow's APNG writer walks the frames twice (modes, then data) and keeps them all anyway
            others = [frame.copy() for frame in ImageSequence.Iterator(rest)] if rest else []
            first.save(path, format="PNG", pnginfo=apng_comf_info(prompt, extra_pnginfo),
                       compress_level=compress_level, save_all=True, duration=duration, append_images=others)

        entry, _ = save_animation("SaveAnimatedPNG", images, fps, filename_prefix, prompt, extra_pnginfo,
                                  context, "png", write)
        return {"ui": {"images": [entry], "animated": (True,)}}


class CreateVideo:
    CATEGORY = "image/video"
    DESCRIPTION = "Create a video from images."
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "create_video"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "images": ("IMAGE", {"tooltip": "The images to create a video from.", "stream": True}),
                    "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0,
                                      "tooltip": "Playback rate of the video, in frames per second."})},
                "optional": {"audio": ("AUDIO", {"tooltip": "The audio to add to the video."})}}

    def create_video(self, images, fps, audio=None):
        if not isinstance(images, FrameStream):
            images = check_image_batch(images, "CreateVideo")
        _check_fps(fps, "CreateVideo")
        if audio is not None and not (isinstance(audio, dict) and "waveform" in audio and "sample_rate" in audio):
            raise NodeInputError("CreateVideo", "audio", "expected AUDIO {'waveform', 'sample_rate'}")
        return (Video(images, fps, audio),)


class SaveVideo:
    CATEGORY = "image/video"
    DESCRIPTION = "Saves the input video to your output directory."
    RETURN_TYPES = ()
    FUNCTION = "save_video"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
                    "video": ("VIDEO", {"tooltip": "The video to save."}),
                    "filename_prefix": ("STRING", {"default": "video/ComfyUI", "tooltip":
                        "The prefix for the file to save."}),
                    "format": (["auto", "mp4"], {"default": "auto", "tooltip": "The format to save the video as."}),
                    "codec": (["auto", "h264"], {"default": "auto", "tooltip": "The codec to use for the video."})},
                "hidden": SAVE_HIDDEN}

    def save_video(self, video, filename_prefix="video/ComfyUI", format="auto", codec="auto",
                   prompt=None, extra_pnginfo=None, context=None):
        if not isinstance(video, Video):
            raise NodeInputError("SaveVideo", "video", f"expected a VIDEO, got {type(video).__name__}")
        for name, value, allowed in (("format", format, ("auto", "mp4")), ("codec", codec, ("auto", "h264"))):
            if value not in allowed:
                raise NodeInputError("SaveVideo", name, f"{value!r} is not one of {', '.join(allowed)}")
        files = output_files(context, filename_prefix, "output", video.frames(), "SaveVideo")
        prompt, extra_pnginfo = embedded_metadata(context.settings, prompt, extra_pnginfo)
        tags = metadata.mp4_metadata(prompt, extra_pnginfo)
        entry = files.save(lambda path: video.save_to(path, tags), "mp4")
        return {"ui": {"images": [entry], "animated": (True,)}}


class LoadVideo:
    CATEGORY = "image/video"
    RETURN_TYPES = ("VIDEO",)
    FUNCTION = "load_video"

    @classmethod
    def INPUT_TYPES(cls, folders=None):
        files = list_input_files(folders or folders_in_scope(), "video")
        return {"required": {"file": (files, {"video_upload": True})},
                "hidden": {"context": "NODE_CONTEXT"}}

    def load_video(self, file, context):
        path = resolve_input_file(context.folders, file, "LoadVideo", "file")
        return (Video.from_file(path, ImageLimits.from_settings(context.settings)),)

    @classmethod
    def IS_CHANGED(cls, file, context=None):
        return input_file_hash(file, context, "LoadVideo", "file")

    @classmethod
    def VALIDATE_INPUTS(cls, file, context=None):
        return validate_input_file(file, context, "LoadVideo", "file")


class GetVideoComponents:
    CATEGORY = "image/video"
    DESCRIPTION = "Extracts all components from a video: frames, audio, and framerate."
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("images", "audio", "fps")
    FUNCTION = "get_components"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO", {"tooltip": "The video to extract components from."})}}

    def get_components(self, video):
        if not isinstance(video, Video):
            raise NodeInputError("GetVideoComponents", "video", f"expected a VIDEO, got {type(video).__name__}")
        return (video.frames(), video.audio(), float(video.frame_rate))


NODE_CLASS_MAPPINGS = {
    "SaveAnimatedWEBP": SaveAnimatedWEBP,
    "SaveAnimatedPNG": SaveAnimatedPNG,
    "CreateVideo": CreateVideo,
    "SaveVideo": SaveVideo,
    "LoadVideo": LoadVideo,
    "GetVideoComponents": GetVideoComponents,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CreateVideo": "Create Video",
    "SaveVideo": "Save Video",
    "LoadVideo": "Load Video",
    "GetVideoComponents": "Get Video Components",
}
