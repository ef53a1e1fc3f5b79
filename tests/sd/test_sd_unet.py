"""SD's UNet: the real checkpoint layouts, config detection, parity with diffusers' UNet2DConditionModel."""
import pytest
import torch

from vidgraph.nodes.sd.unet import UNet, UNetConfig, config_from_state_dict

from sd_shared import read_layout

PREFIX = "model.diffusion_model."


@pytest.mark.parametrize("layout, expected", [
    ("sd15_layout.txt", dict(channel_mult=(1, 2, 4, 4), transformer_depth=(1, 1, 1, 0), num_heads=8,
                             context_dim=768, use_linear_in_transformer=False, adm_in_channels=None)),
    ("sdxl_layout_small.txt", dict(channel_mult=(1, 1, 1), transformer_depth=(0, 2, 10), transformer_depth_middle=10,
                                   num_head_channels=64, context_dim=2048, use_linear_in_transformer=True,
                                   adm_in_channels=2816)),
])
def test_real_layouts_are_detected_and_built_key_for_key(layout, expected):
    shapes = {k[len(PREFIX):]: v for k, v in read_layout(f"tools/{layout}").items() if k.startswith(PREFIX)}
    cfg = config_from_state_dict(shapes)
    for name, value in expected.items():
        assert getattr(cfg, name) == value, name
    with torch.device("meta"):
        built = {k: tuple(v.shape) for k, v in UNet(cfg).state_dict().items()}
    assert built == shapes


def randomize(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * scale + (1.0 if p.ndim == 1 and "norm" in name and name.endswith("weight") else 0.0))
    return module


SD1_TINY = UNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(1, 0), num_heads=2,
                      context_dim=24, use_linear_in_transformer=False)
SDXL_TINY = UNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(0, 2), transformer_depth_middle=2,
                       num_heads=-1, num_head_channels=16, context_dim=24, use_linear_in_transformer=True,
                       adm_in_channels=40)


def diffusers_twin(unet: UNet, xl: bool, load):
    diffusers = pytest.importorskip("diffusers")
    kind = dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2), use_linear_projection=True,
                addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=40
                ) if xl else dict(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2)
    ref = diffusers.UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=2,
                                         cross_attention_dim=24, norm_num_groups=32, **kind)
    return load(ref, unet)


@pytest.mark.parametrize("kernels", [False, True], ids=["torch", "cpu_kernels"])
@pytest.mark.parametrize("xl", [False, True], ids=["sd1", "sdxl"])
def test_forward_matches_diffusers_within_1e_4(xl, kernels, load_into_diffusers_unet, monkeypatch):
    """As built, and with the loaders' CPU kernels (nodes/svd/cpu_kernels.py) swapped in, taken for
    every layer however small."""
    from vidgraph.nodes.svd import cpu_kernels

    unet = randomize(UNet(SDXL_TINY if xl else SD1_TINY), seed=3).eval()
    ref = diffusers_twin(unet, xl, load_into_diffusers_unet)
    if kernels:
        monkeypatch.setattr(cpu_kernels, "MIN_WEIGHTS", 0)
        cpu_kernels.use_cpu_kernels(unet)
    g = torch.Generator().manual_seed(1)
    x, context = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 7, 24, generator=g)
    t = torch.tensor([999.0, 10.0])
    with torch.no_grad():
        if xl:
            pooled, time_ids = torch.randn(2, 16, generator=g), torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)
            from vidgraph.nodes.sd.unet import timestep_embedding
            y = torch.cat([pooled, timestep_embedding(time_ids.flatten(), 4).reshape(2, -1)], dim=1)
            out = unet(x, t, context, y)
            expected = ref(x, t, context, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        else:
            out = unet(x, t, context)
            expected = ref(x, t, context).sample
    assert out.abs().max() > 0.1
    diff = (out - expected).abs().max().item()
    print("max abs diff vs diffusers", diff)
    assert diff <= 1e-4, diff


def keys_counted(unet):
    """The number of to_k calls of the cross-attention layers, counted as they run."""
    calls = [0]
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_k"):
            module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_a_sampling_run_computes_the_prompts_keys_once_and_samples_the_same():
    from vidgraph.nodes.guidance import Guider
    from vidgraph.nodes.sampling import get_sampler
    from vidgraph.nodes.sd.network import sd_model
    from vidgraph.nodes.svd.attention import CrossAttention

    model = sd_model(randomize(UNet(SD1_TINY), seed=3).eval(), "sd1")
    layers = sum(1 for name, _ in model.network.module.named_modules() if name.endswith("attn2"))
    calls = keys_counted(model.network.module)
    g = torch.Generator().manual_seed(2)
    positive, negative = [[torch.randn(1, 7, 24, generator=g), {}]], [[torch.randn(1, 7, 24, generator=g), {}]]
    noise, sigmas = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([14.6, 6.0, 2.0, 0.5, 0.0])

    def run():
        return Guider(model, positive, negative, 5.0).sample(get_sampler("euler"), noise, torch.zeros(1, 4, 8, 8),
                                                             sigmas, seed=1)
    kept = run()
    assert calls[0] == layers                       # 4 steps, cond and uncond batched: once per layer
    calls[0] = 0
    recompute = CrossAttention.context_keys_values
    try:
        CrossAttention.context_keys_values = lambda self, context, run_kept=None: recompute(self, context, None)
        fresh = run()
    finally:
        CrossAttention.context_keys_values = recompute
    assert calls[0] == 4 * layers
    assert torch.equal(kept, fresh)


def test_kept_keys_are_recomputed_for_another_or_modified_context_and_under_autograd():
    from vidgraph.nodes.svd.attention import CrossAttention

    attn = CrossAttention(8, 2, 4, context_dim=6)
    calls = keys_counted(torch.nn.ModuleDict({"attn2": attn}))
    x, context, kept = torch.randn(1, 5, 8), torch.randn(1, 3, 6), {}
    with torch.no_grad():
        first = attn(x, context, run_kept=kept)
        assert torch.equal(attn(x, context, run_kept=kept), first) and calls[0] == 1
        attn(x, context.clone(), run_kept=kept)           # another tensor, same values: computed again
        assert calls[0] == 2
        other = context.clone()
        before = attn(x, other, run_kept=kept)
        other.mul_(2.0)                                   # changed in place: its kept keys are stale
        after = attn(x, other, run_kept=kept)
        assert calls[0] == 4 and not torch.equal(after, before)
        assert torch.equal(after, attn(x, other))         # what a call without a run computes
    attn(x, other, run_kept=kept)                         # under autograd: computed, never kept
    assert calls[0] == 6 and len(kept) == 1 and kept[attn][0] is other
