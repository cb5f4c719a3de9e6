"""Block-sparse weights x fp16/bf16 activations: only the nonzero weight blocks are loaded and
multiplied, so the time follows the block density.

Layout: torch's BSR (`Tensor.to_sparse_bsr((B, B))`): `values` [nnzb, B, B], `crow` [N/B + 1]
(where each block row's blocks start), `col` [nnzb] (each block's column). One program computes a
[BLOCK_M, B] tile of the output for one block row of W, looping over that row's nonzero blocks:
an empty block row costs one store of its bias.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from slimbench.methods.common.kernels import interpreting


@triton.jit
def _bsr_kernel(x_ptr, v_ptr, crow_ptr, col_ptr, b_ptr, y_ptr, M, N,
                stride_xm, stride_ym, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, B: tl.constexpr,
                UPCAST: tl.constexpr):
    pid_m, row = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rb = tl.arange(0, B)
    start = tl.load(crow_ptr + row)
    end = tl.load(crow_ptr + row + 1)
    acc = tl.zeros((BLOCK_M, B), dtype=tl.float32)
    for i in range(start, end):
        c = tl.load(col_ptr + i)
        x = tl.load(x_ptr + rm[:, None] * stride_xm + (c * B + rb)[None, :], mask=rm[:, None] < M, other=0.0)
        w = tl.load(v_ptr + i * B * B + rb[:, None] * B + rb[None, :]).to(x_ptr.dtype.element_ty)
        if UPCAST:  # Triton's interpreter gets bf16 tl.dot wrong: the same products in fp32 there
            acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)))
        else:
            acc += tl.dot(x, tl.trans(w))
    rn = row * B + rb
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn).to(tl.float32)[None, :]
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], acc.to(y_ptr.dtype.element_ty), mask=rm[:, None] < M)


def bsr_linear(x: torch.Tensor, values: torch.Tensor, crow: torch.Tensor, col: torch.Tensor,
               bias: torch.Tensor | None = None, block_m: int = 32) -> torch.Tensor:
    """y = x @ W^T + bias for W [N, K] in BSR form with square blocks of 16, 32 or 64."""
    m, _ = x.shape
    b = values.shape[-1]
    if values.dim() != 3 or values.shape[1] != b or b not in (16, 32, 64):
        raise ValueError(f"block-sparse kernel: blocks must be square 16, 32 or 64; got values {tuple(values.shape)}")
    n = (crow.numel() - 1) * b
    x = x.contiguous()
    v = values if values.dtype == x.dtype and values.is_contiguous() else values.to(x.dtype).contiguous()
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, block_m), crow.numel() - 1)
    _bsr_kernel[grid](x, v, crow.to(torch.int32).contiguous(), col.to(torch.int32).contiguous(),
                      bias if bias is not None else v, y, m, n, x.stride(0), y.stride(0),
                      HAS_BIAS=bias is not None, BLOCK_M=block_m, B=b,
                      UPCAST=interpreting() and x.dtype == torch.bfloat16)
    return y
