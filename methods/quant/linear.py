"""Weight-only min-max quantization layers: `QuantLinear`, `QuantConv2d` (method: `plugins.MinMax`).

Each weight row (a conv's weight viewed as [out, in/groups*kh*kw]) is cut into quantization
groups (the whole tensor, one output channel, or `group_size` consecutive inputs; a
group_size at least the row length means one group per row); each group gets an fp16 scale
and, when asymmetric, a uint8 zero-point. Codes are bit-packed (`packing`), so the artifact
holds the real low-bit storage. The CPU forward dequantizes then runs a dense matmul / conv:
it is the correctness reference. On CUDA, 4-bit Linear layers run the fused Triton W4A16
kernel instead; convs always dequantize then run the stock conv.

Symmetric codes are `q + 2**(b-1)` with q in [-(2**(b-1)-1), 2**(b-1)-1] (restricted range,
so symmetric 2-bit is ternary); asymmetric codes are `round(w/s) + z` in [0, 2**b-1] with
the range widened to include 0, so zero weights stay exact.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from slimbench.methods.common import storage as packing
from slimbench.methods.common.layers import WEIGHT_LAYERS, fan_in, fan_in_name, swap_named, targets
from slimbench.methods.common.options import require_divides
from slimbench.methods.quant.dequant import DequantConv, DequantLinear

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.quant.configs import MinMaxConfig

_HALF = (torch.float16, torch.bfloat16)


def group_view(n: int, k: int, granularity: str, group_size: int) -> tuple[int, int, int]:
    """Shape [rows, groups, group_len] that a [n, k] weight is viewed as for its scales."""
    if granularity == "tensor":
        return 1, 1, n * k
    if granularity == "channel" or group_size >= k:
        return n, 1, k
    return n, k // group_size, group_size


def quantize_weight(w: torch.Tensor, bits: int, granularity: str, group_size: int, symmetric: bool):
    """Min-max quantize a [n, k] weight -> (codes [n, k], fp16 scale [rows, groups], uint8 zero | None).

    Codes are uint8 except 8-bit symmetric, which are the signed int8 values themselves.
    The codes are computed with the fp16-rounded scale that is stored, so that storage and
    reference forward agree exactly.
    """
    n, k = w.shape
    shape = group_view(n, k, granularity, group_size)
    g = w.detach().float().reshape(shape)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (g.abs().amax(-1) / qmax).clamp(min=2 ** -24).half()
        q = torch.round(g / scale.float()[..., None]).clamp(-qmax, qmax)
        if bits == 8:
            return q.reshape(n, k).to(torch.int8), scale, None
        return (q + 2 ** (bits - 1)).reshape(n, k).to(torch.uint8), scale, None
    qmax = 2 ** bits - 1
    lo, hi = g.amin(-1).clamp(max=0), g.amax(-1).clamp(min=0)
    scale = ((hi - lo) / qmax).clamp(min=2 ** -24).half()
    zero = torch.round(-lo / scale.float()).clamp(0, qmax)
    q = (torch.round(g / scale.float()[..., None]) + zero[..., None]).clamp(0, qmax)
    return q.reshape(n, k).to(torch.uint8), scale, zero.to(torch.uint8)


def dequantize_weight(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, bits: int,
                      granularity: str, group_size: int, symmetric: bool) -> torch.Tensor:
    """fp32 weight [n, k] from unpacked codes (inverse of `quantize_weight` up to rounding)."""
    n, k = codes.shape
    c = codes.float().reshape(group_view(n, k, granularity, group_size))
    if symmetric:
        z = 0.0 if bits == 8 else float(2 ** (bits - 1))
        return ((c - z) * scale.float()[..., None]).reshape(n, k)
    return ((c - zero.float()[..., None]) * scale.float()[..., None]).reshape(n, k)


class QuantLinear(DequantLinear):
    """A Linear with b-bit packed weights, fp16 group scales and optional uint8 zero-points.

    Buffers (the artifact): `qweight` uint8 [out, packed_len(in, bits)] (int8 [out, in] at
    8-bit symmetric), `scale` fp16 [rows, groups], `zero` uint8 (asymmetric only), `bias`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int = 4,
                 granularity: str = "group", group_size: int = 128, symmetric: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        if granularity == "group":
            group_size = min(group_size, in_features)  # a group never spans two rows
        self.bits, self.granularity, self.group_size, self.symmetric = bits, granularity, group_size, symmetric
        rows, groups, _ = group_view(out_features, in_features, granularity, group_size)
        if bits == 8 and symmetric:
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        else:
            self.register_buffer("qweight", torch.zeros(out_features, packing.packed_len(in_features, bits),
                                                        dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(rows, groups, dtype=torch.float16))
        self.register_buffer("zero", None if symmetric else torch.zeros(rows, groups, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, lin: nn.Linear, bits: int, granularity: str, group_size: int,
                    symmetric: bool) -> "QuantLinear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, bits, granularity, group_size, symmetric)
        return q.fill(lin.weight, lin.bias)

    def fill(self, weight: torch.Tensor, bias: torch.Tensor | None) -> "QuantLinear":
        """Quantize a float weight (any shape with out_features rows) into this layer's buffers."""
        w = weight.detach().reshape(self.out_features, self.in_features)
        codes, scale, zero = quantize_weight(w, self.bits, self.granularity, self.group_size, self.symmetric)
        self.qweight.copy_(codes if self.bits == 8 and self.symmetric else packing.pack(codes, self.bits))
        self.scale.copy_(scale)
        if zero is not None:
            self.zero.copy_(zero)
        if bias is not None:
            self.bias = bias.detach().clone()
        return self.to(weight.device)

    @property
    def weight_bits(self) -> int:
        return self.bits

    def codes(self) -> torch.Tensor:
        if self.bits == 8 and self.symmetric:
            return self.qweight
        return packing.unpack(self.qweight, self.bits, self.in_features)

    def dequantize(self) -> torch.Tensor:
        return dequantize_weight(self.codes(), self.scale, self.zero, self.bits, self.granularity,
                                 self.group_size, self.symmetric)

    def _kernel_group(self) -> int:
        return self.in_features if self.granularity != "group" else self.group_size

    def kernel_forward(self, x2: torch.Tensor) -> torch.Tensor | None:
        """The fused Triton W4A16 path for x2 [M, K] (None where it does not apply).

        Used for CUDA tensors; tests call it on CPU tensors under the Triton interpreter."""
        if self.bits != 4 or x2.dtype not in _HALF or self._kernel_group() % 16:
            return None
        from slimbench.methods.quant.kernels import w4a16

        scale, zero = self.scale, self.zero
        if self.granularity == "tensor":  # one scale for every row and group
            scale = scale.expand(self.out_features, 1)
            zero = None if zero is None else zero.expand(self.out_features, 1)
        return w4a16.w4a16_linear(x2, self.qweight, scale, zero, self._kernel_group(), self.bias)

    def kernel_path(self, dtype: torch.dtype) -> str | None:
        ok = self.bits == 4 and dtype in _HALF and self._kernel_group() % 16 == 0
        return "Triton W4A16 GEMM on the packed codes" if ok else None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"granularity={self.granularity}, group_size={self.group_size}, symmetric={self.symmetric}")


class QuantConv2d(DequantConv, QuantLinear):
    """A Conv2d stored exactly like a QuantLinear over its [out, in/groups*kh*kw] weight view.

    The forward dequantizes then runs `F.conv2d` with the original stride, padding, dilation
    and groups (there is no fused low-bit conv kernel: on CUDA too the stock conv gets the fp weight).
    """

    def __init__(self, conv: nn.Conv2d, bits: int = 4, granularity: str = "channel", group_size: int = 128,
                 symmetric: bool = True):
        super().__init__(fan_in(conv), conv.out_channels, conv.bias is not None, bits, granularity, group_size,
                         symmetric)
        self.init_geometry(conv)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, bits: int, granularity: str, group_size: int,
                  symmetric: bool) -> "QuantConv2d":
        return cls(conv, bits, granularity, group_size, symmetric).fill(conv.weight, conv.bias)

    def extra_repr(self) -> str:
        return (f"{self.conv_repr()}, bits={self.bits}, granularity={self.granularity}, "
                f"group_size={self.group_size}, symmetric={self.symmetric}")


def granularity_for(layer: nn.Module, cfg: "MinMaxConfig") -> str:
    return cfg.conv_granularity if isinstance(layer, nn.Conv2d) else cfg.granularity


def _twin(layer: nn.Module, cfg: "MinMaxConfig", fill: bool) -> QuantLinear:
    """A quantized twin of a Linear / Conv2d, filled from its weight or empty (restore)."""
    args = (cfg.bits, granularity_for(layer, cfg), cfg.group_size, cfg.symmetric)
    if isinstance(layer, nn.Conv2d):
        return QuantConv2d.from_conv(layer, *args) if fill else QuantConv2d(layer, *args)
    if fill:
        return QuantLinear.from_linear(layer, *args)
    return QuantLinear(layer.in_features, layer.out_features, layer.bias is not None, *args)


def empty_twin(layer: nn.Module, cfg: "MinMaxConfig") -> QuantLinear:
    """The empty quantized layer a restore swaps in for a freshly built one (filled by load_state_dict)."""
    return _twin(layer, cfg, fill=False)


def target_layers(model: nn.Module, cfg: "MinMaxConfig", owner: str) -> list[tuple[str, nn.Module]]:
    """The layers to quantize, after checking every group size divides its row (before any work)."""
    layers = targets(model, cfg.skip, owner, WEIGHT_LAYERS)
    for name, layer in layers:
        k = fan_in(layer)
        if granularity_for(layer, cfg) == "group" and cfg.group_size < k:
            hint = " (or use conv_granularity=channel)" if isinstance(layer, nn.Conv2d) else \
                " (or use granularity=channel)"
            require_divides(owner, name, "group_size", cfg.group_size, k, fan_in_name(layer), hint)
    return layers


def quantize_model(model: nn.Module, cfg: "MinMaxConfig", owner: str) -> nn.Module:
    """Swap every eligible Linear / Conv2d for its min-max quantized twin (checks groups first)."""
    layers = target_layers(model, cfg, owner)
    swap_named(model, [n for n, _ in layers], lambda _, layer: _twin(layer, cfg, fill=True))
    return model
