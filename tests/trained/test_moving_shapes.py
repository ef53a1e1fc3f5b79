"""The procedural clips: deterministic, objects inside the frame, ground truth that matches the pixels,
and SVD's knobs (motion bucket, fps) meaning what they say."""
import numpy as np
import pytest

from vidgraph.nodes.svd.moving_shapes import (MAX_BUCKET, PALETTE, SHAPE_EXTENT, SHAPE_GAP, SceneConfig,
                                              bucket_for_speed, make_clip, object_coverage, speed_for_bucket)


def test_same_seed_same_clip_other_seed_other_clip():
    a, b, c = make_clip(7), make_clip(7), make_clip(8)
    assert np.array_equal(a.frames, b.frames)
    assert [o.colour for o in a.objects] == [o.colour for o in b.objects]
    assert not np.array_equal(a.frames, c.frames)


def test_shape_and_knobs_of_a_clip():
    clip = make_clip(3, SceneConfig(width=40, height=32, frames=5), motion_bucket_id=200, fps=7)
    assert clip.frames.shape == (5, 32, 40, 3) and clip.frames.dtype == np.uint8
    assert (clip.motion_bucket_id, clip.fps) == (200, 7)
    assert 1 <= len(clip.objects) <= 3
    assert len({o.colour for o in clip.objects}) == len(clip.objects), "colours are distinct"


@pytest.mark.parametrize("seed", range(40))
def test_objects_stay_inside_the_frame(seed):
    cfg = SceneConfig()
    clip = make_clip(seed, cfg)
    for obj in clip.objects:
        assert (obj.centres - obj.radii[:, None] >= 0).all()
        assert (obj.centres[:, 0] + obj.radii <= cfg.width).all()
        assert (obj.centres[:, 1] + obj.radii <= cfg.height).all()


def test_shapes_never_touch_in_any_frame():
    """Kept apart by more than their extents plus SHAPE_GAP in every frame, whatever the speed or
    camera, so no shape hides another and each colour is one whole object in every frame."""
    closest = []
    for seed in range(150):
        clip = make_clip(seed, SceneConfig(), motion_bucket_id=255 if seed % 2 else None)
        for i, a in enumerate(clip.objects):
            for b in clip.objects[i + 1:]:
                gap = np.hypot(*(a.centres - b.centres).T) - (a.radii + b.radii) * SHAPE_EXTENT
                closest.append(gap.min())
    assert len(closest) > 100
    assert min(closest) >= SHAPE_GAP * 0.9  # zooming out shrinks gaps a little


def test_the_ground_truth_is_where_the_colours_are(metrics):
    for seed in range(12):
        clip = make_clip(seed, SceneConfig(width=64, height=64), camera=False)
        tracks = metrics.track_objects(clip.frames, colours=[o.colour for o in clip.objects])
        for obj in clip.objects:
            found = tracks[obj.colour].found
            # overlapping shapes may hide one another in some frames; where seen, it is where the truth says
            assert found.mean() > 0.5
            err = np.hypot(*(tracks[obj.colour].centres[found] - obj.centres[found]).T)
            assert np.median(err) < 1.0, (seed, obj.colour, err)


def test_object_coverage_is_where_the_shapes_were_drawn(metrics):
    for seed in range(12):
        clip = make_clip(seed, SceneConfig(), camera=bool(seed % 2))
        coverage = object_coverage(clip)
        assert coverage.shape == clip.frames.shape[:3] and 0 <= coverage.min() and coverage.max() <= 1
        coloured = np.zeros_like(coverage, bool)
        for f, frame in enumerate(clip.frames):
            for obj in clip.objects:
                x, y = np.round(obj.centres[f] - 0.5).astype(int)
                assert coverage[f, y, x] == 1, (seed, f, obj.colour)
                coloured[f] |= metrics.colour_mask(frame, obj.colour) > 0
        # the shapes' colours are inside the covered pixels; the background (the rest) is not covered
        assert coverage[coloured].min() > 0
        assert (coverage > 0).mean() < 2 * coloured.mean()


def test_bucket_sets_the_speed_and_fps_divides_it_per_frame():
    assert bucket_for_speed(speed_for_bucket(127)) == 127
    assert bucket_for_speed(speed_for_bucket(MAX_BUCKET) * 2) == MAX_BUCKET and bucket_for_speed(0) == 1
    cfg = SceneConfig(width=64, height=64, max_objects=1, min_objects=1)

    def per_frame(bucket, fps):
        steps = []
        for seed in range(20):
            obj = make_clip(seed, cfg, motion_bucket_id=bucket, fps=fps, camera=False).objects[0]
            steps.append(np.hypot(*obj.velocity))
        return np.mean(steps)

    slow, fast = per_frame(40, 6), per_frame(200, 6)
    assert fast / slow == pytest.approx(5.0, rel=0.1)
    assert per_frame(200, 6) / per_frame(200, 8) == pytest.approx(8 / 6, rel=0.1)
    # mean per-frame displacement is the bucket's speed (widths/s) divided by the frame rate
    assert per_frame(200, 6) == pytest.approx(speed_for_bucket(200) / 6 * 64, rel=0.1)


def test_camera_moves_are_recorded_and_move_the_background(metrics):
    moved = [make_clip(seed, camera=True, motion_bucket_id=200) for seed in range(6)]
    assert all(c.camera.moves for c in moved)
    still = make_clip(1, camera=False)
    assert not still.camera.moves
    for clip in moved:
        mask = np.ones(clip.frames.shape[1:3], bool)
        for obj in clip.objects:
            ys, xs = np.mgrid[0:mask.shape[0], 0:mask.shape[1]] + 0.5
            for (x, y), r in zip(obj.centres, obj.radii):
                mask &= np.hypot(xs - x, ys - y) > r + 2
        background_change = np.abs(clip.frames[-1].astype(int) - clip.frames[0].astype(int)).mean(-1)[mask].mean()
        assert background_change > 0.5


def test_backgrounds_never_pass_for_an_object_colour(metrics):
    for seed in range(30):
        clip = make_clip(seed, SceneConfig(min_objects=1, max_objects=1))
        present = [c for c in PALETTE if metrics.find_object(clip.frames[0], c, 5) is not None]
        assert present == [clip.objects[0].colour]
