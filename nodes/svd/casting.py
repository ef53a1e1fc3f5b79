"""Low-memory compute: weights stay in their stored (16-bit or fp8) dtype and each layer casts them to
the activations' dtype as it runs, so a model computes in fp32 while holding half (or a quarter) of
its fp32 size. Widening is exact: the results are those of fp32 weights with the same values.
"""
import torch.nn.functional as F
from torch import nn


class _CastLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class _CastsConvWeights:
    """Mixed into a conv class (subclasses too): `_conv_forward` casts weight and bias to the input's
    dtype, so a subclass's own forward (TimeMixConv2d, the UNet's centre-tap Conv2d) keeps working."""

    def _conv_forward(self, input, weight, bias):
        return super()._conv_forward(input, weight.to(input.dtype), None if bias is None else bias.to(input.dtype))


class _CastLayerNorm(nn.LayerNorm):
    def forward(self, x):
        w = None if self.weight is None else self.weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.layer_norm(x, self.normalized_shape, w, b, self.eps)


class _CastGroupNorm(nn.GroupNorm):
    def forward(self, x):
        w = None if self.weight is None else self.weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.group_norm(x, self.num_groups, w, b, self.eps)


_CASTING = {nn.Linear: _CastLinear, nn.LayerNorm: _CastLayerNorm, nn.GroupNorm: _CastGroupNorm}
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
