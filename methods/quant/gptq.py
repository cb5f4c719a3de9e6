"""GPTQ for `quant.gptq` (method: `plugins.GPTQ`): second-order weight-only quantization.

Every eligible layer's weight W [out, k] (a conv's [out, in/groups*kh*kw] view) is quantized
column by column; the rounding error of each column is pushed onto the columns not yet
quantized through the Cholesky factor of H^-1, with H = 2 X^T X over the calibration inputs
X of that layer (a conv's unfolded patches). This minimises ||X W^T - X Q^T|| rather than
||W - Q||, which is what min-max rounding does.

Choices, and why:
- All layers' Hessians are collected in ONE calibration pass over the fp32 model (not
  sequentially on partly quantized outputs): one pass costs the same for any depth, and the
  method stays simple; sequential GPTQ would need one pass per layer.
- The grid is exactly quant.minmax's (fp16 scales, optional uint8 zero-points, per tensor /
  channel / group), and the result is the same packed QuantLinear / QuantConv2d, so restore
  is quant.minmax's and the CUDA W4A16 kernel applies unchanged.
- Group scales are set lazily from the error-updated weights when a group starts (better);
  with act_order they are fixed up front from the original weights ("static groups"), so a
  group still covers consecutive input features and storage stays contiguous.
- Grouped convs get one Hessian per group (their groups see different input channels);
  all groups are processed as one batch.
- A column whose input was always zero (H_jj = 0) keeps its weight and is plainly rounded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.methods.common import storage as packing
from slimbench.methods.common.calibrate import calibration_pass
from slimbench.methods.common.layers import fan_in, swap_named
from slimbench.methods.quant.linear import QuantConv2d, QuantLinear, granularity_for, quantize_weight, target_layers

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.quant.configs import GPTQConfig

_UNFOLD_ELEMENTS = 1 << 24  # cap on an unfolded conv input chunk (memory, not results)


class HessianAccumulator:
    """Forward pre-hook: running mean of 2 x x^T over a layer's inputs, one matrix per conv group."""

    def __init__(self, layer: nn.Module):
        self.layer = layer
        self.groups = layer.groups if isinstance(layer, nn.Conv2d) else 1
        self.k = fan_in(layer)
        self.H: torch.Tensor | None = None
        self.n = 0

    def _rows(self, x: torch.Tensor):
        """Yield [G, rows, k] chunks of the layer's input as its weight view sees it."""
        layer = self.layer
        if not isinstance(layer, nn.Conv2d):
            yield x.reshape(1, -1, self.k)
            return
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        x = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)  # covers int and 'same' padding
        per_item = max(1, x[0].numel() * layer.kernel_size[0] * layer.kernel_size[1])
        step = max(1, _UNFOLD_ELEMENTS // per_item)
        for i in range(0, x.shape[0], step):
            cols = F.unfold(x[i:i + step], layer.kernel_size, layer.dilation, 0, layer.stride)  # [b, C*kh*kw, L]
            cols = cols.transpose(1, 2).reshape(-1, self.groups, self.k)
            yield cols.transpose(0, 1)

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach().float()
        for rows in self._rows(x):
            m = rows.shape[1]
            if m == 0:
                continue
            if self.H is None:
                self.H = torch.zeros(self.groups, self.k, self.k, device=rows.device)
            # running mean keeps the magnitude (and fp32 precision) independent of the data size
            self.H.mul_(self.n / (self.n + m)).add_(rows.transpose(1, 2) @ rows, alpha=2.0 / (self.n + m))
            self.n += m


def collect_hessians(model: nn.Module, layers: list[tuple[str, nn.Module]], ctx: "CompressionContext",
                     owner: str) -> dict[str, torch.Tensor]:
    """One calibration pass over the unmodified model -> {layer: H [groups, k, k]}."""
    acc = {n: HessianAccumulator(m) for n, m in layers}
    handles = [m.register_forward_pre_hook(acc[n]) for n, m in layers]
    try:
        calibration_pass(model, ctx, owner, "GPTQ (each layer's Hessian)",
                         lambda: [n for n, a in acc.items() if a.H is None])
    finally:
        for h in handles:
            h.remove()
    return {n: a.H for n, a in acc.items()}


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) I)^-1, per batch entry.

    If a Hessian is still not positive definite (rank-deficient inputs in low precision),
    the dampening is raised tenfold, up to four times, rather than failing the run."""
    H = H.clone()
    diag = H.diagonal(dim1=-2, dim2=-1)
    diag[diag == 0] = 1.0  # dead inputs: no error feedback into or out of them
    eye = torch.eye(H.shape[-1], device=H.device, dtype=H.dtype)
    mean = diag.mean(-1)[:, None, None]
    for attempt in range(5):
        frac = damp if attempt == 0 else max(damp, 1e-4) * 10 ** attempt
        L, info = torch.linalg.cholesky_ex(H + frac * mean * eye)
        if not info.any():
            break
    else:
        raise RuntimeError("GPTQ: the layer Hessian is not positive definite even with strong dampening")
    U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
    if info.any():
        raise RuntimeError("GPTQ: Cholesky of the inverse Hessian failed; raise damp")
    return U


def _round(w: torch.Tensor, s: torch.Tensor, z: torch.Tensor | None, bits: int, symmetric: bool):
    """One column on the min-max grid: (dequantized value, stored code); formulas of `quantize_weight`."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        q = torch.round(w / s).clamp(-qmax, qmax)
        return q * s, (q if bits == 8 else q + 2 ** (bits - 1))
    qmax = 2 ** bits - 1
    c = (torch.round(w / s) + z).clamp(0, qmax)
    return (c - z) * s, c


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int, granularity: str, group_size: int,
                  symmetric: bool, damp: float = 0.01, block_size: int = 128, act_order: bool = False):
    """GPTQ on W [out, k] with Hessians H [G, k, k] (rows split evenly into G groups).

    Returns (codes [out, k] as quantize_weight stores them, fp16 scale, uint8 zero | None),
    shaped exactly like `quantize_weight(W, bits, granularity, group_size, symmetric)`.
    """
    out, k = W.shape
    G = H.shape[0]
    n = out // G
    W0 = W.detach().float()
    gs = min(group_size, k) if granularity == "group" else k
    lazy = granularity == "group" and gs < k and not act_order
    Wg = W0.reshape(G, n, k).clone()
    H = H.float().to(W0.device)

    if lazy:
        scale = torch.empty(out, k // gs, dtype=torch.float16, device=W0.device)
        zero = None if symmetric else torch.empty(out, k // gs, dtype=torch.uint8, device=W0.device)
        block_size = max(gs, block_size // gs * gs)  # a group never straddles a lazy-batch boundary
    else:  # static grid from the original weights, expanded to one (scale, zero) per weight
        _, scale, zero = quantize_weight(W0, bits, granularity, gs, symmetric)
        rows, groups = scale.shape
        S = scale.float().reshape(rows, groups, 1).expand(rows, groups, k // groups).reshape(rows, k)
        S = S.expand(out, k).reshape(G, n, k)
        Z = None if zero is None else \
            zero.float().reshape(rows, groups, 1).expand(rows, groups, k // groups).reshape(rows, k).expand(out, k) \
                .reshape(G, n, k)

    perm = None
    if act_order:
        perm = torch.argsort(H.diagonal(dim1=-2, dim2=-1), dim=-1, descending=True, stable=True)  # [G, k]
        Wg = Wg.gather(2, perm[:, None, :].expand(G, n, k))
        S = S.gather(2, perm[:, None, :].expand(G, n, k))
        Z = None if Z is None else Z.gather(2, perm[:, None, :].expand(G, n, k))
        H = H.gather(1, perm[:, :, None].expand(G, k, k)).gather(2, perm[:, None, :].expand(G, k, k))
    U = _inverse_cholesky(H, damp)

    codes = torch.zeros(G, n, k, device=W0.device)
    s_cur = z_cur = None
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        W1, U1 = Wg[:, :, i1:i2].clone(), U[:, i1:i2, i1:i2]
        E1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            if lazy and col % gs == 0:  # new group: min-max grid of its error-updated weights
                _, sc, zr = quantize_weight(W1[:, :, i:i + gs].reshape(out, gs), bits, "channel", gs, symmetric)
                scale[:, col // gs] = sc[:, 0]
                s_cur = sc.float().reshape(G, n)
                if zr is not None:
                    zero[:, col // gs] = zr[:, 0]
                    z_cur = zr.float().reshape(G, n)
            s = s_cur if lazy else S[:, :, col]
            z = z_cur if lazy else (None if Z is None else Z[:, :, col])
            w = W1[:, :, i]
            deq, code = _round(w, s, z, bits, symmetric)
            codes[:, :, col] = code
            err = (w - deq) / U1[:, i, i][:, None]
            W1[:, :, i:] -= err[:, :, None] * U1[:, i, i:][:, None, :]
            E1[:, :, i] = err
        Wg[:, :, i2:] -= E1 @ U[:, i1:i2, i2:]

    if perm is not None:
        codes = codes.gather(2, torch.argsort(perm, dim=-1)[:, None, :].expand(G, n, k))
    codes = codes.reshape(out, k)
    codes = codes.to(torch.int8) if (symmetric and bits == 8) else codes.to(torch.uint8)
    return codes, scale, zero


def _quantized_twin(layer: nn.Module, H: torch.Tensor, cfg: "GPTQConfig") -> QuantLinear:
    """A QuantLinear / QuantConv2d whose buffers hold GPTQ codes instead of min-max ones."""
    gran = granularity_for(layer, cfg)
    args = (cfg.bits, gran, cfg.group_size, cfg.symmetric)
    if isinstance(layer, nn.Conv2d):
        q = QuantConv2d(layer, *args)
    else:
        q = QuantLinear(layer.in_features, layer.out_features, layer.bias is not None, *args)
    q = q.to(layer.weight.device)
    codes, scale, zero = gptq_quantize(layer.weight.detach().reshape(layer.weight.shape[0], -1), H, cfg.bits,
                                       gran, cfg.group_size, cfg.symmetric, cfg.damp, cfg.block_size,
                                       cfg.act_order)
    q.qweight.copy_(codes if cfg.bits == 8 and cfg.symmetric else packing.pack(codes, cfg.bits))
    q.scale.copy_(scale)
    if zero is not None:
        q.zero.copy_(zero)
    if layer.bias is not None:
        q.bias = layer.bias.detach().clone()
    return q


def quantize_model(model: nn.Module, cfg: "GPTQConfig", owner: str, ctx: "CompressionContext") -> nn.Module:
    """Check group sizes, collect all Hessians in one pass, then swap each layer for its GPTQ twin."""
    layers = target_layers(model, cfg, owner)
    hessians = collect_hessians(model, layers, ctx, owner)
    swap_named(model, [n for n, _ in layers], lambda name, layer: _quantized_twin(layer, hessians.pop(name), cfg))
    return model
