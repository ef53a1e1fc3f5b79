"""Context-window schedules, fuse weights, the windowed call and FreeNoise (pure functions)."""
import pytest
import torch

from vidgraph.nodes.context_windows import (FUSE_METHODS, SCHEDULES, ContextWindows, freenoise, fuse_weights,
                                            ordered_halving, step_of, window_indices, windowed,
                                            windowed_rows)


def span(a, b, step=1):
    return list(range(a, b, step))


# -- schedules: the index lists ComfyUI's documentation and code give -------------------------------

def test_static_windows_step_by_length_minus_overlap_and_end_on_the_last_frame():
    assert window_indices("standard_static", 20, 8, 2) == [span(0, 8), span(6, 14), span(12, 20)]
    assert window_indices("standard_static", 10, 8, 4) == [span(0, 8), span(2, 10)]
    assert window_indices("standard_static", 8, 8, 4) == [span(0, 8)]
    assert window_indices("standard_static", 5, 8, 4) == [span(0, 5)]
    # the same windows at every step
    assert window_indices("standard_static", 20, 8, 2, step=3) == window_indices("standard_static", 20, 8, 2)


def test_batched_windows_do_not_overlap_and_the_last_is_shorter():
    assert window_indices("batched", 20, 8, 2) == [span(0, 8), span(8, 16), span(16, 20)]
    assert window_indices("batched", 16, 8, 0) == [span(0, 8), span(8, 16)]
    assert window_indices("batched", 3, 8, 0) == [span(0, 3)]


def test_ordered_halving_is_the_bit_reversed_step():
    assert [ordered_halving(s) for s in range(6)] == [0, 0.5, 0.25, 0.75, 0.125, 0.625]


def test_looped_uniform_wraps_and_shifts_with_the_step():
    assert window_indices("looped_uniform", 20, 8, 2) == [span(0, 8), span(6, 14), span(12, 20)]
    closed = window_indices("looped_uniform", 20, 8, 2, closed_loop=True)
    assert closed == [span(0, 8), span(6, 14), span(12, 20), [18, 19, 0, 1, 2, 3, 4, 5]]
    # step 1: offset by half the clip, windows run past the end and wrap to the start
    assert window_indices("looped_uniform", 20, 8, 2, step=1) == [
        span(10, 18), [16, 17, 18, 19, 0, 1, 2, 3], span(2, 10)]
    assert window_indices("looped_uniform", 7, 8, 2) == [span(0, 7)]


def test_looped_uniform_strides_add_sparser_windows():
    windows = window_indices("looped_uniform", 40, 8, 2, stride=2)
    dense = [[i % 40 for i in range(s, s + 8)] for s in range(0, 38, 6)]
    sparse = [[i % 40 for i in range(s, s + 16, 2)] for s in (0, 14, 28)]
    assert windows == dense + sparse
    # levels are capped at ceil(log2(frames / length)) + 1: 3 for 20 frames of 8
    assert window_indices("looped_uniform", 20, 8, 2, stride=5) == window_indices("looped_uniform", 20, 8, 2, stride=3)
    assert window_indices("looped_uniform", 20, 8, 2, stride=5) != window_indices("looped_uniform", 20, 8, 2, stride=2)


def test_standard_uniform_slides_wrapping_windows_back_instead_of_wrapping():
    assert window_indices("standard_uniform", 20, 8, 2) == [span(0, 8), span(6, 14), span(12, 20)]
    # step 1: the wrapping window [16..19, 0..3] ends on the last frame instead, and a window
    # starting at frame 0 is added because the next one does not hold it
    assert window_indices("standard_uniform", 20, 8, 2, step=1) == [
        span(10, 18), span(12, 20), span(0, 8), span(2, 10)]
    assert window_indices("standard_uniform", 8, 8, 2) == [span(0, 8)]
    for step in range(8):
        for windows in (window_indices("standard_uniform", 37, 8, 3, stride=2, step=step),):
            assert all(w == sorted(w) and w[-1] < 37 for w in windows)  # never wraps
            assert len({tuple(w) for w in windows}) == len(windows)  # no repeats
            assert set().union(*map(set, windows)) == set(range(37))  # every frame covered


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_covers_every_frame(schedule):
    for frames in (9, 16, 17, 50, 101):
        for step in range(4):
            windows = window_indices(schedule, frames, 16 if schedule != "batched" else 8, 4, stride=2, step=step)
            assert set().union(*map(set, windows)) == set(range(frames)), (frames, step)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="context_overlap"):
        ContextWindows(length=8, overlap=8)
    with pytest.raises(ValueError, match="context_schedule"):
        ContextWindows(schedule="static")
    with pytest.raises(ValueError, match="fuse_method"):
        ContextWindows(fuse_method="mean")
    assert ContextWindows(length=8).applies_to(9) and not ContextWindows(length=8).applies_to(8)


# -- fuse weights ------------------------------------------------------------------------------------

def test_fuse_weights():
    assert fuse_weights("flat", span(0, 4), 10, 2) == [1.0] * 4
    assert fuse_weights("pyramid", span(0, 4), 10, 2) == [1, 2, 2, 1]
    assert fuse_weights("pyramid", span(3, 8), 10, 2) == [1, 2, 3, 2, 1]
    relative = fuse_weights("relative", span(0, 5), 10, 2)
    assert relative[2] == 1 and relative[0] == relative[4] == 0.01 and relative[1] == pytest.approx(1 - 1 / 2.005)
    middle = fuse_weights("overlap-linear", span(2, 8), 12, 3)
    assert middle == pytest.approx([1e-37, 0.5, 1, 1, 0.5, 1e-37])
    assert fuse_weights("overlap-linear", span(0, 6), 12, 3) == pytest.approx([1, 1, 1, 1, 0.5, 1e-37])
    assert fuse_weights("overlap-linear", span(6, 12), 12, 3) == pytest.approx([1e-37, 0.5, 1, 1, 1, 1])
    assert fuse_weights("overlap-linear", span(0, 6), 6, 0) == [1.0] * 6


# -- the windowed call -------------------------------------------------------------------------------

def per_frame_model(x, sigma, indices=None):
    """Each frame's output depends on that frame alone (a static scene: windows cannot disagree)."""
    return torch.tanh(x * 0.7) + sigma.reshape(-1, *([1] * (x.ndim - 1))) * 0.1


def test_one_window_as_long_as_the_clip_is_the_call_itself_exactly():
    x = torch.randn(12, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    sigma = torch.linspace(1, 2, 12)
    for method in FUSE_METHODS:
        fused = windowed(lambda xw, w: per_frame_model(xw, sigma[w]), x, [span(0, 12)], method, overlap=4)
        assert torch.equal(fused, per_frame_model(x, sigma))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("method", FUSE_METHODS)
def test_a_static_scene_fuses_to_the_unwindowed_result(schedule, method):
    x = torch.randn(30, 4, 2, 3, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((30,), 3.0)
    windows = window_indices(schedule, 30, 8, 3, step=1)
    fused = windowed(lambda xw, w: per_frame_model(xw, sigma[w]), x, windows, method, overlap=3)
    torch.testing.assert_close(fused, per_frame_model(x, sigma), rtol=1e-6, atol=1e-6)


def test_overlapping_frames_get_the_weighted_mean_of_their_windows():
    x = torch.zeros(10, 1)
    windows = [span(0, 6), span(4, 10)]
    fused = windowed(lambda x, w: torch.full_like(x, float(w[0])), x, windows, "pyramid", 2)
    # frame 4: weight 2 in window 0 (value 0), weight 1 in window 4 (value 4) -> 4/3
    assert fused[:4].flatten().tolist() == [0.0] * 4 and fused[6:].flatten().tolist() == [4.0] * 4
    assert fused[4].item() == pytest.approx(4 / 3) and fused[5].item() == pytest.approx(4 * 2 / 3)


def test_windowed_returns_each_of_several_outputs():
    x = torch.randn(9, 2)
    cond, uncond = windowed(lambda xw, w: (xw * 2, xw * 3), x, [span(0, 5), span(4, 9)], "flat", 1)
    torch.testing.assert_close(cond, x * 2)
    torch.testing.assert_close(uncond, x * 3)


def test_windowed_rows_slices_every_chunk_sigma_and_row_arguments_alike():
    """Rows are [chunk, frame]: the cond and uncond videos of 10 frames; each window takes the same
    frames of both, with their sigma and conditioning rows, and says how many frames it holds."""
    x = torch.arange(20.0).reshape(20, 1)
    sigma = torch.arange(20.0) * 10
    concat = torch.arange(20.0).reshape(20, 1) + 100
    seen = []

    def run(xr, sr, args, frames):
        seen.append((xr.flatten().tolist(), sr.tolist(), args["concat"].flatten().tolist(), args["keep"], frames))
        return xr * 2
    settings = ContextWindows(length=6, overlap=2)
    fused = windowed_rows(run, x, sigma, {"concat": concat, "keep": "x"}, chunks=2, settings=settings)
    torch.testing.assert_close(fused, x * 2)
    first = seen[0]
    assert first[0] == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
    assert first[1] == [v * 10 for v in first[0]] and first[2] == [v + 100 for v in first[0]]
    assert first[3] == "x" and first[4] == 6
    assert [s[4] for s in seen] == [6, 6]


def test_step_of_finds_the_interval_of_a_sigma():
    sigmas = torch.tensor([10.0, 5.0, 2.0, 0.0])
    assert [step_of(s, sigmas) for s in (10.0, 7.0, 5.0, 3.0, 2.0, 0.5)] == [0, 0, 1, 1, 2, 2]


def test_windowed_along_another_dim_and_uncovered_frames_are_refused():
    x = torch.randn(2, 10, 3)
    fused = windowed(lambda xw, w: xw + 1, x, [span(0, 6), span(4, 10)], "pyramid", 2, dim=1)
    torch.testing.assert_close(fused, x + 1)
    with pytest.raises(ValueError, match="uncovered"):
        windowed(lambda xw, w: xw, x, [span(0, 6)], "flat", 0, dim=1)


# -- FreeNoise ---------------------------------------------------------------------------------------

def test_freenoise_new_frames_reuse_shuffled_noise_of_the_window_before():
    noise = torch.arange(20.0).reshape(20, 1, 1, 1).expand(20, 2, 1, 1).contiguous()
    shuffled = freenoise(noise, 8, 2, seed=3)
    assert torch.equal(shuffled[:8], noise[:8])  # the first window keeps its noise
    frames = shuffled[:, 0, 0, 0].tolist()
    assert sorted(frames[8:14]) == span(0, 6) and frames[8:14] != span(0, 6)  # a permutation of 0..5
    assert sorted(frames[14:20]) == sorted(frames[6:12])
    assert torch.equal(freenoise(noise, 8, 2, seed=3), shuffled)
    assert not torch.equal(freenoise(noise, 8, 2, seed=4), shuffled)
    assert torch.equal(noise[:, 0, 0, 0], torch.arange(20.0))  # the input is left alone
