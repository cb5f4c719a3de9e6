"""2:4 sparse weights x fp16/bf16 activations: the compressed weight is expanded tile by tile in
registers, then multiplied on the dense tensor cores.

Layout (what `NMLinear` stores, `storage.to_nm`): `values` [N, K/2], the two kept weights of every
group of 4 inputs in order, and `positions` uint8 [N, K/8], each kept weight's slot in its group
(2 bits, 4 per byte, little-endian). Kept weight j of a row sits in group j // 2.

What this buys, and what it does not: the weight stream from memory is halved (plus 1/8 for the
positions), which is what limits a GEMM at small M (decode-sized batches). The multiply itself
is dense, so compute-bound shapes gain nothing; doubling tensor-core throughput needs the
sparse MMA instructions (`mma.sp`, with the metadata in the hardware's own layout), which this
kernel does not use. Unmeasured on a GPU so far: see the family's README section.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from slimbench.methods.common.kernels import interpreting, pow2_at_most


@triton.jit
def _nm24_kernel(x_ptr, v_ptr, p_ptr, b_ptr, y_ptr, M, N, K,
                 stride_xm, stride_vn, stride_pn, stride_ym,
                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 UPCAST: tl.constexpr):
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    groups = tl.arange(0, BLOCK_K // 4)  # groups of 4 inputs in the tile
    slots = tl.arange(0, 4)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        g = k0 // 4 + groups  # global group index
        row_v = v_ptr + rn[:, None] * stride_vn
        v0 = tl.load(row_v + 2 * g[None, :], mask=rn[:, None] < N, other=0.0).to(tl.float32)
        v1 = tl.load(row_v + 2 * g[None, :] + 1, mask=rn[:, None] < N, other=0.0).to(tl.float32)
        # kept weights 2g and 2g+1 share byte g // 2, at bits 4 * (g % 2) and 4 * (g % 2) + 2
        byte = tl.load(p_ptr + rn[:, None] * stride_pn + (g // 2)[None, :], mask=rn[:, None] < N, other=0)
        byte = byte.to(tl.int32)
        shift = 4 * (g % 2)
        c0 = (byte >> shift[None, :]) & 3
        c1 = (byte >> (shift[None, :] + 2)) & 3
        dense = tl.where(c0[:, :, None] == slots[None, None, :], v0[:, :, None], 0.0) + \
            tl.where(c1[:, :, None] == slots[None, None, :], v1[:, :, None], 0.0)
        w = tl.reshape(dense, (BLOCK_N, BLOCK_K)).to(x_ptr.dtype.element_ty)
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=rm[:, None] < M, other=0.0)
        if UPCAST:  # Triton's interpreter gets bf16 tl.dot wrong: the same products in fp32 there
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))
        else:
            acc += tl.dot(x, tl.trans(w))
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def nm24_linear(x: torch.Tensor, values: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor | None = None,
                block_m: int = 32, block_n: int = 64) -> torch.Tensor:
    """y = x @ W^T + bias for a 2:4 weight W [N, K] given as (values [N, K/2], positions [N, K/8]).

    K must be a multiple of 16 (a tensor-core tile); values are used in x's dtype."""
    m, k = x.shape
    n = values.shape[0]
    if k % 16 or values.shape[1] * 2 != k or positions.shape[1] * 8 != k:
        raise ValueError(f"2:4 kernel: K={k} must be a multiple of 16 with values [N, K/2] and positions "
                         f"[N, K/8]; got {tuple(values.shape)} and {tuple(positions.shape)}")
    x = x.contiguous()
    v = values if values.dtype == x.dtype and values.is_contiguous() else values.to(x.dtype).contiguous()
    p = positions.contiguous()
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_k = max(16, pow2_at_most(k, 64))
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _nm24_kernel[grid](x, v, p, bias if bias is not None else v, y, m, n, k,
                       x.stride(0), v.stride(0), p.stride(0), y.stride(0),
                       HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                       UPCAST=interpreting() and x.dtype == torch.bfloat16)
    return y
