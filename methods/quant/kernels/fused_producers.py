"""Fused producers for W8A8 transformer blocks: what feeds the int8 GEMMs without extra passes.

Why: in a W8A8 BERT layer the QKV input is written by a LayerNorm, then read back three
times by three per-token quantization kernels, each writing its own int8 copy for its own
GEMM. Here the LayerNorm (after the residual add) also writes the int8 codes and per-row
scales (`layernorm_quant`: one launch, one read of the row), and Q, K and V run as one int8
GEMM on that one quantized input (`fuse_w8a8_weights` + `fused_linear`, N = 3 x 768), which
also fills the GPU better than three N = 768 GEMMs. The GEMM is `w8a8.int8_gemm` itself.

The codes follow `w8a8.quantize_act` exactly (s = max(max|y|/127, 1e-10), q = clamp(round
half to even(y / s), +-127)), computed from `y` as stored in the output dtype, so they equal
`quantize_act(y)` bit for bit and the int8 GEMM takes them unchanged. The fused weights are
built at load time from the stored per-layer buffers; the saved format does not change.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from slimbench.methods.quant.kernels import w8a8
from slimbench.methods.quant.kernels._util import pow2_cover, round_half_even

MAX_N = 16384  # the whole row sits in registers (mean, variance, row max): past this it would spill


@triton.jit
def _layernorm_quant_kernel(x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, q_ptr, s_ptr, M, N, eps,
                            stride_xm, stride_rm, stride_ym, stride_qm,
                            HAS_RES: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < N
    mask = rmask[:, None] & cmask[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:  # torch adds in the input dtype, then normalizes: round the sum the same way
        r = tl.load(r_ptr + rows[:, None] * stride_rm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        x = (x + r).to(y_ptr.dtype.element_ty).to(tl.float32)
    mean = tl.sum(x, axis=1) / N
    d = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(d * d, axis=1) / N
    y = d * tl.math.rsqrt(var + eps)[:, None]
    if HAS_W:
        y = y * tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    if HAS_B:
        y = y + tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    y = y.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :], y, mask=mask)
    yf = y.to(tl.float32)  # quantize what was stored, so q == quantize_act(y) exactly
    scale = tl.maximum(tl.max(tl.where(mask, tl.abs(yf), 0.0), axis=1) / 127.0, 1e-10)
    q = tl.minimum(tl.maximum(round_half_even(yf / scale[:, None]), -127.0), 127.0)
    tl.store(q_ptr + rows[:, None] * stride_qm + cols[None, :], q.to(tl.int8), mask=mask)
    tl.store(s_ptr + rows, scale, mask=rmask)


@dataclass(frozen=True)
class LNConfig:
    block_m: int = 4  # rows per program
    num_warps: int = 4


def ln_default_config(m: int, n: int) -> LNConfig:
    """~4K elements per program (N = 768: 4 rows, 1024 programs at M = 4096) and one warp per 1K
    of them (4 to 16), so each thread holds ~32 fp32 values of the row block and nothing spills."""
    block_n = pow2_cover(n, 16, MAX_N)
    block_m = max(1, min(16, 4096 // block_n, pow2_cover(m, 1, 16)))
    return LNConfig(block_m, max(4, min(16, block_m * block_n // 1024)))


def layernorm_quant(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5,
                    residual: torch.Tensor | None = None,
                    config: LNConfig | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm(x + residual) over the last dim -> (y like x, int8 codes [M, N], fp32 scales [M]).

    `y` (the residual stream still needs it) is in x's dtype; the codes and scales are the
    per-token quantization of `y` that `w8a8.quantize_act` would give, flattened to the rows the
    int8 GEMM takes. One launch; one program per `config.block_m` rows, each row whole in registers."""
    n = x.shape[-1]
    if n > MAX_N:
        raise ValueError(f"layernorm_quant keeps a row in registers: N={n} > {MAX_N}; use F.layer_norm + quantize_act")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"layernorm_quant: residual {tuple(residual.shape)} != x {tuple(x.shape)}")
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    r2 = None
    if residual is not None:
        r2 = residual.reshape(-1, n)
        r2 = r2 if r2.stride(-1) == 1 else r2.contiguous()
    m = x2.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    q = torch.empty(m, n, dtype=torch.int8, device=x.device)
    s = torch.empty(m, dtype=torch.float32, device=x.device)
    cfg = config or ln_default_config(m, n)
    dummy = s
    _layernorm_quant_kernel[(triton.cdiv(m, cfg.block_m),)](
        x2, r2 if r2 is not None else dummy, weight if weight is not None else dummy,
        bias if bias is not None else dummy, y, q, s, m, n, float(eps),
        x2.stride(0), r2.stride(0) if r2 is not None else 0, y.stride(0), q.stride(0),
        HAS_RES=r2 is not None, HAS_W=weight is not None, HAS_B=bias is not None,
        BLOCK_M=cfg.block_m, BLOCK_N=pow2_cover(n, 16, MAX_N), num_warps=cfg.num_warps)
    return y.reshape(x.shape), q, s


@dataclass(frozen=True)
class FusedWeights:
    """Several W8A8 Linears on one input as one: weights stacked along N ([sum N_i, K] int8,
    K contiguous as `int8_gemm` reads them), their per-channel scales and biases likewise.
    `input_scale`: the shared static scale, None for per-token (dynamic) activations."""
    weight: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None
    sizes: tuple[int, ...]
    input_scale: torch.Tensor | None


def fuse_w8a8_weights(layers) -> FusedWeights:
    """Stack W8A8 Linears that read the same input (Q, K, V) into one GEMM's operands. Their
    activations must be quantized the same way: all per-token symmetric, or all static
    symmetric with one scale (one quantized input serves all). A missing bias becomes zeros."""
    layers = list(layers)
    k = {lay.in_features for lay in layers}
    if len(k) != 1:
        raise ValueError(f"fuse_w8a8_weights: in_features differ ({sorted(k)}): these layers do not share an input")
    if not all(lay.symmetric for lay in layers):
        raise ValueError("fuse_w8a8_weights: asymmetric activations are quantized with a zero point per layer")
    static = {lay.static for lay in layers}
    if static == {True}:
        scales = {float(lay.input_scale) for lay in layers}
        if len(scales) != 1:
            raise ValueError(f"fuse_w8a8_weights: static input scales differ ({sorted(scales)}): one quantized "
                             "input cannot serve them all")
    elif static != {False}:
        raise ValueError("fuse_w8a8_weights: a mix of static and per-token activations")
    bias = None
    if any(lay.bias is not None for lay in layers):
        bias = torch.cat([lay.bias.float() if lay.bias is not None else
                          torch.zeros(lay.out_features, device=lay.weight.device) for lay in layers])
    return FusedWeights(torch.cat([lay.weight for lay in layers]).contiguous(),
                        torch.cat([lay.weight_scale.float() for lay in layers]).contiguous(), bias,
                        tuple(lay.out_features for lay in layers),
                        layers[0].input_scale.float().clone() if static == {True} else None)


def fused_linear(x: torch.Tensor | None, fw: FusedWeights, quantized: tuple[torch.Tensor, torch.Tensor] | None = None,
                 out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """One quantization of x [M, K] (skipped when a producer passed `quantized` = (int8 [M, K],
    fp32 scale [M])), one int8 GEMM over the stacked weights, then the output [M, sum N_i] split
    into one view per layer (strided views, no copy)."""
    if quantized is None:
        xq, xs = w8a8.quantize_act(x, fw.input_scale)
    elif fw.input_scale is not None:
        raise ValueError("fused_linear: per-token codes from a producer, but these layers have a static input scale")
    else:
        xq, xs = quantized
    if out_dtype is None:
        out_dtype = x.dtype if x is not None and x.dtype in (torch.float16, torch.bfloat16) else torch.float32
    y = w8a8.int8_gemm(xq, fw.weight, xs, fw.weight_scale, fw.bias, out_dtype=out_dtype)
    return y.split(list(fw.sizes), dim=-1)
