"""The factorised layers: what is stored and what runs.

`LowRankLinear` holds W ~ U V as two plain linears (`first`: V [r, in], `second`: U [out, r] +
bias), so the artifact's bytes and parameter counts are the factors', and the torch path is two
matmuls. On CUDA it can run the fused Triton kernel instead (one launch, the rank-r intermediate
never written out). `TuckerConv2d` is three plain convs (1x1 -> kxk core -> 1x1), which every
backend runs as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn



class LowRankLinear(nn.Module):
    """y = (x V^T) U^T + b, with V = `first.weight` [r, in] and U = `second.weight` [out, r]."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool, kernel: str = "torch"):
        super().__init__()
        self.in_features, self.out_features, self.rank, self.kernel = in_features, out_features, rank, kernel
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_factors(cls, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, kernel: str
                     ) -> "LowRankLinear":
        """From W ~ a @ b (a [out, r], b [r, in])."""
        layer = cls(b.shape[1], a.shape[0], a.shape[1], bias is not None, kernel)
        with torch.no_grad():
            layer.first.weight.copy_(b)
            layer.second.weight.copy_(a)
            if bias is not None:
                layer.second.bias.copy_(bias)
        return layer.to(a.device)

    def _fused(self, x: torch.Tensor) -> bool:
        return self.kernel != "torch" and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) \
            and not torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused(x):
            from slimbench.methods.lowrank.kernels.fused import lowrank_linear
            shape = x.shape
            y = lowrank_linear(x.reshape(-1, shape[-1]), self.first.weight, self.second.weight, self.second.bias)
            return y.reshape(*shape[:-1], self.out_features)
        return self.second(F.linear(x, self.first.weight))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        fused = self.kernel != "torch" and device.startswith("cuda") and dtype in (torch.float16, torch.bfloat16)
        return "Triton fused low-rank GEMM" if fused else "two dense GEMMs on the factors"

    def slim_cost(self, inputs: tuple, output: torch.Tensor) -> dict[str, int]:
        """The two matmuls' FLOPs (whichever path ran: the fused kernel does the same arithmetic)."""
        tokens = inputs[0].numel() // self.in_features
        flops = 2 * tokens * self.rank * (self.in_features + self.out_features)
        return {"dense": flops, "effective": flops}

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, kernel={self.kernel}"


class TuckerConv2d(nn.Module):
    """A kxk conv as 1x1 (in -> r_in), kxk core (r_in -> r_out, the original's stride, padding and
    dilation), 1x1 (r_out -> out, the original's bias)."""

    def __init__(self, conv: nn.Conv2d, r_out: int, r_in: int):
        super().__init__()
        self.ranks = (r_out, r_in)
        self.first = nn.Conv2d(conv.in_channels, r_in, 1, bias=False)
        self.core = nn.Conv2d(r_in, r_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False,
                              padding_mode=conv.padding_mode)
        self.last = nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None)
        w = conv.weight
        if w.dim() == 4 and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
            self.to(memory_format=torch.channels_last)
        self.to(w.device)

    def fill(self, first: torch.Tensor, core: torch.Tensor, last: torch.Tensor, bias: torch.Tensor | None
             ) -> "TuckerConv2d":
        with torch.no_grad():
            self.first.weight.copy_(first)
            self.core.weight.copy_(core)
            self.last.weight.copy_(last)
            if bias is not None:
                self.last.bias.copy_(bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.core(self.first(x)))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        return "three dense convs on the Tucker factors"

    def extra_repr(self) -> str:
        return f"ranks(out, in)={self.ranks}"
