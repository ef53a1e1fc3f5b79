"""CLIP text towers against transformers on the same random weights; OpenCLIP layout conversion;
ComfyUI's encoding rules (layers, weights, chunks, SDXL's concatenation); the real layouts load."""
import pytest
import torch

from vidgraph.nodes.sd.clip_text import CLIPTextConfig, CLIPTextModel, config_from_state_dict, openclip_to_hf
from vidgraph.nodes.sd.text_encoder import CLIP, TextTower
from vidgraph.nodes.sd.tiny import hf_to_openclip
from vidgraph.nodes.sd.tokenizer import Tokenizer

from sd_shared import read_layout

TINY = CLIPTextConfig(width=64, layers=3, heads=2, mlp_dim=96)


def randomized(cfg, seed=0):
    torch.manual_seed(seed)
    model = CLIPTextModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.1)
                    + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model


def hf_twin(model: CLIPTextModel):
    transformers = pytest.importorskip("transformers")
    cfg = model.config
    hf_cfg = transformers.CLIPTextConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.width, intermediate_size=cfg.mlp_dim,
                                         num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                                         max_position_embeddings=cfg.max_positions, hidden_act=cfg.activation,
                                         projection_dim=cfg.width, eos_token_id=49407)
    cls = transformers.CLIPTextModelWithProjection if cfg.projection else transformers.CLIPTextModel
    ref = cls(hf_cfg).eval()
    mine = model.state_dict()
    wanted = [k for k in ref.state_dict() if not k.endswith("position_ids")]
    ref.load_state_dict({k: mine[k.removeprefix("text_model.")] for k in wanted}, strict=False)
    assert {k.removeprefix("text_model.") for k in wanted} == set(mine)
    return ref


@pytest.mark.parametrize("activation, projection", [("quick_gelu", False), ("gelu", True)])
def test_matches_transformers_within_1e_4(activation, projection):
    cfg = CLIPTextConfig(width=64, layers=3, heads=2, mlp_dim=96, activation=activation, projection=projection)
    model = randomized(cfg)
    ref = hf_twin(model)
    tokens = torch.tensor([Tokenizer().tokenize("a red ball on a table")[0][i][0] for i in range(77)])[None]
    with torch.no_grad():
        out = model(tokens, layer=-2, norm_hidden=False)
        expected = ref(tokens, output_hidden_states=True)
    assert (out.last - expected.last_hidden_state).abs().max() <= 1e-4
    assert (out.hidden - expected.hidden_states[-2]).abs().max() <= 1e-4
    pooled = expected.text_embeds if projection else expected.pooler_output
    assert (out.pooled - pooled).abs().max() <= 1e-4


def test_openclip_layout_round_trips():
    model = randomized(CLIPTextConfig(width=64, layers=2, heads=2, mlp_dim=96, activation="gelu", projection=True))
    sd = model.state_dict()
    back = openclip_to_hf(hf_to_openclip(sd))
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    assert config_from_state_dict(back, activation="gelu").projection


@pytest.mark.parametrize("layout, prefix, width, layers, name", [
    ("sd15_layout.txt", "cond_stage_model.transformer.text_model.", 768, 12, "l"),
    ("sdxl_layout_small.txt", "conditioner.embedders.0.transformer.text_model.", 768, 12, "l"),
    ("sdxl_layout_small.txt", "conditioner.embedders.1.model.", 1280, 32, "g"),
])
def test_real_layouts_build_key_for_key(layout, prefix, width, layers, name):
    shapes = {k[len(prefix):]: v for k, v in read_layout(f"tools/{layout}").items() if k.startswith(prefix)}
    if name == "g":
        shapes = openclip_to_hf({k: v for k, v in shapes.items() if k != "logit_scale"})
    cfg = config_from_state_dict(shapes, "gelu" if name == "g" else "quick_gelu")
    assert (cfg.width, cfg.layers, cfg.heads) == (width, layers, width // 64) and cfg.projection == (name == "g")
    with torch.device("meta"):
        built = {k: tuple(v.shape) for k, v in CLIPTextModel(cfg).state_dict().items()}
    assert built == {k: tuple(v) for k, v in shapes.items()}


def tower(name="l", layer=None, norm=True, seed=0, cfg=TINY):
    return TextTower(name, randomized(cfg, seed), Tokenizer(pad_token=49407 if name == "l" else 0), layer, norm)


def test_weights_pull_tokens_away_from_the_empty_prompt():
    clip = CLIP("sd1", [tower()])
    plain = clip.encode("a red ball")
    weighted = clip.encode("a (red:1.5) ball")
    empty = clip.encode("")
    assert torch.allclose(weighted[0, 2], empty[0, 2] + 1.5 * (plain[0, 2] - empty[0, 2]), atol=1e-5)
    assert torch.equal(weighted[0, 1], plain[0, 1]) and torch.equal(weighted[0, 3], plain[0, 3])


def test_long_prompts_are_encoded_chunk_by_chunk():
    clip = CLIP("sd1", [tower()])
    cond = clip.encode(" ".join(["cat"] * 80))
    assert cond.shape == (1, 154, 64)


def test_clip_set_last_layer_picks_an_earlier_normed_layer():
    clip = CLIP("sd1", [tower()])
    last = clip.encode("a red ball")
    earlier = clip.clone()
    earlier.clip_layer(-2)
    assert clip.layer_idx is None  # the clone changed, not the original
    tokens = torch.tensor([[t for t, _ in clip.tokenize("a red ball")["l"][0]]])
    with torch.no_grad():
        expected = clip.towers[0].model(tokens, layer=-2, norm_hidden=True).hidden
    assert torch.allclose(earlier.encode("a red ball"), expected, atol=1e-6)
    assert not torch.allclose(last, expected)
    earlier.clip_layer(-1)
    assert torch.allclose(earlier.encode("a red ball"), last, atol=1e-6)


def test_sdxl_concatenates_clip_l_and_bigg_and_pools_bigg():
    g_cfg = CLIPTextConfig(width=96, layers=3, heads=2, mlp_dim=96, activation="gelu", projection=True)
    clip = CLIP("sdxl", [tower("l", -2, False), tower("g", -2, False, seed=1, cfg=g_cfg)])
    cond, pooled = clip.encode_from_tokens(clip.tokenize("mountains"), return_pooled=True)
    assert cond.shape == (1, 77, 160) and pooled.shape == (1, 96)
    ids = torch.tensor([[t for t, _ in clip.tokenize("mountains")["g"][0]]])
    assert ids[0, 3:].eq(0).all()  # bigG pads with 0
    with torch.no_grad():
        g = clip.towers[1].model(ids, layer=-2, norm_hidden=False)
    assert torch.allclose(cond[..., 64:], g.hidden, atol=1e-6) and torch.allclose(pooled, g.pooled, atol=1e-6)
