"""W8A8 layers for `quant.w8a8` (method: `methods.W8A8`): int8 weights (per output channel) x int8 activations, int32 accumulation.

Activations are quantized per token at run time (`dynamic`) or with one per-tensor scale
per layer fixed from calibration data (`static`: min-max, a percentile of |x|, or the clip
that minimises quantization MSE). The CPU path runs the integer GEMM through
`torch._int_mm` (exact int32); on CUDA a Triton kernel fuses both scales into the epilogue.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from slimbench.methods.quant.common import (calibration_pass, eligible, linear_cost, restore_names, swap_named,
                                            targets)

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.quant.methods import W8A8Config

QMAX = 127


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (int8 [m, k], fp32 scale [m])."""
    scale = (x.float().abs().amax(-1) / QMAX).clamp(min=1e-10)
    q = torch.round(x.float() / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


def quantize_static(x: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.round(x.float() / scale.float()).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale.float().expand(x.shape[0])


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a int8 [m, k] @ b int8 [n, k]^T -> exact int32 [m, n].

    `torch._int_mm` on CUDA needs m > 16 and k, n multiples of 8; on CPU it takes any
    2-D shape. Elsewhere, a float64 matmul is exact (|sum| < 2**53 for any practical k).
    """
    m, k = a.shape
    n = b.shape[0]
    cuda_ok = m > 16 and k % 8 == 0 and n % 8 == 0 and k >= 16
    if a.device.type == "cpu" or (a.is_cuda and cuda_ok):
        try:
            return torch._int_mm(a, b.t())
        except RuntimeError:  # a build without this kernel: fall through to the reference
            pass
    return (a.double() @ b.double().t()).to(torch.int32)


class W8A8Linear(nn.Module):
    """Buffers: `weight` int8 [out, in] (K-major, as the GEMM wants), `weight_scale` fp32 [out],
    `input_scale` fp32 [] (static mode only), `bias`."""

    def __init__(self, in_features: int, out_features: int, bias: bool, static: bool):
        super().__init__()
        self.in_features, self.out_features, self.static = in_features, out_features, static
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("input_scale", torch.ones(()) if static else None)
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, lin: nn.Linear, input_scale: float | None) -> "W8A8Linear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None, input_scale is not None)
        w = lin.weight.detach().float()
        scale = (w.abs().amax(1) / QMAX).clamp(min=1e-10)
        q.weight.copy_(torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8))
        q.weight_scale.copy_(scale)
        if input_scale is not None:
            q.input_scale.fill_(input_scale)
        if lin.bias is not None:
            q.bias = lin.bias.detach().clone()
        return q.to(lin.weight.device)

    def kernel_forward(self, x2: torch.Tensor) -> torch.Tensor:
        """Triton path for x2 [M, K]: quantize activations, int8 GEMM with fused scales + bias.

        Used for CUDA tensors; tests call it on CPU tensors under the Triton interpreter."""
        from slimbench.methods.quant.kernels import w8a8 as kern

        xq, xs = kern.quantize_act(x2, self.input_scale)
        out = x2.dtype if x2.dtype in (torch.float16, torch.bfloat16) else torch.float32
        return kern.int8_gemm(xq, self.weight, xs, self.weight_scale, self.bias, out_dtype=out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if x.is_cuda:
            y = self.kernel_forward(x2)
        else:
            xq, xs = quantize_static(x2, self.input_scale) if self.static else quantize_per_token(x2)
            acc = int8_matmul(xq, self.weight)
            y = acc.float() * xs[:, None] * self.weight_scale[None, :]
            if self.bias is not None:
                y = y + self.bias.float()
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return linear_cost(self, inputs)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, static={self.static}"


class _RangeObserver:
    """Running |x| max plus a seeded uniform sample of |x| for percentile / MSE clipping."""

    def __init__(self, per_batch: int, cap: int, gen: torch.Generator):
        self.absmax, self.samples, self.per_batch, self.cap, self.gen = 0.0, [], per_batch, cap, gen
        self.count = 0

    def __call__(self, module: nn.Module, args: tuple) -> None:
        a = args[0].detach().float().abs().reshape(-1)
        self.absmax = max(self.absmax, float(a.max()) if a.numel() else 0.0)
        self.count += 1
        if sum(s.numel() for s in self.samples) < self.cap and a.numel():
            idx = torch.randint(0, a.numel(), (min(self.per_batch, a.numel()),), generator=self.gen)
            self.samples.append(a[idx.to(a.device)].cpu())

    def scale(self, method: str, percentile: float) -> float:
        if method == "minmax" or not self.samples:
            clip = self.absmax
        elif method == "percentile":
            clip = float(torch.quantile(torch.cat(self.samples), percentile / 100))
        else:
            clip = self._mse_clip(torch.cat(self.samples))
        return max(clip, 1e-8) / QMAX

    def _mse_clip(self, a: torch.Tensor, grid: int = 80) -> float:
        best, best_err = self.absmax, float("inf")
        for r in torch.linspace(1.0, 0.05, grid).tolist():
            s = max(self.absmax * r, 1e-8) / QMAX
            err = float(((torch.round(a / s).clamp(max=QMAX) * s - a) ** 2).mean())
            if err < best_err:
                best, best_err = self.absmax * r, err
        return best


def calibrate(model: nn.Module, layers: list[tuple[str, nn.Linear]], ctx: "CompressionContext",
              cfg: "W8A8Config", owner: str) -> dict[str, float]:
    """Run the calibration batches once, observing every target layer's input -> static scales."""
    gen = torch.Generator().manual_seed(ctx.seed)
    obs = {n: _RangeObserver(cfg.samples_per_batch, 64 * cfg.samples_per_batch, gen) for n, _ in layers}
    handles = [m.register_forward_pre_hook(obs[n]) for n, m in layers]
    try:
        calibration_pass(model, ctx, owner, "static activation quantization",
                         lambda: [n for n, o in obs.items() if o.count == 0])
    finally:
        for h in handles:
            h.remove()
    return {n: o.scale(cfg.calibration, cfg.percentile) for n, o in obs.items()}


def quantize_model(model: nn.Module, cfg: "W8A8Config", owner: str, ctx: "CompressionContext") -> nn.Module:
    """Swap every eligible nn.Linear for a W8A8Linear (calibrating first in static mode)."""
    layers = targets(model, cfg.skip, owner)
    scales = calibrate(model, layers, ctx, cfg, owner) if cfg.activations == "static" else {}
    swap_named(model, [n for n, _ in layers], lambda name, lin: W8A8Linear.from_linear(lin, scales.get(name)))
    return model


def rebuild(model: nn.Module, meta: dict, cfg: "W8A8Config") -> nn.Module:
    """Swap in empty W8A8 layers where the artifact has them, ready for load_state_dict."""
    static = cfg.activations == "static"
    swap_named(model, restore_names(meta, model, cfg.skip),
               lambda _, lin: W8A8Linear(lin.in_features, lin.out_features, lin.bias is not None, static))
    return model


def has_targets(model: nn.Module, skip) -> bool:
    return bool(eligible(model, skip))


def quantized_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, W8A8Linear)]
