"""The motion bench's metrics on clips whose motion is known (OpenCV does the measuring)."""
import numpy as np
import pytest

from vidgraph.nodes.svd.moving_shapes import SceneConfig, make_clip

CFG = SceneConfig(width=64, height=64)


def test_tracks_displacement_and_direction_follow_the_truth(metrics):
    clip = make_clip(5, CFG, motion_bucket_id=220, fps=6, camera=False, objects=1)
    obj = clip.objects[0]
    track = metrics.track_objects(clip.frames)[obj.colour]
    assert metrics.object_kept(track)
    truth = np.hypot(*(obj.centres[-1] - obj.centres[0]))
    assert metrics.displacement(track) == pytest.approx(truth, abs=1.0)
    truth_deg = np.degrees(np.arctan2(obj.velocity[1], obj.velocity[0]))
    assert metrics.angle_error(metrics.direction(track), truth_deg) < 5


def test_a_vanished_or_recoloured_object_is_not_kept(metrics):
    clip = make_clip(5, CFG, camera=False, objects=1)
    colour = clip.objects[0].colour
    frames = clip.frames.copy()
    frames[-1] = frames[-1, :1, :1]  # the last frame: background colour everywhere
    assert not metrics.object_kept(metrics.track_objects(frames, colours=[colour])[colour])


def test_objmc_is_zero_on_the_requested_path_and_grows_with_the_miss(metrics):
    clip = make_clip(9, CFG, camera=False, objects=1)
    obj = clip.objects[0]
    track = metrics.track_objects(clip.frames)[obj.colour]
    assert metrics.objmc(track, obj.centres) < 0.7
    assert metrics.objmc(track, obj.centres + [6.0, 8.0]) == pytest.approx(10.0, abs=0.7)


def textured_scene(size=96, seed=0):
    import cv2
    noise = np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


@pytest.mark.parametrize("step", [(2, 0), (0, -3), (-2, 2), (3, 1)])
def test_global_flow_follows_a_pan(metrics, step):
    scene = textured_scene()
    frames = np.stack([np.roll(scene, (t * step[1], t * step[0]), axis=(0, 1))[16:80, 16:80] for t in range(6)])
    flow = metrics.global_flow(np.clip(frames, 0, 255).astype(np.uint8))
    assert metrics.angle_error(flow["direction_deg"], np.degrees(np.arctan2(step[1], step[0]))) < 10
    assert flow["mean_vector_px"] == pytest.approx(np.hypot(*step), rel=0.25)
    assert abs(flow["divergence"]) < 0.02


@pytest.mark.parametrize("rate", [1.04, 0.96])
def test_flow_divergence_tells_zoom_in_from_zoom_out(metrics, rate):
    import cv2
    scene = textured_scene()
    frames = []
    for t in range(6):
        z = rate ** t
        m = np.float32([[z, 0, 48 * (1 - z)], [0, z, 48 * (1 - z)]])  # magnify by z about the centre
        frames.append(cv2.warpAffine(scene, m, (96, 96))[16:80, 16:80])
    divergence = metrics.global_flow(np.clip(np.stack(frames), 0, 255).astype(np.uint8))["divergence"]
    assert np.sign(divergence) == np.sign(rate - 1) and abs(divergence) > 0.01  # Farneback smooths it down


def test_change_inside_and_outside_a_mask(metrics):
    clip = make_clip(2, CFG, camera=False)
    mask = metrics.object_mask(clip)
    assert 0.02 < mask.mean() < 0.9
    inside, outside = metrics.change_inside_outside(clip.frames, mask)
    assert inside > 5 and outside < 0.2


def test_colour_drift_flicker_and_warp_error(metrics):
    clip = make_clip(4, CFG, camera=False)
    frames = clip.frames
    assert metrics.colour_drift(frames, 4) == [pytest.approx(0.0, abs=0.5)]
    tinted = frames.copy().astype(int)
    tinted[4:, ..., 0] += 40
    assert metrics.colour_drift(np.clip(tinted, 0, 255).astype(np.uint8), 4)[0] > 5
    pumped = frames.astype(int)
    pumped[1::2] += 30
    assert metrics.flicker(np.clip(pumped, 0, 255).astype(np.uint8)) > 5 * metrics.flicker(frames) + 1
    noisy = np.clip(frames + np.random.default_rng(0).normal(0, 25, frames.shape), 0, 255).astype(np.uint8)
    assert metrics.warp_error(noisy) > metrics.warp_error(frames)


def test_spearman_and_circular_spread(metrics):
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert metrics.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert np.isnan(metrics.spearman([1, 2, 3, 4], [0, 0, 0, 0]))  # nothing measured: no ordering
    assert metrics.circular_spread([10, 10, 10])["R"] == pytest.approx(1.0)
    assert metrics.circular_spread([0, 90, 180, 270])["R"] < 1e-9


def test_the_summary_says_where_objects_are_lost(motion):
    def row(objects, kept):
        return {"objects": objects, "found_first": objects, "kept_share": kept / objects, "all_kept": kept == objects,
                "median_move": 0.2, "mean_speed": 0.03, "directions": [], "direction_error_vs_truth": []}

    summary = motion.summarise([row(1, 1), row(3, 2), row(3, 3), row(2, 1)])
    assert summary["objects_kept"] == 0.5
    assert summary["objects_kept_per_object"] == 7 / 9
    assert summary["objects_kept_by_count"] == {1: 1.0, 2: 0.0, 3: 0.5}
