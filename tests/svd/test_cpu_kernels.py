"""The CPU kernel swap (nodes/svd/cpu_kernels.py): same function as F.linear / GEGLU, taken only where
it may be (fp32 on the CPU outside autograd and autocast), and installed by the loaders."""
import copy

import pytest
import torch
import torch.nn.functional as F

from vidgraph.nodes.svd import cpu_kernels
from vidgraph.nodes.svd.attention import GEGLU
from vidgraph.nodes.svd.casting import cast_on_forward
from vidgraph.nodes.svd.cpu_kernels import KernelGEGLU, KernelLinear, gated_gelu, linear, use_cpu_kernels

onednn = pytest.mark.skipif(cpu_kernels._onednn_linear() is None, reason="oneDNN's linear needs an x86 CPU")


@pytest.fixture
def onednn_calls(monkeypatch):
    """How many calls reached oneDNN's op (both overloads); small test layers count as big ones."""
    op, calls = cpu_kernels._onednn_linear(), [0]
    monkeypatch.setattr(cpu_kernels, "MIN_WEIGHTS", 0)

    class Counting:
        def __call__(self, *args):
            calls[0] += 1
            return op(*args)

        def binary(self, *args):
            calls[0] += 1
            return op.binary(*args)
    monkeypatch.setattr(cpu_kernels, "_onednn_linear", lambda: None if op is None else Counting())
    return calls


def inputs():
    g = torch.Generator().manual_seed(0)
    yield torch.randn(5, 32, generator=g)
    yield torch.randn(3, 7, 32, generator=g)
    yield torch.randn(2, 3, 4, 32, generator=g)
    yield torch.randn(3, 32, 7, generator=g).transpose(1, 2)  # not contiguous
    yield torch.randn(32, generator=g)                        # 1-D: F.linear's own
    yield torch.randn(0, 32)


@onednn
@pytest.mark.parametrize("bias", [True, False])
def test_linear_and_gated_gelu_compute_what_f_linear_does(bias, onednn_calls):
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(64, 32, generator=g) / 6, (torch.randn(64, generator=g) if bias else None)
    with torch.no_grad():
        for x in inputs():
            expected = F.linear(x, w, b)
            assert torch.allclose(linear(x, w, b), expected, atol=1e-5, rtol=1e-5), x.shape
            h, gate = expected.chunk(2, dim=-1)
            assert torch.allclose(gated_gelu(x, w, b), h * F.gelu(gate), atol=1e-5, rtol=1e-5), x.shape
    assert onednn_calls[0] == 4 * 3  # four inputs on oneDNN (not the 1-D or empty one), gated_gelu twice


@onednn
def test_only_fp32_cpu_inference_on_layers_that_pay_for_it_takes_onednn(onednn_calls, monkeypatch):
    w = torch.randn(16, 8, requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    y = linear(x, w)  # autograd: F.linear, and gradients flow
    y.sum().backward()
    assert x.grad is not None and w.grad is not None
    with torch.no_grad():
        linear(x.bfloat16(), w.bfloat16())
        linear(x.double(), w.double())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert linear(x, w).dtype == torch.bfloat16  # autocast still decides the dtype
    assert onednn_calls[0] == 0
    with torch.no_grad():
        linear(x, w)
    with torch.inference_mode():
        linear(x, w)
    assert onednn_calls[0] == 2
    monkeypatch.setattr(cpu_kernels, "MIN_WEIGHTS", 129)  # the layer has 128: its call cost would dominate
    with torch.no_grad():
        linear(x, w)
    assert onednn_calls[0] == 2


def small_unet():
    from vidgraph.nodes.sd.unet import UNet, UNetConfig
    cfg = UNetConfig(model_channels=32, channel_mult=(1, 2), transformer_depth=(0, 1), transformer_depth_middle=1,
                     num_heads=-1, num_head_channels=16, context_dim=24, use_linear_in_transformer=True)
    torch.manual_seed(0)
    unet = UNet(cfg).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # zero-initialised output layers get weights too
    return unet


def run(unet, requires_grad=False):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 8, 8, generator=g, requires_grad=requires_grad)
    return x, unet(x, torch.tensor([500.0, 20.0]), torch.randn(2, 5, 24, generator=g))


@onednn
def test_a_swapped_unet_keeps_its_state_dict_and_output_and_its_gradients(onednn_calls):
    plain = small_unet()
    fast = use_cpu_kernels(copy.deepcopy(plain))
    assert list(fast.state_dict()) == list(plain.state_dict())
    kinds = {type(m) for m in fast.modules()}
    assert KernelLinear in kinds and KernelGEGLU in kinds and torch.nn.Linear not in kinds and GEGLU not in kinds
    with torch.no_grad():
        expected, out = run(plain)[1], run(fast)[1]
    assert onednn_calls[0] > 0 and out.abs().max() > 0.1
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-4), (out - expected).abs().max()
    onednn_calls[0] = 0
    x, out = run(fast, requires_grad=True)  # a gradient step on the latent (motion control) still works
    out.square().mean().backward()
    assert onednn_calls[0] == 0 and x.grad.abs().sum() > 0


@onednn
def test_16_bit_weights_are_widened_and_weight_patches_are_seen():
    from vidgraph.nodes.weight_patches import add_to_table, patched_weights

    low_memory = cast_on_forward(small_unet().half())  # 16-bit weights widened as each layer runs
    fast = use_cpu_kernels(copy.deepcopy(low_memory))
    assert {type(m) for m in fast.modules()} >= {KernelLinear, KernelGEGLU}
    with torch.no_grad():
        expected, out = run(low_memory)[1], run(fast)[1]
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-5, rtol=1e-4)
    name = "output_blocks.0.1.transformer_blocks.0.ff.net.0.proj.weight"  # a GEGLU's projection
    delta = torch.randn(dict(fast.named_parameters())[name].shape) * 0.5
    table, matched = add_to_table({}, {name: delta}, {name})
    assert matched == [name]
    with torch.no_grad(), patched_weights(fast, table), patched_weights(low_memory, table):
        patched_out, patched_expected = run(fast)[1], run(low_memory)[1]
    assert (patched_out - out).abs().max() > 1e-3
    assert torch.allclose(patched_out, patched_expected, atol=1e-5, rtol=1e-4)


def test_a_replaced_projection_keeps_its_own_forward():
    geglu = use_cpu_kernels(GEGLU(8, 4))

    class Doubled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)
    geglu.proj.__class__ = Doubled
    x = torch.randn(3, 8)
    with torch.no_grad():
        h, gate = (2 * F.linear(x, geglu.proj.weight, geglu.proj.bias)).chunk(2, dim=-1)
        assert torch.allclose(geglu(x), h * F.gelu(gate), atol=1e-6)


def test_loaded_models_run_on_the_kernels(tmp_path):
    from vidgraph.nodes.svd.checkpoint import load_checkpoint
    from vidgraph.nodes.svd.tiny import write_tiny_checkpoint

    models = load_checkpoint(write_tiny_checkpoint(tmp_path / "svd_tiny.safetensors", seed=0))
    for model in (models.unet, models.clip_vision):
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(type(m) is KernelLinear for m in linears)
    assert all(type(m) is KernelGEGLU for m in models.unet.modules() if isinstance(m, GEGLU))


def test_loaded_sdxl_unet_and_text_encoders_run_on_the_kernels(tmp_path):
    from vidgraph.nodes.sd.checkpoint import load_sd_checkpoint
    from vidgraph.nodes.sd.tiny import write_tiny_sd_checkpoint

    models = load_sd_checkpoint(write_tiny_sd_checkpoint(tmp_path / "tiny_sdxl.safetensors", "sdxl"))
    for model in [models.model.network.module] + [tower.model for tower in models.clip.towers]:
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(type(m) is KernelLinear for m in linears)
    assert len(models.clip.towers) == 2
