"""Video nodes: animated WEBP/PNG, the VIDEO object, MP4 (H.264 through PyAV) in and out."""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from vidgraph.engine import metadata
from vidgraph.engine.context import current_context

from .common import SAVE_HIDDEN, NodeInputError, folders_in_scope
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
    """What flows on a VIDEO link: frames in memory, or a file decoded on first use.

    `get_components()` gives a VideoComponents; `save_to(path, metadata=...)` writes MP4/H.264.
    """

    def __init__(self, images: torch.Tensor | None = None, fps: float | Fraction = 30,
                 audio: dict | None = None, source: Path | None = None,
                 limits: ImageLimits = ImageLimits(), node: str = "LoadVideo", input_name: str = "file"):
        if images is None and source is None:
            raise ValueError("a Video needs frames or a source file")
        self.source = source
        self._limits, self._node, self._input = limits, node, input_name
        self._components = None
        if images is not None:
            self._components = VideoComponents(images, audio, _as_fraction(fps))

    @classmethod
    def from_file(cls, path, limits: ImageLimits = ImageLimits(), node="LoadVideo", input_name="file"):
        """A lazily decoded file; the header is checked here, so bad files fail early."""
        probe_video(path, limits, node, input_name)
        return cls(source=Path(path), limits=limits, node=node, input_name=input_name)

    def get_components(self) -> VideoComponents:
        if self._components is None:
            self._components = decode_video(self.source, self._limits, self._node, self._input)
        return self._components

    def get_dimensions(self) -> tuple[int, int]:
        """(width, height)."""
        if self._components is None:
            return probe_video(self.source, self._limits, self._node, self._input)[:2]
        return self._components.images.shape[2], self._components.images.shape[1]

    @property
    def fps(self) -> Fraction:
        return self.get_components().frame_rate

    def save_to(self, path, metadata: dict[str, str] | None = None) -> None:
        encode_mp4(path, self.get_components(), metadata or {})

    def __repr__(self):
        where = f"file {self.source}" if self.source is not None else "frames in memory"
        return f"Video({where})"


def check_interrupt() -> None:
    """Stop long encodes/decodes on interrupt; the Video runs inside whichever node uses it."""
    context = current_context()
    if context is not None:
        context.check_interrupt()


def _as_fraction(fps) -> Fraction:
    return fps if isinstance(fps, Fraction) else Fraction(round(float(fps) * 1000), 1000)


# -- MP4 encode / decode ------------------------------------------------------------------------------

def even_frames(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row/column of odd-sized [T,H,W,3] frames."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def encode_mp4(path, components: VideoComponents, tags: dict[str, str]) -> None:
    """H.264 yuv420p in MP4, container tags kept under their own names (use_metadata_tags)."""
    images = components.images
    images = images.expand(*images.shape[:3], 3) if images.shape[-1] == 1 else images[..., :3]
    frames = even_frames(to_uint8(images))
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as out:
        out.metadata.update(tags)
        stream = out.add_stream("libx264", rate=components.frame_rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        audio = _audio_track(out, components, len(frames)) if components.audio is not None else None
        for array in frames:
            check_interrupt()
            out.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(stream.encode())
        if audio is not None:
            audio_stream, audio_frame = audio
            out.mux(audio_stream.encode(audio_frame))
            out.mux(audio_stream.encode())


def _audio_track(out, components: VideoComponents, frame_count: int):
    """An AAC stream and the whole waveform as one frame (the encoder cuts it into its frame size)."""
    waveform = components.audio["waveform"]
    rate = int(components.audio["sample_rate"])
    waveform = waveform[0] if waveform.ndim == 3 else waveform
    waveform = waveform.detach().to("cpu", torch.float32).numpy()[:2]  # AAC here: mono or stereo
    keep = math.ceil(frame_count / components.frame_rate * rate)  # no sound past the last frame
    waveform = np.ascontiguousarray(waveform[:, :keep])
    layout = "mono" if waveform.shape[0] == 1 else "stereo"
    stream = out.add_stream("aac", rate=rate)
    stream.layout = layout
    frame = av.AudioFrame.from_ndarray(waveform, format="fltp", layout=layout)
    frame.sample_rate = rate
    frame.pts = 0
    return stream, frame


def probe_video(path, limits: ImageLimits, node: str, input_name: str) -> tuple[int, int, int]:
    """(width, height, frames) from the container header; refuses empty, huge or unreadable files."""
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
    check_size(width, height, frames, limits, node, input_name, f"video {Path(path).name!r}")
    return width, height, frames


def _estimated_frames(stream, container) -> int:
    duration = (float(stream.duration * stream.time_base) if stream.duration
                else (container.duration or 0) / av.time_base)
    return math.ceil(duration * float(stream.average_rate or 0))


def decode_video(path, limits: ImageLimits, node: str, input_name: str) -> VideoComponents:
    width, height, _ = probe_video(path, limits, node, input_name)
    most = min(limits.max_frames, limits.max_total_pixels // (width * height))
    frames = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            for frame in container.decode(stream):
                check_interrupt()
                if len(frames) >= most:  # the header undercounted
                    raise NodeInputError(node, input_name, f"video {Path(path).name!r} has more than "
                                         f"{most} frames of {width} x {height}")
                if (frame.width, frame.height) != (width, height):
                    raise NodeInputError(node, input_name, f"video {Path(path).name!r} changes size "
                                         f"mid-stream ({width} x {height} to {frame.width} x {frame.height})")
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
        audio = _decode_audio(path)
    except NodeInputError:
        raise
    except VIDEO_DECODE_ERRORS as e:
        raise NodeInputError(node, input_name, f"video {Path(path).name!r} is corrupt ({e})") from None
    if not frames:
        raise NodeInputError(node, input_name, f"video {Path(path).name!r} has no frames")
    images = torch.stack(frames).to(torch.float32) / 255.0
    return VideoComponents(images, audio, Fraction(rate))


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
    """One animated file of `images`: checks the images, fps and then `check()`, and calls
    `write(path, pictures, frame_duration_ms, prompt, extra_pnginfo)`. Returns (ui entry, frames)."""
    images = check_image_batch(images, node)
    _check_fps(fps, node)
    check()
    files = output_files(context, filename_prefix, "output", images, node)
    prompt, extra_pnginfo = embedded_metadata(context.settings, prompt, extra_pnginfo)
    pictures = [tensor_to_pil(image) for image in images]
    entry = files.save(lambda path: write(path, pictures, int(1000.0 / fps), prompt, extra_pnginfo), extension)
    return entry, len(pictures)


# The inputs both animation savers start with, in ComfyUI's order (saved workflows list widget values by it).
ANIMATION_INPUTS = {
    "images": ("IMAGE",),
    "filename_prefix": ("STRING", {"default": "ComfyUI"}),
    "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
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

        def write(path, pictures, duration, prompt, extra_pnginfo):
            pictures[0].save(path, format="WEBP", save_all=True, append_images=pictures[1:], duration=duration,
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
        def write(path, pictures, duration, prompt, extra_pnginfo):
            pictures[0].save(path, format="PNG", pnginfo=apng_comf_info(prompt, extra_pnginfo),
                             compress_level=compress_level, save_all=True, duration=duration,
                             append_images=pictures[1:])

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
                    "images": ("IMAGE", {"tooltip": "The images to create a video from."}),
                    "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0})},
                "optional": {"audio": ("AUDIO", {"tooltip": "The audio to add to the video."})}}

    def create_video(self, images, fps, audio=None):
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
        images = video.get_components().images
        files = output_files(context, filename_prefix, "output", images, "SaveVideo")
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
        components = video.get_components()
        return (components.images, components.audio, float(components.frame_rate))


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
