"""Low-memory compute: weights stay in their stored (16-bit or fp8) dtype and each layer casts them to
the activations' dtype as it runs, so a model computes in fp32 while holding half (or a quarter) of
its fp32 size. Widening is exact: the results are those of fp32 weights with the same values.
"""
import threading

import torch
import torch.nn.functional as F
from torch import nn

_scratch = threading.local()


def widened(tensor, dtype, slot: str = "weight"):
    """`tensor` in `dtype`, written into a reused per-thread scratch buffer.

    Layers run one after another and need their widened weights only while they run, so one buffer
    per slot (weight, bias) serves them all: no fresh allocation per layer and call, whose page
    faults cost as much as the cast itself."""
    if tensor is None or tensor.dtype == dtype:
        return tensor
    if torch.is_grad_enabled():  # autograd keeps the weight for the backward pass: it must not be reused
        return tensor.to(dtype)
    # inference-mode tensors cannot be written outside inference mode (and vice versa): one buffer each
    key = (slot, dtype, tensor.device, torch.is_inference_mode_enabled())
    buffer = getattr(_scratch, "buffers", None)
    if buffer is None:
        buffer = _scratch.buffers = {}
    flat = buffer.get(key)
    if flat is None or flat.numel() < tensor.numel():
        # A normal tensor even when made under inference_mode: the samplers run under no_grad
        # (patches may take gradients), and an inference tensor cannot be written outside it.
        with torch.inference_mode(False):
            flat = buffer[key] = torch.empty(tensor.numel(), dtype=dtype, device=tensor.device)
    out = flat[:tensor.numel()].view(tensor.shape)
    out.copy_(tensor)
    return out


class CastLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, widened(self.weight, x.dtype), widened(self.bias, x.dtype, "bias"))


class _CastsConvWeights:
    """Mixed into a conv class (subclasses too): `_conv_forward` casts weight and bias to the input's
    dtype, so a subclass's own forward (TimeMixConv2d, the UNet's centre-tap Conv2d) keeps working."""

    def _conv_forward(self, input, weight, bias):
        return super()._conv_forward(input, widened(weight, input.dtype), widened(bias, input.dtype, "bias"))


class _CastLayerNorm(nn.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, widened(self.weight, x.dtype),
                            widened(self.bias, x.dtype, "bias"), self.eps)


class _CastGroupNorm(nn.GroupNorm):
    def forward(self, x):
        return F.group_norm(x, self.num_groups, widened(self.weight, x.dtype), widened(self.bias, x.dtype, "bias"),
                            self.eps)


_CASTING = {nn.Linear: CastLinear, nn.LayerNorm: _CastLayerNorm, nn.GroupNorm: _CastGroupNorm}
_CASTING_CONVS: dict[type, type] = {}


def _casting_conv(cls: type) -> type:
    if cls not in _CASTING_CONVS:
        _CASTING_CONVS[cls] = type(f"Casting{cls.__name__}", (_CastsConvWeights, cls), {})
    return _CASTING_CONVS[cls]


def cast_on_forward(module: nn.Module) -> nn.Module:
    """Make every Linear / Conv / norm layer cast its weights to the activations' dtype as it runs,
    so weights can stay in 16 bits while the model computes in float32. In place; returns `module`.

    Norm subclasses (GroupNorm32) cast for themselves; every conv, subclass or not, gets the cast."""
    for m in module.modules():
        if type(m) in _CASTING:
            m.__class__ = _CASTING[type(m)]
        elif isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, _CastsConvWeights):
            m.__class__ = _casting_conv(type(m))
    return module
