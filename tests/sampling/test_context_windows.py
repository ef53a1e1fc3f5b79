"""Context-window schedules, fuse weights, the windowed call and FreeNoise (pure functions)."""
import pytest
import torch

from vidgraph.nodes.context_windows import (FUSE_METHODS, SCHEDULES, ContextWindows, WindowCall, freenoise,
                                            fuse_weights, ordered_halving, plan_window, step_of, window_indices,
                                            windowed, windowed_rows, windowed_spatial)


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
        fused = windowed(lambda xw, w: per_frame_model(xw, sigma[list(w.latent)]), x, [span(0, 12)], method, overlap=4)
        assert torch.equal(fused, per_frame_model(x, sigma))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("method", FUSE_METHODS)
def test_a_static_scene_fuses_to_the_unwindowed_result(schedule, method):
    x = torch.randn(30, 4, 2, 3, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((30,), 3.0)
    windows = window_indices(schedule, 30, 8, 3, step=1)
    fused = windowed(lambda xw, w: per_frame_model(xw, sigma[list(w.latent)]), x, windows, method, overlap=3)
    torch.testing.assert_close(fused, per_frame_model(x, sigma), rtol=1e-6, atol=1e-6)


def test_overlapping_frames_get_the_weighted_mean_of_their_windows():
    x = torch.zeros(10, 1)
    windows = [span(0, 6), span(4, 10)]
    fused = windowed(lambda x, w: torch.full_like(x, float(w.window[0])), x, windows, "pyramid", 2)
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
    first, second = seen
    assert first[0] == [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
    assert first[1] == [v * 10 for v in first[0]] and first[2] == [v + 100 for v in first[0]]
    assert first[3] == "x" and first[4] == 6
    # causal_window_fix (ComfyUI's default): frame 3 rides in front of the window 4..9, its output dropped
    assert second[0] == [3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 18, 19] and second[4] == 7
    seen.clear()
    windowed_rows(run, x, sigma, {"concat": concat, "keep": "x"}, 2, ContextWindows(6, 2, causal_window_fix=False))
    assert [s[4] for s in seen] == [6, 6] and seen[1][0][0] == 4


def test_a_window_call_plans_the_anchor_and_the_retained_positions():
    plain = plan_window([0, 1, 2, 3], ContextWindows(4, 1, cond_retain=(0,), latent_retain=(0,)))
    assert plain == WindowCall.plain([0, 1, 2, 3])  # the first window holds frame 0 at position 0 already
    call = plan_window([6, 7, 8, 9], ContextWindows(4, 1, cond_retain=(0,), latent_retain=(1,)))
    assert call.latent == (5, 1, 7, 8, 9)     # anchor 5 in front; position 1 shows frame 1
    assert call.cond == (0, 6, 7, 8, 9)       # position 0 (the anchor's) takes frame 0's conditioning
    assert call.kept == ((2, 1), (3, 2), (4, 3))  # frame 6's place went to the reference: not fused
    no_fix = plan_window([6, 7, 8, 9], ContextWindows(4, 1, causal_window_fix=False, latent_retain=(0,)))
    assert no_fix.latent == (0, 7, 8, 9) and no_fix.kept == ((1, 1), (2, 2), (3, 3))


@pytest.mark.parametrize("extra", [dict(), dict(cond_retain=(0,)), dict(latent_retain=(0,)),
                                   dict(latent_retain=(0, 1), causal_window_fix=False)])
@pytest.mark.parametrize("schedule", ["standard_static", "standard_uniform", "looped_uniform"])
def test_a_static_scene_fuses_to_the_unwindowed_result_with_anchors_and_references(schedule, extra):
    x = torch.randn(30, 4, 2, 3, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((30,), 3.0)
    settings = ContextWindows(8, 3, schedule, **extra)
    fused = windowed(lambda xw, w: per_frame_model(xw, sigma[list(w.latent)]), x, settings.calls(30, step=1),
                     "pyramid", overlap=3)
    torch.testing.assert_close(fused, per_frame_model(x, sigma), rtol=1e-6, atol=1e-6)


def test_references_that_leave_a_frame_to_no_window_are_refused():
    settings = ContextWindows(4, 0, "batched", latent_retain=(0,), causal_window_fix=False)
    with pytest.raises(ValueError, match=r"frames \[4, 8\] uncovered.*latent_retain_index_list"):
        windowed(lambda xw, w: xw, torch.zeros(12, 1), settings.calls(12), "flat", 0)


def test_split_conds_gives_each_window_the_entry_of_its_region():
    """Chunks: cond entries 0 and 1 of a two-entry branch, then the uncond. The first window (centre in
    the first half) gives both cond chunks entry 0's conditioning, the last window entry 1's."""
    frames, chunks = 12, 3
    x = torch.zeros(chunks * frames, 1)
    tag = torch.tensor([10.0, 20.0, 30.0]).repeat_interleave(frames).reshape(-1, 1)
    ran = []

    def run(xr, sr, args, window_frames):
        ran.append(len(xr) // window_frames)
        return args["tag"]
    settings = ContextWindows(6, 2, causal_window_fix=False, split_conds=True, fuse_method="flat")
    entries = [(0, 0, 2), (0, 1, 2), (1, 0, 1)]
    out = windowed_rows(run, x, torch.ones(chunks * frames), {"tag": tag}, chunks, settings, entries=entries)
    out = out.reshape(chunks, frames)
    assert out[0, :4].tolist() == out[1, :4].tolist() == [10.0] * 4      # only the first window holds them
    assert out[0, -4:].tolist() == out[1, -4:].tolist() == [20.0] * 4    # only the last window
    assert out[2].tolist() == [30.0] * frames and ran == [3, 3, 3]  # the batch keeps its cond/uncond layout
    unsplit = windowed_rows(run, x, torch.ones(chunks * frames), {"tag": tag}, chunks,
                            ContextWindows(6, 2, causal_window_fix=False), entries=entries)
    torch.testing.assert_close(unsplit, tag)


def test_spatial_windows_cut_the_latent_and_its_conditioning_along_width():
    x = torch.randn(2 * 3, 4, 5, 10, generator=torch.Generator().manual_seed(2))
    concat = torch.randn(6, 4, 5, 10, generator=torch.Generator().manual_seed(3))
    widths = []

    def run(xr, sr, args, window_frames):
        widths.append((xr.shape[-1], args["concat"].shape[-1], window_frames))
        return torch.tanh(xr) + args["concat"]
    plain = torch.tanh(x) + concat
    whole = windowed_spatial(run, x, torch.ones(6), {"concat": concat}, 2, ContextWindows(10, 2, dim=3))
    assert torch.equal(whole, plain)
    fused = windowed_spatial(run, x, torch.ones(6), {"concat": concat}, 2, ContextWindows(6, 2, dim=3))
    torch.testing.assert_close(fused, plain)
    assert widths[1:] == [(6, 6, None), (7, 7, None)]   # the second strip with its causal anchor column


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
