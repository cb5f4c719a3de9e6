"""Weight-only min-max quantization: `QuantLinear` and the `quant.minmax` method.

Each weight row is cut into quantization groups (the whole tensor, one output channel, or
`group_size` consecutive input features); each group gets an fp16 scale and, when
asymmetric, a uint8 zero-point. Codes are bit-packed (`packing`), so the artifact holds the
real low-bit storage. The CPU forward dequantizes then runs a dense matmul: it is the
correctness reference. On CUDA, 4-bit layers run the fused Triton W4A16 kernel instead.

Symmetric codes are `q + 2**(b-1)` with q in [-(2**(b-1)-1), 2**(b-1)-1] (restricted range,
so symmetric 2-bit is ternary); asymmetric codes are `round(w/s) + z` in [0, 2**b-1] with
the range widened to include 0, so zero weights stay exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.methods.base import CompressionContext, Method, MethodConfig, register_method
from slimbench.methods.quant import packing
from slimbench.methods.quant.common import (DEFAULT_SKIP, SKIP_HELP, check_bits, linear_cost, require_divides,
                                            restore_names, swap_named, targets)
from slimbench.suite.config import check

Granularity = Literal["tensor", "channel", "group"]
_HALF = (torch.float16, torch.bfloat16)


def group_view(n: int, k: int, granularity: str, group_size: int) -> tuple[int, int, int]:
    """Shape [rows, groups, group_len] that a [n, k] weight is viewed as for its scales."""
    if granularity == "tensor":
        return 1, 1, n * k
    if granularity == "channel":
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


class QuantLinear(nn.Module):
    """A Linear with b-bit packed weights, fp16 group scales and optional uint8 zero-points.

    Buffers (the artifact): `qweight` uint8 [out, packed_len(in, bits)] (int8 [out, in] at
    8-bit symmetric), `scale` fp16 [rows, groups], `zero` uint8 (asymmetric only), `bias`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int = 4,
                 granularity: str = "group", group_size: int = 128, symmetric: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
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
        codes, scale, zero = quantize_weight(lin.weight, bits, granularity, group_size, symmetric)
        q.qweight.copy_(codes if bits == 8 and symmetric else packing.pack(codes, bits))
        q.scale.copy_(scale)
        if zero is not None:
            q.zero.copy_(zero)
        if lin.bias is not None:
            q.bias = lin.bias.detach().clone()
        return q.to(lin.weight.device)

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            y = self.kernel_forward(x.reshape(-1, self.in_features))
            if y is not None:
                return y.reshape(*x.shape[:-1], self.out_features)
        w = self.dequantize().to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return linear_cost(self, inputs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"granularity={self.granularity}, group_size={self.group_size}, symmetric={self.symmetric}")


@dataclass(frozen=True)
class MinMaxConfig(MethodConfig):
    bits: int = field(default=4, metadata={"help": "weight bits: 2, 3, 4 or 8"})
    granularity: Granularity = field(default="group", metadata={
        "help": "one scale per tensor, per output channel, or per group of input features"})
    group_size: int = field(default=128, metadata={"help": "input features per group (granularity=group)"})
    symmetric: bool = field(default=True, metadata={"help": "symmetric (no zero-point) or asymmetric min-max"})
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP, metadata={"help": SKIP_HELP})

    def __post_init__(self):
        check_bits(self.bits)
        check(self.group_size >= 1, f"group_size={self.group_size!r} must be >= 1")


@register_method("quant.minmax")
class MinMax(Method):
    family = "quantization"
    description = "Weight-only min-max quantization (2/3/4/8-bit, per-tensor/channel/group), bit-packed."
    config_cls = MinMaxConfig

    def _make(self, fill: bool):
        c = self.config

        def make(_: str, lin: nn.Module) -> QuantLinear:
            if fill:
                return QuantLinear.from_linear(lin, c.bits, c.granularity, c.group_size, c.symmetric)
            return QuantLinear(lin.in_features, lin.out_features, lin.bias is not None, c.bits,
                               c.granularity, c.group_size, c.symmetric)
        return make

    def compress(self, model, ctx: CompressionContext):
        layers = targets(model, self.config.skip, self.name)
        if self.config.granularity == "group":
            for name, lin in layers:
                require_divides(self.name, name, "group_size", self.config.group_size, lin.in_features,
                                " (or use granularity=channel)")
        swap_named(model, [n for n, _ in layers], self._make(fill=True))
        return model

    def artifact_meta(self, model):
        c = self.config
        return {"format": f"{c.bits}-bit {'symmetric' if c.symmetric else 'asymmetric'} min-max, "
                          f"{c.granularity}{'' if c.granularity != 'group' else f' g{c.group_size}'}, "
                          "bit-packed uint8 codes + fp16 scales" + ("" if c.symmetric else " + uint8 zeros"),
                "layers": [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]}

    def restore(self, model, tensors, meta):
        swap_named(model, restore_names(meta, model, self.config.skip), self._make(fill=False))
        model.load_state_dict(tensors, strict=True)
        return model
