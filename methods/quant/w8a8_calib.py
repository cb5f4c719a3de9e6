"""Static activation ranges for `quant.w8a8:activations=static`: one calibration pass observing
every target layer's input, then a per-tensor scale (and zero point) per layer by min-max, a
percentile or the clip with the least quantization MSE."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from slimbench.methods.common.calibrate import calibration_pass
from slimbench.methods.quant.w8a8 import QMAX, asym_params, quantize_asym

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.quant.configs import W8A8Config


class _RangeObserver:
    """Running signed min / max plus a seeded uniform sample of x for percentile / MSE clipping."""

    def __init__(self, per_batch: int, cap: int, gen: torch.Generator):
        self.lo, self.hi, self.samples, self.per_batch, self.cap, self.gen = 0.0, 0.0, [], per_batch, cap, gen
        self.count = 0

    def __call__(self, module: nn.Module, args: tuple) -> None:
        a = args[0].detach().float().reshape(-1)
        if a.numel():
            self.lo, self.hi = min(self.lo, float(a.min())), max(self.hi, float(a.max()))
        self.count += 1
        if sum(s.numel() for s in self.samples) < self.cap and a.numel():
            idx = torch.randint(0, a.numel(), (min(self.per_batch, a.numel()),), generator=self.gen)
            self.samples.append(a[idx.to(a.device)].cpu())

    @property
    def absmax(self) -> float:
        return max(-self.lo, self.hi)

    def scale(self, method: str, percentile: float) -> float:
        """Symmetric per-tensor scale: clip |x| at the chosen point, / 127."""
        if method == "minmax" or not self.samples:
            clip = self.absmax
        elif method == "percentile":
            clip = float(torch.quantile(torch.cat(self.samples).abs(), percentile / 100))
        else:
            clip = self._mse_clip(torch.cat(self.samples).abs())
        return max(clip, 1e-8) / QMAX

    def _mse_clip(self, a: torch.Tensor, grid: int = 80) -> float:
        best, best_err = self.absmax, float("inf")
        for r in torch.linspace(1.0, 0.05, grid).tolist():
            s = max(self.absmax * r, 1e-8) / QMAX
            err = float(((torch.round(a / s).clamp(max=QMAX) * s - a) ** 2).mean())
            if err < best_err:
                best, best_err = self.absmax * r, err
        return best

    def asym(self, method: str, percentile: float, grid: int = 80) -> tuple[float, int]:
        """Asymmetric per-tensor (scale, zero point) from a clipped [lo, hi]: min-max, the
        (100-p, p) percentiles, or both ends shrunk by the factor with the least MSE."""
        lo, hi = torch.tensor(self.lo), torch.tensor(self.hi)
        if method == "percentile" and self.samples:
            x = torch.cat(self.samples)
            lo, hi = torch.quantile(x, 1 - percentile / 100), torch.quantile(x, percentile / 100)
        elif method == "mse" and self.samples:
            x, best_err = torch.cat(self.samples), float("inf")
            for r in torch.linspace(1.0, 0.05, grid).tolist():
                s, z = asym_params(torch.tensor(self.lo * r), torch.tensor(self.hi * r))
                err = float(((quantize_asym(x, s, z).float() - z) * s - x).pow(2).mean())
                if err < best_err:
                    best_err, lo, hi = err, torch.tensor(self.lo * r), torch.tensor(self.hi * r)
        s, z = asym_params(lo, hi)
        return float(s), int(z)


def calibrate(model: nn.Module, layers: list[tuple[str, nn.Module]], ctx: "CompressionContext",
              cfg: "W8A8Config", owner: str) -> dict[str, tuple[float, int | None]]:
    """Run the calibration batches once, observing every target layer's input -> static
    (scale, zero point or None). A conv's hook sees its NCHW input, i.e. the values im2col copies."""
    gen = torch.Generator().manual_seed(ctx.seed)
    obs = {n: _RangeObserver(cfg.samples_per_batch, 64 * cfg.samples_per_batch, gen) for n, _ in layers}
    handles = [m.register_forward_pre_hook(obs[n]) for n, m in layers]
    try:
        calibration_pass(model, ctx, owner, "static activation quantization",
                         lambda: [n for n, o in obs.items() if o.count == 0])
    finally:
        for h in handles:
            h.remove()
    if cfg.act_symmetric:
        return {n: (o.scale(cfg.calibration, cfg.percentile), None) for n, o in obs.items()}
    return {n: o.asym(cfg.calibration, cfg.percentile) for n, o in obs.items()}
