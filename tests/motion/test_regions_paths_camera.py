"""The exactly-testable parts of motion control: mask feathering, trajectory inputs, camera warps."""
import math

import pytest
import torch

from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.motion import brush, camera, masks, trajectories
from vidgraph.nodes.motion.nodes import MotionBrushComposite
from vidgraph.nodes.motion.camera import Pose


# ---------------------------------------------------------------- masks

@pytest.mark.parametrize("width", [1, 2, 3, 4, 7, 8])
def test_feather_turns_a_straight_edge_into_a_linear_ramp_centred_on_it(width):
    mask = torch.zeros(1, 4, 40)
    mask[..., :20] = 1.0                     # edge between pixel 19 and 20 (x = 20.0)
    row = masks.feather(mask, width)[0, 0]
    centres = torch.arange(40) + 0.5
    expected = ((20.0 - centres) / width + 0.5).clamp(0, 1)
    assert torch.allclose(row, expected, atol=1e-6)
    assert torch.allclose(masks.feather(mask, width)[0], row.expand(4, -1))  # uniform along y


def test_feather_zero_is_the_mask_and_border_regions_do_not_fade():
    mask = torch.zeros(2, 16, 16)
    mask[:, :8, :] = 1.0                      # touches the top, left and right borders
    assert torch.equal(masks.feather(mask, 0), mask)
    soft = masks.feather(mask, 6)
    assert torch.all(soft[:, 0, :] == 1.0) and torch.all(soft[:, -1, :] == 0.0)
    assert soft.shape == mask.shape and soft.min() >= 0 and soft.max() <= 1


def test_mask_resampled_to_a_latent_is_the_mean_of_each_cell_and_frames_are_matched_in_order():
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :4] = 1.0                      # half of the first column of 8x8 cells
    cells = masks.resample(mask, 2, 2)
    assert torch.allclose(cells, torch.tensor([[[0.5, 0.0], [0.5, 0.0]]]))
    batch = torch.arange(3.0)[:, None, None].expand(3, 2, 2)
    assert masks.per_frame(batch, 5)[:, 0, 0].tolist() == [0, 1, 2, 2, 2]
    assert masks.per_frame(batch[:1], 4).shape == (4, 2, 2)
    with pytest.raises(ValueError, match="MASK"):
        masks.as_mask_batch(torch.zeros(2, 2, 2, 2))


def moving_frames(frames=4, size=16):
    return torch.rand(frames, size, size, 3, generator=torch.Generator().manual_seed(5))


def test_composite_holds_the_first_frame_exactly_outside_the_mask_and_leaves_the_inside():
    images = moving_frames()
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0
    (out,) = MotionBrushComposite().hold(images, mask, 1.0, 0)
    assert torch.equal(out[:, :, 8:], images[:1, :, 8:].expand(4, -1, -1, -1))
    assert torch.equal(out[:, :, :8], images[:, :, :8])
    assert torch.equal(out[0], images[0])


def test_composite_feathers_like_the_brush_and_strength_holds_part_way():
    images = moving_frames()
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0
    free = masks.feather(mask, 4)[0, 0]                # the brush's ramp: 0.5 on the edge
    out = brush.hold_pixels(images, mask, 1.0, 4)
    expected = images[2, 0] * free[:, None] + images[0, 0] * (1 - free[:, None])
    assert torch.allclose(out[2, 0], expected, atol=1e-6)
    half = brush.hold_pixels(images, mask, 0.5, 0)
    assert torch.allclose(half[3, :, :8], (images[3, :, :8] + images[0, :, :8]) / 2, atol=1e-6)


def test_composite_holds_frame_t_to_a_reference_batch_and_resamples_a_mask_of_another_size():
    images, plan = moving_frames(), moving_frames(frames=4, size=16).flip(0)
    mask = torch.zeros(1, 32, 32)
    mask[:, :16] = 1.0                                 # top half, drawn at twice the frames' size
    out = brush.hold_pixels(images, mask, 1.0, 0, plan)
    assert torch.equal(out[:, 8:], plan[:, 8:]) and torch.equal(out[:, :8], images[:, :8])
    one = brush.hold_pixels(images, mask, 1.0, 0, plan[:1])   # one reference image serves every frame
    assert torch.equal(one[3, 8:], plan[0, 8:])


def test_composite_names_the_input_it_cannot_use():
    images = moving_frames()
    with pytest.raises(NodeInputError, match=r"MotionBrushComposite: input 'reference'.*\[8, 8, 3\].*\[16, 16, 3\]"):
        MotionBrushComposite().hold(images, torch.ones(1, 16, 16), 1.0, 0, torch.zeros(1, 8, 8, 3))
    with pytest.raises(NodeInputError, match="MotionBrushComposite: input 'images'"):
        MotionBrushComposite().hold(torch.zeros(16, 16, 3), torch.ones(1, 16, 16), 1.0, 0)
    with pytest.raises(NodeInputError, match="MotionBrushComposite: input 'mask'"):
        MotionBrushComposite().hold(images, torch.ones(1, 1, 16, 16), 1.0, 0)


# ---------------------------------------------------------------- trajectories

def test_kjnodes_spline_coordinates_in_python_repr_and_json_give_the_same_tracks():
    repr_text = "[{'x': 10, 'y': 20}, {'x': 30, 'y': 20}, {'x': 50, 'y': 40}]"
    json_text = '[{"x": 10, "y": 20}, {"x": 30, "y": 20}, {"x": 50, "y": 40}]'
    a = trajectories.tracks_from_spline(repr_text, 100, 50, 20, 10)
    b = trajectories.tracks_from_spline(json_text, 100, 50, 20, 10)
    assert a == b and len(a) == 1
    assert a[0].path == ((0.1, 0.4), (0.3, 0.4), (0.5, 0.8))
    assert a[0].box == pytest.approx((0.0, 0.3, 0.2, 0.5))


def test_several_splines_give_several_tracks():
    text = '[[{"x": 0, "y": 0}, {"x": 10, "y": 0}], [{"x": 5, "y": 5}, {"x": 5, "y": 15}]]'
    tracks = trajectories.tracks_from_spline(text, 20, 20, 4, 4)
    assert [t.path[-1] for t in tracks] == [(0.5, 0.0), (0.25, 0.75)]


def test_paths_are_resampled_by_point_index_and_boxes_move_with_the_centre():
    track = trajectories.tracks_from_json('[{"box": [0, 0, 20, 10], "path": [[10, 5], [30, 5], [30, 25]]}]', 100, 100)[0]
    centres = track.centres(5)
    assert torch.allclose(torch.tensor(centres), torch.tensor([(0.1, 0.05), (0.2, 0.05), (0.3, 0.05), (0.3, 0.15), (0.3, 0.25)]))
    assert track.boxes(5)[-1] == pytest.approx((0.2, 0.2, 0.4, 0.3))
    assert trajectories.resample([(1, 2)], 3) == [(1.0, 2.0)] * 3
    assert trajectories.resample([(0, 0), (4, 8)], 1) == [(0.0, 0.0)]
    # cell boxes: a 20x10 pixel box on a 100x100 image is 2x1 cells of a 10x10 grid
    assert trajectories.cell_boxes(track, 5, 10, 10)[0] == (0, 0, 1, 2)
    assert trajectories.cell_boxes(track, 5, 10, 10)[-1] == (2, 2, 3, 4)


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("not json", "neither JSON"), ("[]", "non-empty"),
    ('[{"x": 1}]', "point must be"), ('[{"x": "a", "y": 2}]', "numbers"),
])
def test_bad_spline_coordinates_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        trajectories.tracks_from_spline(text, 64, 64, 8, 8)


def test_bad_tracks_json_and_boxes_outside_the_image_are_refused():
    with pytest.raises(ValueError, match="box has no area"):
        trajectories.tracks_from_json('[{"box": [5, 5, 5, 9]}]', 10, 10)
    with pytest.raises(ValueError, match="box"):
        trajectories.tracks_from_json('[{"path": [[1, 1]]}]', 10, 10)
    outside = trajectories.tracks_from_json('[{"box": [20, 20, 30, 30]}]', 10, 10)
    with pytest.raises(ValueError, match="outside the image"):
        trajectories.check_tracks(outside)


def test_gaussian_heatmap_peaks_at_the_box_centre_and_is_symmetric():
    heat = trajectories.gaussian_heatmap(5, 7, 0.4)
    assert heat.shape == (5, 7) and heat.max() == 1.0 and heat[2, 3] == 1.0
    assert torch.allclose(heat, heat.flip(0)) and torch.allclose(heat, heat.flip(1))
    assert heat[2, 0] < heat[2, 2]


# ---------------------------------------------------------------- camera

def affine_image(h, w, a=0.7, b=-0.3, c=5.0):
    """I(x, y) = a x + b y + c at pixel centres: bilinear sampling reproduces it exactly."""
    y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return (a * x + b * y + c)[None, :, :, None].expand(1, h, w, 3).float()


def test_whole_pixel_pans_move_pixels_exactly():
    image = torch.rand(1, 12, 16, 3)
    frames, valid = camera.warp_image(image, [Pose(), Pose(pan_x=3 / 16, pan_y=-2 / 12)])
    assert torch.allclose(frames[0], image[0], atol=1e-6)
    # camera right by 3 px and up by 2 px: output (x, y) shows source (x + 3, y - 2)
    assert torch.allclose(frames[1, 2:, :13], image[0, :10, 3:], atol=1e-5)
    assert valid[1, 2:, :13].min() == 1 and valid[1, :2].max() == 0 and valid[1, :, 13:].max() == 0


@pytest.mark.parametrize("pose", [Pose(zoom=2.0), Pose(zoom=0.8, roll=30.0), Pose(pan_x=0.1, zoom=1.3, roll=-12.5)])
def test_zoom_and_roll_are_exact_on_an_affine_image(pose):
    a, b, c = 0.7, -0.3, 5.0
    frames, valid = camera.warp_image(affine_image(32, 48, a, b, c), [pose])
    s = camera.source_grid(pose, 32, 48)
    expected = (a * s[..., 0] + b * s[..., 1] + c).float()
    inside = (s[..., 0] > 0.5) & (s[..., 0] < 47.5) & (s[..., 1] > 0.5) & (s[..., 1] < 31.5)
    assert inside.sum() > 200
    assert torch.allclose(frames[0, ..., 0][inside], expected[inside], atol=1e-4)
    assert torch.equal(valid[0].bool() | ~inside, torch.ones_like(inside))


def test_zoom_in_magnifies_about_the_centre_and_roll_turns_the_content_counterclockwise():
    s = camera.source_grid(Pose(zoom=2.0), 8, 8)
    assert s[0, 0].tolist() == [2.25, 2.25] and s[4, 4].tolist() == [4.25, 4.25]
    image = torch.zeros(1, 9, 9, 1)
    image[0, 4, 8] = 1.0                                    # a dot right of the centre
    out, _ = camera.warp_image(image, [Pose(roll=90.0)])
    # the camera rolls clockwise by 90 degrees: the dot appears above the centre
    assert out[0, 0, 4, 0] == pytest.approx(1.0, abs=1e-5)
    assert out[0, ..., 0].sum() == pytest.approx(1.0, abs=1e-4)


def test_zoom_out_leaves_a_border_marked_invalid():
    _, valid = camera.warp_image(torch.rand(1, 16, 16, 3), [Pose(zoom=0.5)])
    assert valid[0, 4:12, 4:12].min() == 1 and valid[0, :3].max() == 0 and valid[0].sum() == 64


def test_presets_easing_and_keyframes():
    path = camera.preset_path("pan right", 2.0, 5)
    assert [p.pan_x for p in path] == pytest.approx([0, 0.125, 0.25, 0.375, 0.5])
    zoom = camera.preset_path("zoom in", 1.0, 3)
    assert [p.zoom for p in zoom] == pytest.approx([1.0, math.sqrt(1.5), 1.5])
    eased = camera.path_to(Pose(pan_x=1.0), 5, "ease_in_out")
    assert eased[0].pan_x == 0 and eased[2].pan_x == pytest.approx(0.5) and eased[1].pan_x < 0.25
    keys = camera.keyframed_path('[{"frame": 1, "zoom": 2}, {"frame": 3, "pan_x": 0.4}]', 6)
    assert [p.zoom for p in keys] == pytest.approx([2, 2, 2, 2, 2, 2])
    assert [p.pan_x for p in keys] == pytest.approx([0, 0, 0.2, 0.4, 0.4, 0.4])


@pytest.mark.parametrize("text, message", [
    ('[{"zoom": 2}]', "frame"), ('[{"frame": 0, "zoom": 0}]', "positive"),
    ('[{"frame": 0, "tilt": 1}]', "unknown keys"), ('[{"frame": 0}, {"frame": 0}]', "same frame"),
    ('[{"frame": -1}]', "whole number"), ('{"frame": 0}', "non-empty list"),
])
def test_bad_keyframes_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        camera.keyframed_path(text, 4)


def test_shapes_rasterise_to_the_pixels_they_cover():
    mask = masks.rasterize([{"type": "rect", "x0": 2, "y0": 1, "x1": 6, "y1": 4}], 8, 6)
    expected = torch.zeros(1, 6, 8)
    expected[0, 1:4, 2:6] = 1.0
    assert torch.equal(mask, expected)
    erased = masks.rasterize([{"type": "rect", "x0": 0, "y0": 0, "x1": 8, "y1": 6},
                              {"type": "ellipse", "x0": 2, "y0": 1, "x1": 6, "y1": 5, "erase": True}], 8, 6)
    assert erased[0, 3, 3] == 0 and erased[0, 0, 0] == 1
    stroke = masks.rasterize([{"type": "stroke", "points": [[2, 10], [18, 10]], "radius": 2}], 20, 20)
    assert stroke[0, 10, 2:18].min() == 1 and stroke[0, 5].max() == 0 and stroke[0, 10, 0] == 1
    tri = masks.rasterize([{"type": "polygon", "points": [[0, 0], [9, 0], [0, 9]]}], 10, 10)
    assert tri[0, 1, 1] == 1 and tri[0, 8, 8] == 0
    for bad in ([{"type": "blob"}], [{"type": "rect", "x0": 1}], [{"type": "polygon", "points": [[0, 0]]}], {}):
        with pytest.raises(ValueError):
            masks.rasterize(bad, 8, 8)


def test_drawn_tracks_show_the_box_at_each_frame_and_the_path_so_far():
    from vidgraph.nodes.motion.overlay import COLOURS, draw_tracks
    track = trajectories.tracks_from_json('[{"box": [4, 4, 12, 12], "path": [[8, 8], [40, 8]]}]', 64, 32)[0]
    out = draw_tracks(torch.zeros(1, 32, 64, 3), [track], count=3)
    assert out.shape == (3, 32, 64, 3)
    red = torch.tensor(COLOURS[0]) / 255.0

    def is_red(frame, y, x):
        return torch.allclose(out[frame, y, x], red)
    assert is_red(0, 4, 4) and not is_red(0, 4, 20)        # frame 0: the box where it starts
    assert is_red(2, 4, 36) and not is_red(2, 4, 4)        # last frame: the box has moved 32 px right
    assert is_red(2, 8, 24) and not is_red(0, 8, 24)       # the path so far is drawn


def test_depth_gives_parallax_near_pixels_pan_further_and_flat_depth_changes_nothing():
    image = affine_image(16, 32)
    pose = Pose(pan_x=2 / 32)
    flat = camera.nearness_from_depth(torch.full((1, 16, 32, 3), 0.4), 16, 32, 1.0)
    assert torch.allclose(flat, torch.ones(16, 32))
    assert torch.allclose(camera.warp_image(image, [pose], flat)[0], camera.warp_image(image, [pose])[0])
    depth = torch.zeros(1, 16, 32)
    depth[:, 8:] = 1.0                                     # the bottom half is near
    q = camera.nearness_from_depth(depth, 16, 32, 1.0)
    assert q[0, 0] == pytest.approx(0.5) and q[-1, 0] == pytest.approx(1.5)
    s = camera.source_grid(pose, 16, 32, q)
    u = torch.arange(32, dtype=torch.float64) + 0.5
    assert torch.allclose(s[0, :, 0], u + 1.0, atol=1e-9) and torch.allclose(s[-1, :, 0], u + 3.0, atol=1e-9)
    zoomed = camera.source_grid(Pose(zoom=2.0), 16, 32, q)
    # near pixels zoom by 2 ** 1.5, far ones by 2 ** 0.5: near content grows more
    assert float(zoomed[-1, 0, 0]) == pytest.approx(16 - 15.5 / 2 ** 1.5)
    assert float(zoomed[0, 0, 0]) == pytest.approx(16 - 15.5 / 2 ** 0.5)


# ---------------------------------------------------------------- trajectory plan (TrajectoryWarpImage)

def _square_on_grey(h=32, w=48, box=(8, 8, 16, 16)):
    """A flat grey image with a red square at box (x0, y0, x1, y1) pixels."""
    image = torch.full((1, h, w, 3), 0.5)
    x0, y0, x1, y1 = box
    image[0, y0:y1, x0:x1] = torch.tensor([1.0, 0.0, 0.0])
    return image


def test_plan_moves_the_box_content_along_its_path_by_whole_pixels_exactly():
    from vidgraph.nodes.motion import trajectory_plan
    h, w = 32, 48
    image = _square_on_grey(h, w)
    track = trajectories.Track((8 / w, 8 / h, 16 / w, 16 / h), ((12 / w, 12 / h), (32 / w, 20 / h)))
    frames, valid = trajectory_plan.plan_frames(image, [track], 5, feather=0)
    assert frames.shape == (5, h, w, 3) and valid.shape == (5, h, w)
    assert torch.allclose(frames[0], image[0], atol=1e-5)          # frame 1 is the start image
    last = frames[-1]
    assert torch.allclose(last[16:24, 28:36], torch.tensor([1.0, 0.0, 0.0]).expand(8, 8, 3), atol=1e-5)
    # where the square was, the grey around it is filled in; the rest of the frame is untouched
    assert torch.allclose(last[8:16, 8:16], torch.full((8, 8, 3), 0.5), atol=2 / 255)
    assert torch.allclose(last[:, 40:], image[0, :, 40:], atol=1e-5)
    # valid: where it went and where it left, nothing else
    assert valid[-1, 16:24, 28:36].min() > 1 - 1e-5 and valid[-1, 8:16, 8:16].min() == 1
    assert abs(float(valid[-1].sum()) - 2 * 64) < 1e-3
    mid = frames[2]                                               # half-way: (22, 16) -> box x 18..26, y 12..20
    assert torch.allclose(mid[12:20, 18:26], torch.tensor([1.0, 0.0, 0.0]).expand(8, 8, 3), atol=1e-5)


def test_plan_feathers_the_box_edge_and_a_still_path_changes_nothing():
    from vidgraph.nodes.motion import trajectory_plan
    h, w = 32, 48
    mask = trajectory_plan.box_mask((8 / w, 8 / h, 16 / w, 16 / h), h, w, feather=4)
    assert mask[12, 8] == 1 and mask[12, 15] == 1 and mask[12, 3] == 0
    assert 0 < mask[12, 5] < mask[12, 6] < mask[12, 7] < 1      # a ramp outside the edge
    image = _square_on_grey(h, w)
    still = trajectories.Track((8 / w, 8 / h, 16 / w, 16 / h), ((12 / w, 12 / h),))
    frames, _ = trajectory_plan.plan_frames(image, [still], 3, feather=2)
    assert torch.allclose(frames, image.expand(3, -1, -1, -1), atol=1e-5)
    frames, valid = trajectory_plan.plan_frames(image, [], 3)
    assert torch.equal(frames, image.expand(3, -1, -1, -1)) and not valid.any()


def test_trajectory_warp_node_checks_its_inputs():
    from vidgraph.nodes.common import NodeInputError
    from vidgraph.nodes.motion import nodes
    (tracks,) = nodes.TrajectoriesFromJSON().convert('[{"box": [8, 8, 16, 16], "path": [[12, 12], [30, 12]]}]', 48, 32)
    frames, valid = nodes.TrajectoryWarpImage().warp(_square_on_grey(), tracks, 4, 2)
    assert frames.shape == (4, 32, 48, 3) and valid.shape == (4, 32, 48)
    with pytest.raises(NodeInputError, match="TrajectoryWarpImage: input 'trajectories'"):
        nodes.TrajectoryWarpImage().warp(_square_on_grey(), "nope", 4, 2)
    with pytest.raises(NodeInputError, match="TrajectoryWarpImage: input 'image'"):
        nodes.TrajectoryWarpImage().warp(torch.rand(8, 8), tracks, 4, 2)
