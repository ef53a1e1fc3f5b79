"""The OpenCLIP vision tower: layout, detection, HF conversion, parity with transformers, preprocessing."""
import pytest
import torch

from vidgraph.nodes.svd.clip_vision import (
    CHECKPOINT_PREFIX, CLIPVision, CLIPVisionConfig, clip_preprocess, clip_vision_state_dict_from_any,
    config_from_state_dict, default_heads,
)
from test_vae import randomize  # shared test helpers (tests/svd is on sys.path)

TINY = CLIPVisionConfig(width=64, layers=3, heads=4, mlp_dim=128, patch_size=8, image_size=32, output_dim=48)


def meta_checkpoint(cfg=CLIPVisionConfig()):
    with torch.device("meta"):
        return {CHECKPOINT_PREFIX + k: v for k, v in CLIPVision(cfg).state_dict().items()}


def test_full_size_meta_model_has_exactly_the_checkpoint_keys(svd_keys):
    with torch.device("meta"):
        model = CLIPVision(CLIPVisionConfig())
    ref = svd_keys(CHECKPOINT_PREFIX)
    assert len(ref) == 392  # 32 blocks x 12 + 8
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == ref


def test_detects_vit_h_from_the_single_file_prefix():
    sd = meta_checkpoint()
    with torch.device("meta"):  # text-tower leftovers beside the visual keys are ignored
        sd["conditioner.embedders.0.open_clip.model.positional_embedding"] = torch.empty(77, 1024)
        sd["first_stage_model.decoder.conv_in.weight"] = torch.empty(512, 4, 3, 3)
    bare = clip_vision_state_dict_from_any(sd)
    assert "positional_embedding" in bare and not any(k.startswith(("conditioner", "first_stage")) for k in bare)
    assert tuple(bare["positional_embedding"].shape) == (257, 1280)
    cfg = config_from_state_dict(bare)
    assert cfg == CLIPVisionConfig()
    assert cfg.width // cfg.heads == 80


def test_detects_tiny_config_and_open_clip_visual_prefix():
    model = CLIPVision(TINY)
    sd = {"visual." + k: v for k, v in model.state_dict().items()}
    sd["token_embedding.weight"] = torch.zeros(10, 64)
    bare = clip_vision_state_dict_from_any(sd)
    assert bare.keys() == model.state_dict().keys()
    assert config_from_state_dict(bare, heads=4) == TINY
    assert config_from_state_dict(bare).heads == default_heads(64) == 1


def test_head_rule_for_known_widths():
    assert [default_heads(w) for w in (768, 1024, 1280, 1664, 512, 96)] == [12, 16, 16, 16, 8, 1]


def test_not_clip_vision_gives_clear_error():
    with pytest.raises(ValueError, match="not a CLIP vision model"):
        clip_vision_state_dict_from_any({"decoder.conv_in.weight": torch.zeros(1)})
    sd = CLIPVision(TINY).state_dict()
    del sd["proj"]
    with pytest.raises(ValueError, match="missing 'proj'"):
        config_from_state_dict(sd)
    with pytest.raises(ValueError, match=r"pixel_values must be \[N,3,32,32\]"):
        CLIPVision(TINY)(torch.zeros(1, 3, 31, 32))


@pytest.mark.parametrize("with_prefix", ["", "clip."])
def test_image_embeds_match_transformers(with_prefix):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, image_size=32,
        patch_size=8, projection_dim=48, hidden_act="gelu")
    ref = randomize(transformers.CLIPVisionModelWithProjection(cfg), scale=0.1).eval()
    hf = {with_prefix + k: v for k, v in ref.state_dict().items()}
    hf[with_prefix + "vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # older files carry it
    sd = clip_vision_state_dict_from_any(hf)
    mine = CLIPVision(config_from_state_dict(sd, heads=4)).eval()
    mine.load_state_dict(sd, strict=True)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(pixel_values=pixels, output_hidden_states=True)
    got = mine(pixels)
    assert got.image_embeds.shape == (2, 48)
    assert (got.image_embeds - expected.image_embeds).abs().max() <= 1e-4
    assert (got["last_hidden_state"] - expected.last_hidden_state).abs().max() <= 1e-4
    assert (got.penultimate_hidden_states - expected.hidden_states[-2]).abs().max() <= 1e-4


def test_preprocess_non_square_crop_and_squash():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 48, 80, 3, generator=g)
    out = clip_preprocess(image, 32)
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    levels = out * std + mean
    assert levels.min() >= -1e-6 and levels.max() <= 1 + 1e-6
    assert torch.allclose(levels * 255, (levels * 255).round(), atol=1e-3)  # 8-bit levels
    # centre crop: a left/right-only marker disappears, squash keeps it
    marked = torch.full((1, 48, 80, 3), 0.25)
    marked[:, :, :8] = 1.0
    assert torch.allclose(clip_preprocess(marked, 32) * std + mean, torch.tensor(64 / 255), atol=1e-6)
    assert (clip_preprocess(marked, 32, crop=False) * std + mean).max() > 0.9


def test_preprocess_leaves_right_sized_images_unresampled_and_rejects_bad_shapes():
    image = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    back = clip_preprocess(image, 32) * std + mean
    assert torch.allclose(back, (image.movedim(-1, 1) * 255).round() / 255, atol=1e-6)
    with pytest.raises(ValueError, match="image must be"):
        clip_preprocess(torch.rand(1, 3, 32, 32), 32)


def test_encode_image_gives_comfy_clip_vision_output():
    model = randomize(CLIPVision(TINY), scale=0.1).eval()
    out = model.encode_image(torch.rand(1, 40, 64, 3))
    assert set(out) == {"image_embeds", "last_hidden_state", "penultimate_hidden_states"}
    assert out.image_embeds.shape == (1, 48)
    assert out.last_hidden_state.shape == (1, 17, 64)
    assert not torch.equal(out.last_hidden_state, out.penultimate_hidden_states)


def test_from_state_dict_builds_and_loads_the_tower():
    source = randomize(CLIPVision(TINY), scale=0.1).eval()
    model = CLIPVision.from_state_dict({CHECKPOINT_PREFIX + k: v for k, v in source.state_dict().items()}, heads=4)
    pixels = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(pixels).image_embeds, source(pixels).image_embeds)
    with pytest.raises(ValueError, match="missing"):
        sd = source.state_dict()
        del sd["transformer.resblocks.1.ln_2.bias"]
        CLIPVision.from_state_dict(sd, heads=4)


def test_full_size_hugging_face_layout_converts_to_the_checkpoint_keys(svd_keys):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
        patch_size=14, projection_dim=1024, hidden_act="gelu")
    with torch.device("meta"):
        ref = transformers.CLIPVisionModelWithProjection(cfg)
    sd = clip_vision_state_dict_from_any(ref.state_dict())
    assert {k: list(v.shape) for k, v in sd.items()} == svd_keys(CHECKPOINT_PREFIX)
    assert config_from_state_dict(sd) == CLIPVisionConfig()


def test_runs_in_16_bit_weights():
    model = randomize(CLIPVision(TINY), scale=0.1).eval()
    half = CLIPVision(TINY).eval()
    half.load_state_dict(model.state_dict())
    half.half()
    image = torch.rand(1, 40, 50, 3)
    out = half.encode_image(image).image_embeds
    assert out.dtype == torch.float16
    assert (out.float() - model.encode_image(image).image_embeds).abs().max() < 1e-2
