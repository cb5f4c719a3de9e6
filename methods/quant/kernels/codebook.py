"""Codebook GEMV: y = x @ C[idx]^T for 2- or 4-bit indices into a per-layer scalar codebook.

For decode-sized batches the cost is reading the weights, so the indices stay packed
(4 or 2 per byte, as `CodebookLinear` stores them) and are decoded in registers; the 4 or
16 fp16 centroids are gathered from a table that lives in L1. Each program owns BLOCK_N
output channels of one input row and reduces over K with fp32 accumulation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from slimbench.methods.quant.kernels._util import interpreting, pow2_cover


@dataclass(frozen=True)
class GemvConfig:
    block_n: int = 64
    block_k: int = 256
    num_warps: int = 4
    num_stages: int = 2


def default_config(m: int, n: int, k: int) -> GemvConfig:
    if interpreting():
        return GemvConfig(pow2_cover(n, 16, 256), pow2_cover(k, 16, 512), 4, 1)
    return GemvConfig(32 if n < 8192 else 64, 256, 4, 2)


@triton.jit
def _codebook_gemv_kernel(x_ptr, c_ptr, cb_ptr, bias_ptr, out_ptr, N, K, KB,
                          stride_xm, stride_cn, stride_om,
                          BITS: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    row = tl.program_id(1)
    PER: tl.constexpr = 8 // BITS
    MASK: tl.constexpr = (1 << BITS) - 1
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rn = tl.where(offs_n < N, offs_n, 0)
    offs_k = tl.arange(0, BLOCK_K)
    offs_b = tl.arange(0, BLOCK_K // PER)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x = tl.load(x_ptr + row * stride_xm + k0 + offs_k, mask=k0 + offs_k < K, other=0.0).to(tl.float32)
        bidx = k0 // PER + offs_b
        p = tl.load(c_ptr + rn[:, None] * stride_cn + bidx[None, :], mask=bidx[None, :] < KB, other=0)
        if BITS == 4:
            idx = tl.interleave(p & MASK, p >> 4)
        else:  # four 2-bit fields: interleave(interleave(f0, f2), interleave(f1, f3)) is k order
            idx = tl.interleave(tl.interleave(p & MASK, (p >> 4) & MASK),
                                tl.interleave((p >> 2) & MASK, p >> 6))
        w = tl.load(cb_ptr + idx.to(tl.int32)).to(tl.float32)
        acc += tl.sum(w * x[None, :], axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn).to(tl.float32)
    tl.store(out_ptr + row * stride_om + offs_n, acc.to(out_ptr.dtype.element_ty), mask=offs_n < N)


def codebook_gemv(x: torch.Tensor, codes: torch.Tensor, codebook: torch.Tensor, bits: int,
                  bias: torch.Tensor | None = None, config: GemvConfig | None = None) -> torch.Tensor:
    """x [M, K] @ codebook[unpack(codes)]^T + bias -> [M, N] in x's dtype (M small)."""
    m, k = x.shape
    n, kb = codes.shape
    if bits not in (2, 4) or codebook.numel() != 2 ** bits or kb != triton.cdiv(k * bits, 8):
        raise ValueError(f"codebook_gemv: want {bits in (2, 4) and bits or '2 or 4'}-bit codes [N, ceil(K*bits/8)] "
                         f"and a scalar codebook of 2**bits entries; got codes {tuple(codes.shape)}, K={k}, "
                         f"codebook {tuple(codebook.shape)}")
    cfg = config or default_config(m, n, k)
    x = x if x.stride(1) == 1 else x.contiguous()
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(n, cfg.block_n), m)
    _codebook_gemv_kernel[grid](
        x, codes, codebook.reshape(-1).contiguous(), bias if bias is not None else out, out, n, k, kb,
        x.stride(0), codes.stride(0), out.stride(0),
        BITS=bits, HAS_BIAS=bias is not None, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return out
