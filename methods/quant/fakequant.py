"""Training-time fake-quant layers with learned step sizes (LSQ), and their packed conversion.

These wrappers exist only while `quant.qat` / `quant.progressive` train: the weight stays a
float `nn.Parameter` and each quantization group (see `linear.group_view`) gets a learnable
step size. After training, `to_packed` turns each wrapper into the real `QuantLinear` /
`QuantConv2d` storage with the learned steps as its fp16 scales, so the artifact is the same
packed format `quant.minmax` writes and restores.

The forward is exact, not approximate: codes are `clamp(round(w / s16), -qmax, qmax)` with
`s16` the fp16-rounded step that will be stored, and the weight is `codes * s16` in fp32,
which is bit-for-bit what `QuantLinear.dequantize` computes from the packed codes. The
straight-through estimator and LSQ step gradient live in the backward of one autograd
Function, so no `x + (y - x).detach()` trick perturbs forward values.

The step is learned in log space, s = step0 * exp(log_scale) with step0 the min-max start
(a non-persistent buffer) and log_scale an nn.Parameter starting at 0, not raw: the shared trainer is AdamW
with one lr for every parameter, and Adam's updates are ~lr in absolute size whatever the
gradient's scale, so a raw 8-bit step (~1e-3) is driven through zero within a few steps
(rows then dequantize to 0). In log space each update is a relative change of ~lr. The LSQ
gradient scale 1/sqrt(numel * qmax) is kept: it keeps the step gradients from dominating
the trainer's global grad-norm clipping, and is what LSQ prescribes under SGD.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from slimbench.methods.common import storage as packing
from slimbench.methods.common.layers import ConvGeometry, fan_in
from slimbench.methods.quant.linear import QuantConv2d, QuantLinear, group_view

_MIN_STEP = 2 ** -24  # smallest positive fp16 (subnormal), as in linear.quantize_weight


def _qmax(bits: int) -> int:
    """Symmetric restricted range: q in [-qmax, qmax] (2-bit is ternary), as QuantLinear stores."""
    return 2 ** (bits - 1) - 1


class _LSQ(torch.autograd.Function):
    """Forward: exact fake-quant of grouped weights. Backward: STE for w, LSQ gradient for s.

    w: [rows, groups, len] fp32; s: [rows, groups, 1] fp32 (positive); returns q * s16.
    """

    @staticmethod
    def forward(ctx, w, s, qmax: int, grad_scale: float):
        s16 = s.clamp(min=_MIN_STEP).half().float()
        x = w / s16
        q = torch.round(x).clamp(-qmax, qmax)
        ctx.save_for_backward(x, q)
        ctx.qmax, ctx.grad_scale = qmax, grad_scale
        return q * s16

    @staticmethod
    def backward(ctx, grad):
        x, q = ctx.saved_tensors
        inside = x.abs() <= ctx.qmax
        # inside the clip range: d(w_q)/dw = 1 (STE) and d(w_q)/ds = q - x; outside: 0 and +-qmax
        grad_w = grad * inside
        ds = torch.where(inside, q - x, q)
        grad_s = (grad * ds).sum(-1, keepdim=True) * ctx.grad_scale
        return grad_w, grad_s, None, None


def _initial_step(w: torch.Tensor, qmax: int) -> torch.Tensor:
    """Min-max step (absmax / qmax) per group, the same start point as quant.minmax."""
    return (w.abs().amax(-1, keepdim=True) / qmax).clamp(min=_MIN_STEP)


class FakeQuantLinear(nn.Module):
    """A Linear whose weight is fake-quantized (symmetric, b bits) with learned group steps."""

    def __init__(self, layer: nn.Module, bits: int, granularity: str, group_size: int):
        super().__init__()
        self.out_features, self.in_features = layer.weight.shape[0], fan_in(layer)
        if granularity == "group":
            group_size = min(group_size, self.in_features)  # as QuantLinear: a group never spans rows
        self.granularity, self.group_size = granularity, group_size
        self.shape = group_view(self.out_features, self.in_features, granularity, group_size)
        self.weight = nn.Parameter(layer.weight.detach().float().reshape(self.out_features, self.in_features).clone())
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().float().clone())
        self.bits = bits
        self.register_buffer("step0", _initial_step(self.weight.detach().reshape(self.shape), self.qmax),
                             persistent=False)  # exp(0) == 1: before training, exactly quant.minmax's scales
        self.log_scale = nn.Parameter(torch.zeros_like(self.step0))

    @property
    def qmax(self) -> int:
        return _qmax(self.bits)

    def set_bits(self, bits: int) -> None:
        """Change the bit-width in place, keeping the learned clipping range (step * qmax)."""
        with torch.no_grad():
            self.step0.mul_(self.qmax / _qmax(bits))
        self.bits = bits

    @property
    def step(self) -> torch.Tensor:
        """Step sizes [rows, groups, 1] (before the clamp and fp16 rounding of the forward)."""
        return self.step0 * self.log_scale.exp()

    def quantized_weight(self) -> torch.Tensor:
        """[out, fan_in] fp32 weight exactly as the packed layer will dequantize it."""
        # LSQ: scale the step gradient by 1/sqrt(numel * qmax) so it is on the weights' scale
        g = 1.0 / math.sqrt(self.weight.numel() * self.qmax)
        w = _LSQ.apply(self.weight.reshape(self.shape), self.step, self.qmax, g)
        return w.reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.quantized_weight().to(x.dtype)
        return torch.nn.functional.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    @torch.no_grad()
    def codes_and_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Signed codes [out, fan_in] and fp16 scales [rows, groups], as the forward uses them."""
        s16 = self.step.clamp(min=_MIN_STEP).half()
        q = torch.round(self.weight.reshape(self.shape) / s16.float()).clamp(-self.qmax, self.qmax)
        return q.reshape(self.out_features, self.in_features), s16.squeeze(-1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"granularity={self.granularity}, group_size={self.group_size}")


class FakeQuantConv2d(ConvGeometry, FakeQuantLinear):
    """A Conv2d fake-quantized over its [out, in/groups*kh*kw] weight view, run as QuantConv2d runs."""

    def __init__(self, conv: nn.Conv2d, bits: int, granularity: str, group_size: int):
        super().__init__(conv, bits, granularity, group_size)
        self.init_geometry(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_4d(self.quantized_weight().to(x.dtype), x)
        return self.conv(x, w, None if self.bias is None else self.bias.to(x.dtype))


def wrap(layer: nn.Module, bits: int, granularity: str, group_size: int) -> FakeQuantLinear:
    if isinstance(layer, nn.Conv2d):
        return FakeQuantConv2d(layer, bits, granularity, group_size)
    return FakeQuantLinear(layer, bits, granularity, group_size)


@torch.no_grad()
def to_packed(fq: FakeQuantLinear) -> QuantLinear:
    """The real packed layer (symmetric QuantLinear / QuantConv2d) with the learned scales."""
    codes, scale = fq.codes_and_scale()
    has_bias = fq.bias is not None
    if isinstance(fq, FakeQuantConv2d):
        skeleton = nn.Conv2d(fq.in_channels, fq.out_channels, fq.kernel_size, fq.stride, fq.padding,
                             fq.dilation, fq.groups, has_bias, fq.padding_mode, device="meta")
        out: QuantLinear = QuantConv2d(skeleton, fq.bits, fq.granularity, fq.group_size, symmetric=True)
    else:
        out = QuantLinear(fq.in_features, fq.out_features, has_bias, fq.bits, fq.granularity, fq.group_size,
                          symmetric=True)
    out = out.to(fq.weight.device)
    if fq.bits == 8:
        out.qweight.copy_(codes.to(torch.int8))
    else:
        out.qweight.copy_(packing.pack((codes + 2 ** (fq.bits - 1)).to(torch.uint8), fq.bits))
    out.scale.copy_(scale)
    if has_bias:
        out.bias = fq.bias.detach().clone()
    return out
