"""FrameInterpolate: in-betweens from optical flow land where the motion puts them."""
import numpy as np
import pytest
import torch

from vidgraph.engine.nodecall import materialized
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.frame_interpolation import FrameInterpolate, in_betweens
from vidgraph.nodes.frames import FrameFile


def scene(shift_x: float, shift_y: float = 0.0, height=64, width=96) -> np.ndarray:
    """A textured disc over a soft background gradient, its centre moved by (shift_x, shift_y)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = 30 + shift_x, 32 + shift_y
    disc = np.clip(12 - np.sqrt((x - cx) ** 2 + (y - cy) ** 2), 0, 1)
    texture = 0.5 + 0.4 * np.sin((x - cx) * 0.8) * np.cos((y - cy) * 0.7)
    background = 0.2 + 0.2 * x / width
    grey = background * (1 - disc) + texture * disc
    return np.stack([grey, grey * 0.8 + 0.1, 1 - grey], -1).astype(np.float32)


def test_the_middle_frame_follows_the_motion_not_a_cross_fade():
    a, b = scene(0), scene(8, 4)
    (middle,) = in_betweens(a, b, [0.5])
    truth = scene(4, 2)
    flow_error = np.abs(middle - truth).mean()
    fade_error = np.abs((a + b) / 2 - truth).mean()
    assert flow_error < fade_error / 3, (flow_error, fade_error)
    quarter = in_betweens(a, b, [0.25, 0.75])
    assert np.abs(quarter[0] - scene(2, 1)).mean() < fade_error / 3
    assert np.abs(quarter[1] - scene(6, 3)).mean() < fade_error / 3


def test_still_frames_give_still_in_betweens():
    a = scene(0)
    for frame in in_betweens(a, a.copy(), [0.25, 0.5, 0.75]):
        np.testing.assert_allclose(frame, a, atol=1e-6)


@pytest.mark.parametrize("multiplier", [2, 4])
def test_node_keeps_the_originals_and_multiplies_the_rate(multiplier, make_context):
    frames = torch.from_numpy(np.stack([scene(4 * i) for i in range(4)]))
    images, fps = FrameInterpolate().interpolate(frames, multiplier, 6.0, make_context())
    assert isinstance(images, torch.Tensor) and images.shape == (3 * multiplier + 1, 64, 96, 3)
    assert fps == 6.0 * multiplier
    assert torch.equal(images[::multiplier], frames)  # the originals, unchanged, at their times
    assert float(images.min()) >= 0 and float(images.max()) <= 1


def test_long_clips_come_out_as_a_frame_file_and_bad_input_names_the_input(make_context):
    frames = torch.from_numpy(np.stack([scene(2 * i) for i in range(3)]))
    context = make_context(settings={"stream_frames_over_mb": 0})
    images, _ = FrameInterpolate().interpolate(frames, 2, 8.0, context)
    assert isinstance(images, FrameFile) and images.shape == (5, 64, 96, 3)
    assert torch.equal(materialized(images)[::2], frames)
    with pytest.raises(NodeInputError, match="^FrameInterpolate: input 'multiplier'"):
        FrameInterpolate().interpolate(frames, 5, 8.0, context)
    with pytest.raises(NodeInputError, match="^FrameInterpolate: input 'images'"):
        FrameInterpolate().interpolate(torch.zeros(0, 4, 4, 3), 2, 8.0, context)
