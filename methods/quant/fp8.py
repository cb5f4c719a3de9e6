"""FP8 e4m3 W8A8 Linear layers for `quant.fp8` (method: `plugins.FP8`).

Weights are stored as float8_e4m3fn with fp32 scales (one per tensor, or one per output
channel), so the artifact holds one byte per weight. Activations are scaled dynamically at
run time (per tensor, or per token with row scaling) and cast to e4m3; the GEMM is
`torch._scaled_mm` with both scales applied in its epilogue.

The harness runs this only on CUDA GPUs with compute capability >= 8.9 (the method's
`supports()` says so); `reference_forward`, an fp32 simulation of the same quantization, is
the CPU forward that tests use to check storage and round trips. It is never timed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.methods.common.layers import REFERENCE, linear_cost, swap_named, targets

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.quant.configs import FP8Config

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
_ALIGN = 16  # _scaled_mm wants K and N multiples of 16


def _scale_for(t: torch.Tensor, rowwise: bool) -> torch.Tensor:
    """fp32 scale mapping |t|'s max (per row, or overall) onto the e4m3 max."""
    amax = t.abs().amax(-1, keepdim=True) if rowwise else t.abs().amax()
    return (amax.float() / FP8_MAX).clamp(min=1e-12)


def to_fp8(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (t.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


class FP8Linear(nn.Module):
    """Buffers: `weight` float8_e4m3fn [out, in], `weight_scale` fp32 ([] or [out, 1]), `bias` fp32."""

    def __init__(self, in_features: int, out_features: int, bias: bool, scaling: str = "tensor"):
        super().__init__()
        self.in_features, self.out_features, self.scaling = in_features, out_features, scaling
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=FP8))
        self.register_buffer("weight_scale", torch.ones(out_features, 1) if scaling == "row" else torch.ones(()))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._padded = None  # (device, weight [Np, Kp] fp8, scale_b) for _scaled_mm

    @property
    def rowwise(self) -> bool:
        return self.scaling == "row"

    @classmethod
    def from_linear(cls, lin: nn.Linear, scaling: str) -> "FP8Linear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, scaling).to(lin.weight.device)
        w = lin.weight.detach().float()
        scale = _scale_for(w, q.rowwise)
        q.weight.copy_(to_fp8(w, scale))
        q.weight_scale.copy_(scale)
        if lin.bias is not None:
            q.bias.copy_(lin.bias.detach().float())
        return q

    def _load_from_state_dict(self, *args, **kwargs):
        self._padded = None
        super()._load_from_state_dict(*args, **kwargs)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scale

    def slim_weight(self) -> torch.Tensor:
        """The dense weight this layer computes with, for measured sparsity and FLOPs."""
        return self.dequantize()

    def quantize_input(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamic e4m3 activations: (fp8 [M, K], fp32 scale [] or [M, 1])."""
        scale = _scale_for(x2, self.rowwise)
        return to_fp8(x2, scale), scale

    def reference_forward(self, x2: torch.Tensor) -> torch.Tensor:
        """fp32 simulation of the kernel: same fp8 rounding of both operands, fp32 accumulation."""
        xq, xs = self.quantize_input(x2)
        y = (xq.float() * xs) @ self.dequantize().t()
        return y if self.bias is None else y + self.bias

    def _weight_operand(self, device: torch.device):
        if self._padded is None or self._padded[0] != device:
            n, k = self.out_features, self.in_features
            w = F.pad(self.weight.view(torch.uint8), (0, -k % _ALIGN, 0, -n % _ALIGN)).view(FP8)  # fp8 zero = 0x00
            if self.rowwise:
                sb = F.pad(self.weight_scale.reshape(1, n), (0, -n % _ALIGN), value=1.0)
            else:
                sb = self.weight_scale.reshape(())
            self._padded = (device, w.to(device).contiguous(), sb.to(device).float().contiguous())
        return self._padded[1], self._padded[2]

    def kernel_forward(self, x2: torch.Tensor) -> torch.Tensor:
        """torch._scaled_mm on x2 [M, K] (fp32 result). Used for CUDA tensors; tests also run it on CPU."""
        w, sb = self._weight_operand(x2.device)
        xq, xs = self.quantize_input(x2)
        pad_k = w.shape[1] - self.in_features
        if pad_k:
            xq = F.pad(xq.view(torch.uint8), (0, pad_k)).view(FP8)
        # row-wise scaling is only implemented with a bf16 result; per-tensor can return fp32
        out_dtype = torch.bfloat16 if self.rowwise else torch.float32
        y = torch._scaled_mm(xq.contiguous(), w.t(), scale_a=xs.float().contiguous(), scale_b=sb,
                             out_dtype=out_dtype)
        y = y[:, :self.out_features].float()
        return y if self.bias is None else y + self.bias.to(y.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        y = self.kernel_forward(x2) if x.is_cuda else self.reference_forward(x2.float())
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return linear_cost(self, inputs, bits=(8, 8))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        return "torch._scaled_mm (FP8 tensor cores)" if device.startswith("cuda") else \
            f"{REFERENCE}FP8 codes dequantized + dense GEMM"

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scaling={self.scaling}"


def quantize_model(model: nn.Module, cfg: "FP8Config", owner: str) -> nn.Module:
    """Swap every eligible nn.Linear for an FP8Linear."""
    layers = targets(model, cfg.skip, owner)
    swap_named(model, [n for n, _ in layers], lambda _, lin: FP8Linear.from_linear(lin, cfg.scaling))
    return model
