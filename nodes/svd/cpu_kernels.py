"""oneDNN for the linear layers of models computing in float32 on an x86 CPU.

PyTorch sends an fp32 `F.linear` on the CPU to MKL's sgemm. oneDNN's inner product, the kernel that
torch.compile emits for CPU linear layers, gives the same function in 0.80-0.95x the time on SDXL's
shapes (single layers timed on an AVX-512 AMD EPYC; 0.81-1.00x with both libraries held to AVX2; the
whole SDXL step: bench/sd.py), and it applies GELU and a product as it writes its output, so a GEGLU
feed-forward runs as two products without the separate `gelu` and `mul` passes over its 4x-wide
hidden activations. Its fixed cost per
call (about 10 us there) outweighs that below about 100k weights: smaller layers (the tiny SVD's) stay
on MKL.

The model files keep plain `nn.Linear` and the GEGLU as the paper writes it; `use_cpu_kernels` swaps
in the subclasses below after a model is loaded, as `casting.py` does for 16-bit weights. Each call
still decides for itself: anything but fp32 on an x86 CPU outside autograd and autocast (a GPU, bf16,
a gradient step on the latent, training) runs `F.linear` as before.
"""
import functools

import torch
import torch.nn.functional as F
from torch import nn

from .attention import GEGLU
from .casting import CastLinear, widened


@functools.cache
def _onednn_linear():
    """torch.ops.mkldnn._linear_pointwise where it exists and oneDNN runs on an x86 CPU, else None."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() and capability in ("AVX2", "AVX512") else None


MIN_WEIGHTS = 100_000  # a 320x320 layer and up


def _onednn_for(x, weight, bias):
    """oneDNN's op if this call runs on it (see the module's docstring), else None."""
    if (x.dtype == weight.dtype == torch.float32 and (bias is None or bias.dtype == torch.float32)
            and weight.numel() >= MIN_WEIGHTS and x.device.type == "cpu" and x.dim() >= 2 and x.numel() > 0
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return _onednn_linear()
    return None


def linear(x, weight, bias=None):
    """F.linear(x, weight, bias), on oneDNN where that is faster."""
    op = _onednn_for(x, weight, bias)
    if op is None:
        return F.linear(x, weight, bias)
    return op(x, weight, bias, "none", [], "")


def gated_gelu(x, weight, bias=None):
    """GEGLU's h * gelu(gate), where (h, gate) = F.linear(x, weight, bias).chunk(2, dim=-1).

    On oneDNN as two products over the weight's halves (row ranges, so views): the gate's with GELU
    applied as it is written, then h's multiplied by it as it is written."""
    op = _onednn_for(x, weight, bias)
    if op is None:
        h, gate = F.linear(x, weight, bias).chunk(2, dim=-1)
        return h * F.gelu(gate)
    half = weight.shape[0] // 2
    gate = op(x, weight[half:], None if bias is None else bias[half:], "gelu", [], "none")
    return op.binary(x, gate, weight[:half], None if bias is None else bias[:half], "mul")


class KernelLinear(nn.Linear):
    """nn.Linear on `linear`; widens 16-bit weights as `CastLinear` does (a no-op for fp32 ones)."""

    def forward(self, x):
        return linear(x, widened(self.weight, x.dtype), widened(self.bias, x.dtype, "bias"))


class KernelGEGLU(GEGLU):
    """GEGLU through `gated_gelu` while its projection is the loaders' `KernelLinear`."""

    def forward(self, x):
        proj = self.proj
        if type(proj) is not KernelLinear:  # replaced since by a layer with its own forward: run that
            return super().forward(x)
        return gated_gelu(x, widened(proj.weight, x.dtype), widened(proj.bias, x.dtype, "bias"))


_SWAPS = {nn.Linear: KernelLinear, CastLinear: KernelLinear, GEGLU: KernelGEGLU}


def use_cpu_kernels(module: nn.Module) -> nn.Module:
    """Swap the layers above into `module`, in place; returns it. Parameters, names and the state dict
    are unchanged, and layers that widen 16-bit weights (`cast_on_forward`) keep widening them."""
    for m in module.modules():
        swap = _SWAPS.get(type(m))
        if swap is not None:
            m.__class__ = swap
    return module
