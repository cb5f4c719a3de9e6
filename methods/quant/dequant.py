"""The forward shared by weight-only quantized layers: a GPU kernel on the packed form when one
applies, else dequantize then the dense op (the CPU reference path)."""
from __future__ import annotations

import torch
from torch import nn

from slimbench.methods.common.cast import PackedStorage
from slimbench.methods.common.layers import REFERENCE, ConvGeometry, conv_cost, dtype_bits, linear_cost


class DequantConv(ConvGeometry):
    """Shared forward of weight-only convs stored like a DequantLinear over the [out, fan_in] view:
    dequantize, reshape to 4-d, then the original conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_4d(self.dequantize().to(x.dtype), x)
        return self.conv(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return conv_cost(self, output, bits=(self.weight_bits, dtype_bits(inputs[0])))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        return f"{REFERENCE}dequantize + dense conv every call"


class DequantLinear(PackedStorage, nn.Module):
    """Shared forward of weight-only Linear layers: a GPU kernel on the packed form when one
    applies (`kernel_forward` returns None otherwise), else dequantize then `F.linear`
    (the CPU reference path). Subclasses define `dequantize()`, `kernel_forward(x2)` and
    `weight_bits` (stored bits per weight, for BOPs)."""

    in_features: int
    out_features: int
    weight_bits: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if x.is_cuda:
            y = self.kernel_forward(x.reshape(-1, self.in_features))
            if y is not None:
                return y.reshape(*x.shape[:-1], self.out_features)
        w = self.dequantize().to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return linear_cost(self, inputs, bits=(self.weight_bits, dtype_bits(inputs[0])))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        """`kernel_path` names the GPU kernel where one applies (None otherwise)."""
        kernel = self.kernel_path(dtype) if device.startswith("cuda") else None
        return kernel or f"{REFERENCE}dequantize + dense GEMM every call"

    def kernel_path(self, dtype: torch.dtype) -> str | None:
        return None

    def slim_weight(self) -> torch.Tensor:
        """The dense weight this layer computes with ([out, fan_in]), for measured sparsity and FLOPs."""
        return self.dequantize()
