"""SVDExtendClip / SVDLongClip: the overlap is pinned and cross-faded, colours pulled to the first
segment, loops close on the first frames, and N seconds give N x fps frames."""
import numpy as np
import pytest
import torch

from vidgraph.engine.nodecall import materialized
from vidgraph.nodes import extension
from vidgraph.nodes.common import NodeInputError
from vidgraph.nodes.extension import (SVDExtendClip, SVDLongClip, colour_stats, match_colours, segments_for)
from vidgraph.nodes.vae_coding import encode_pixels

SEGMENT = dict(video_frames=5, overlap_frames=2, motion_bucket_id=127, fps=6, augmentation_level=0.0, seed=3,
               steps=2, cfg=2.0, sampler_name="euler", scheduler="karras", color_match=1.0, reanchor=0.5, loop=False,
               condition_on="anchor image")


def test_colour_matching_moves_lab_statistics_to_the_reference():
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(3, 16, 16, 3, generator=generator) * 0.5 + 0.25
    drifted = (reference * torch.tensor([1.2, 0.9, 0.7]) + 0.05).clamp(0, 1)
    target = colour_stats(reference)
    matched = match_colours(drifted, target, 1.0)
    mean, std = colour_stats(matched)
    assert np.abs(mean - target[0]).max() < 1.0 and np.abs(std - target[1]).max() < 1.0
    assert np.abs(colour_stats(drifted)[0] - target[0]).max() > 3.0  # it had drifted
    half_mean = colour_stats(match_colours(drifted, target, 0.5))[0]
    assert np.abs(half_mean - (colour_stats(drifted)[0] + target[0]) / 2).max() < 1.0
    assert match_colours(drifted, target, 0.0) is drifted


def test_segments_for_a_length():
    assert segments_for(14, 14, 4) == 1
    assert segments_for(15, 14, 4) == 2 and segments_for(24, 14, 4) == 2 and segments_for(25, 14, 4) == 3
    assert segments_for(120, 25, 4) == 6  # 25 + 5 x 21 = 130 >= 120


def clip_frames(count=6, size=64):
    t = torch.linspace(0, 1, count).reshape(count, 1, 1, 1)
    x = torch.linspace(0, 1, size).reshape(1, 1, size, 1)
    return (0.3 + 0.4 * x * (1 - t) + 0.2 * t).expand(count, size, size, 3).contiguous()


def test_extension_pins_the_overlap_and_keeps_the_clip(tiny_models, monkeypatch):
    monkeypatch.setattr(extension, "PIN_UNTIL", 1.0)   # pinned to the end: the overlap lands on the clip's latents
    context = tiny_models.env.context()
    sampled = []
    real_sample = extension.sample

    def spy(*args, **kwargs):
        out = real_sample(*args, **kwargs)
        sampled.append(out["samples"])
        return out
    monkeypatch.setattr(extension, "sample", spy)
    clip = clip_frames()
    (out,) = SVDExtendClip().extend(clip, context, model=tiny_models.model, clip_vision=tiny_models.clip_vision,
                                    vae=tiny_models.vae, **SEGMENT)
    out = materialized(out)
    assert out.shape == (6 + 5 - 2, 64, 64, 3)
    assert torch.equal(out[:4], clip[:4])  # the clip before the overlap is untouched
    assert torch.isfinite(out).all() and float(out.min()) >= 0 and float(out.max()) <= 1
    known = encode_pixels(tiny_models.vae, clip[-2:], context)
    torch.testing.assert_close(sampled[0][:2], known, atol=1e-4, rtol=1e-4)  # pinned frames sampled to the clip's


def test_loop_ends_on_the_first_frames_and_drops_them(tiny_models, monkeypatch):
    monkeypatch.setattr(extension, "PIN_UNTIL", 1.0)
    context = tiny_models.env.context()
    sampled = []
    real_sample = extension.sample
    monkeypatch.setattr(extension, "sample", lambda *a, **k: sampled.append(real_sample(*a, **k)) or sampled[-1])
    clip = clip_frames()
    (out,) = SVDExtendClip().extend(clip, context, model=tiny_models.model, clip_vision=tiny_models.clip_vision,
                                    vae=tiny_models.vae, **{**SEGMENT, "loop": True})
    assert materialized(out).shape[0] == 6 + 5 - 2 * 2
    head = encode_pixels(tiny_models.vae, clip[:2], context)
    torch.testing.assert_close(sampled[0]["samples"][-2:], head, atol=1e-4, rtol=1e-4)


def test_the_overlap_is_pinned_over_the_high_noise_steps_only(tiny_models, monkeypatch):
    """By default the pins act down to PIN_UNTIL of the schedule; the model finishes the seam itself."""
    from vidgraph.nodes.model import Model
    scopes = []
    real_add = Model.add_post_cfg

    def spy(self, fn, sigma_range=None, **kwargs):
        scopes.append(sigma_range)
        return real_add(self, fn, sigma_range, **kwargs)
    monkeypatch.setattr(Model, "add_post_cfg", spy)
    context = tiny_models.env.context()
    SVDExtendClip().extend(clip_frames(), context, model=tiny_models.model, clip_vision=tiny_models.clip_vision,
                           vae=tiny_models.vae, **SEGMENT)
    sampling = tiny_models.model.sampling
    assert 0 < extension.PIN_UNTIL < 1
    assert scopes == [(sampling.percent_to_sigma(0.0), sampling.percent_to_sigma(extension.PIN_UNTIL))]


def test_bad_settings_name_the_input(tiny_models):
    context = tiny_models.env.context()
    models = dict(model=tiny_models.model, clip_vision=tiny_models.clip_vision, vae=tiny_models.vae)
    with pytest.raises(NodeInputError, match="^SVDExtendClip: input 'overlap_frames'"):
        SVDExtendClip().extend(clip_frames(), context, **models, **{**SEGMENT, "overlap_frames": 5})
    with pytest.raises(NodeInputError, match="^SVDExtendClip: input 'model'"):
        SVDExtendClip().extend(clip_frames(), context, **{**models, "model": "x"}, **SEGMENT)
    with pytest.raises(NodeInputError, match="^SVDLongClip: input 'init_image'.*multiples of 8"):
        SVDLongClip().generate(torch.zeros(1, 60, 64, 3), 1.0, context, **models, **SEGMENT)
    with pytest.raises(NodeInputError, match="^SVDExtendClip: input 'images'.*multiples of 8"):
        SVDExtendClip().extend(torch.zeros(6, 60, 64, 3), context, **models, **SEGMENT)


def test_a_clip_of_n_seconds(tiny_models, demo_image):
    context = tiny_models.env.context(stream_frames_over_mb=0)  # the clip goes through frame files
    models = dict(model=tiny_models.model, clip_vision=tiny_models.clip_vision, vae=tiny_models.vae)
    images, fps = SVDLongClip().generate(demo_image, 2.0, context, **models, **SEGMENT)
    assert fps == 6.0 and images.shape == (12, 64, 64, 3)  # 4 segments (5 + 3 + 3 + 3 frames), trimmed to 12
    frames = materialized(images)
    assert torch.isfinite(frames).all()


def test_a_looping_clip_of_n_seconds_keeps_every_frame_of_its_chain(tiny_models, demo_image):
    context = tiny_models.env.context()
    models = dict(model=tiny_models.model, clip_vision=tiny_models.clip_vision, vae=tiny_models.vae)
    images, _ = SVDLongClip().generate(demo_image, 0.5, context, **models, **{**SEGMENT, "loop": True})
    assert images.shape[0] == 5 + 3 - 2  # 3 frames asked for; a loop needs two segments, the last ends on the first


@pytest.mark.parametrize("condition_on", ["anchor image", "clip frame"])
def test_a_segment_starts_from_the_anchor_image_or_the_clip_frame(tiny_models, monkeypatch, condition_on):
    """'anchor image': SVD's start image (concatenated latent and CLIP embedding) is the original image;
    'clip frame': the first frame of the clip's overlap, its embedding pulled towards the original's."""
    context = tiny_models.env.context()
    starts, embeddings = [], []
    real_conditioning = extension.svd_image_conditioning

    def spy(clip_vision, image, *args, **kwargs):
        starts.append(image.clone())
        return real_conditioning(clip_vision, image, *args, **kwargs)
    monkeypatch.setattr(extension, "svd_image_conditioning", spy)
    real_generate = extension.SegmentSettings.generate
    monkeypatch.setattr(extension.SegmentSettings, "generate",
                        lambda self, start, seed, ctx, embedding=None, pins=(), size=None: embeddings.append(embedding)
                        or real_generate(self, start, seed, ctx, embedding, pins, size))
    clip = clip_frames()
    anchor = torch.full((1, 64, 64, 3), 0.8)
    SVDExtendClip().extend(clip, context, model=tiny_models.model, clip_vision=tiny_models.clip_vision,
                           vae=tiny_models.vae, anchor_image=anchor, **{**SEGMENT, "condition_on": condition_on})
    if condition_on == "anchor image":
        assert torch.equal(starts[0], anchor) and embeddings == [None]
    else:
        assert torch.equal(starts[0], clip[-2:-1]) and embeddings[0] is not None


def test_an_unknown_start_choice_names_the_input(tiny_models):
    models = dict(model=tiny_models.model, clip_vision=tiny_models.clip_vision, vae=tiny_models.vae)
    with pytest.raises(NodeInputError, match="^SVDExtendClip: input 'condition_on'"):
        SVDExtendClip().extend(clip_frames(), tiny_models.env.context(), **models,
                               **{**SEGMENT, "condition_on": "last frame"})


def test_an_anchor_image_of_another_size_is_fitted_to_the_clip(tiny_models):
    context = tiny_models.env.context()
    models = dict(model=tiny_models.model, clip_vision=tiny_models.clip_vision, vae=tiny_models.vae)
    (out,) = SVDExtendClip().extend(clip_frames(), context, anchor_image=torch.full((1, 96, 128, 3), 0.5),
                                    **models, **SEGMENT)
    assert materialized(out).shape == (6 + 5 - 2, 64, 64, 3)
