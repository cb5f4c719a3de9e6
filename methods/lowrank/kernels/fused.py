"""Fused low-rank linear: y = (x V^T) U^T + b in one launch, for fp16/bf16 activations.

One program owns BLOCK_M rows of x (and, with SPLIT_N > 1, one of SPLIT_N slices of the output
columns). Phase 1 computes its rows' rank-r intermediate t = x V^T, BLOCK_R ranks at a time over
the K loop; phase 2 computes every output tile of its rows as t U^T + b. When the whole rank fits
one chunk (r <= BLOCK_R) t stays in registers between the phases; otherwise each chunk goes to a
per-program scratch strip of [BLOCK_M, r], written and read back by the same program (L2-resident
on a GPU: 8 MiB for M=4096, r=1024 in fp16), so t never makes the HBM round trip two separate GEMM
launches give it, and there is one launch instead of two.

What it cannot do: the intermediate of a row block is needed by every output tile of that row
block, so for large M x N the grid is M / BLOCK_M programs (x SPLIT_N, each split recomputing
phase 1), fewer than two cuBLAS calls' tiles. The fused kernel pays where the two-call path is
launch- or bandwidth-bound (small M, small r); benchmarks/lowrank_kernels.py measures where.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from slimbench.methods.common.kernels import interpreting, pow2_cover


@triton.jit
def _lowrank_kernel(x_ptr, v_ptr, u_ptr, b_ptr, y_ptr, t_ptr, M, K, N, R,
                    stride_xm, stride_vr, stride_un, stride_ym,
                    HAS_BIAS: tl.constexpr, SPLIT_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, ONE_CHUNK: tl.constexpr, UPCAST: tl.constexpr):
    pid_m, pid_s = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, BLOCK_K)
    rr = tl.arange(0, BLOCK_R)
    rn = tl.arange(0, BLOCK_N)
    dt = x_ptr.dtype.element_ty
    m_ok = rm[:, None] < M
    # per-program scratch strip: [BLOCK_M, R] at (pid_s, pid_m)
    t_base = t_ptr + (pid_s * tl.num_programs(0) + pid_m) * BLOCK_M * R
    t = tl.zeros((BLOCK_M, BLOCK_R), dtype=dt)
    for r0 in range(0, R, BLOCK_R):
        acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        r_ok = (r0 + rr)[None, :] < R
        for k0 in range(0, K, BLOCK_K):
            k_ok = (k0 + rk) < K
            x = tl.load(x_ptr + rm[:, None] * stride_xm + (k0 + rk)[None, :], mask=m_ok & k_ok[None, :], other=0.0)
            vt = tl.load(v_ptr + (r0 + rr)[None, :] * stride_vr + (k0 + rk)[:, None], mask=r_ok & k_ok[:, None],
                         other=0.0)
            if UPCAST:  # the interpreter gets low-precision tl.dot wrong: the same products in fp32 there
                acc += tl.dot(x.to(tl.float32), vt.to(tl.float32))
            else:
                acc += tl.dot(x, vt)
        t = acc.to(dt)
        if not ONE_CHUNK:
            tl.store(t_base + tl.arange(0, BLOCK_M)[:, None] * R + (r0 + rr)[None, :], t, mask=r_ok)
    if not ONE_CHUNK:
        tl.debug_barrier()  # every thread's chunks are written before any thread reads them back
    cols = tl.cdiv(N, SPLIT_N)
    n_lo = pid_s * cols
    for n0 in range(n_lo, tl.minimum(n_lo + cols, N), BLOCK_N):
        n_ok = (n0 + rn) < tl.minimum(n_lo + cols, N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):
            r_ok = (r0 + rr) < R
            if not ONE_CHUNK:
                t = tl.load(t_base + tl.arange(0, BLOCK_M)[:, None] * R + (r0 + rr)[None, :], mask=r_ok[None, :],
                            other=0.0)
            ut = tl.load(u_ptr + (n0 + rn)[None, :] * stride_un + (r0 + rr)[:, None],
                         mask=r_ok[:, None] & n_ok[None, :], other=0.0)
            if UPCAST:
                acc += tl.dot(t.to(tl.float32), ut.to(tl.float32))
            else:
                acc += tl.dot(t, ut)
        if HAS_BIAS:
            acc += tl.load(b_ptr + n0 + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rm[:, None] * stride_ym + (n0 + rn)[None, :], acc.to(dt), mask=m_ok & n_ok[None, :])


def default_blocks(m: int, r: int) -> dict[str, int]:
    """Tile sizes: rows per program by M (more programs for a small M), the rank chunk up to 128."""
    return {"block_m": pow2_cover(m, 16, 64), "block_r": pow2_cover(r, 16, 128), "block_k": 64, "block_n": 64,
            "split_n": 1}


def lowrank_linear(x: torch.Tensor, v: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None,
                   block_m: int | None = None, block_r: int | None = None, block_k: int = 64, block_n: int = 64,
                   split_n: int = 1, num_warps: int = 4) -> torch.Tensor:
    """y = (x @ v^T) @ u^T + bias for x [M, K], v [r, K], u [N, r] (the `LowRankLinear` factors)."""
    if x.dim() != 2 or v.dim() != 2 or u.dim() != 2 or v.shape[1] != x.shape[1] or u.shape[1] != v.shape[0]:
        raise ValueError(f"fused low-rank kernel: shapes x {tuple(x.shape)}, v {tuple(v.shape)}, u {tuple(u.shape)} "
                         "do not chain as x [M, K], v [r, K], u [N, r]")
    m, k = x.shape
    r, n = v.shape[0], u.shape[0]
    d = default_blocks(m, r)
    block_m, block_r = block_m or d["block_m"], block_r or d["block_r"]
    x = x.contiguous()
    v = v.to(x.dtype).contiguous()
    u = u.to(x.dtype).contiguous()
    b = bias.to(x.dtype).contiguous() if bias is not None else None
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    one_chunk = r <= block_r
    grid = (triton.cdiv(m, block_m), split_n)
    scratch = torch.empty(1 if one_chunk else grid[0] * split_n * block_m * r, dtype=x.dtype, device=x.device)
    _lowrank_kernel[grid](x, v, u, b if b is not None else u, y, scratch, m, k, n, r,
                          x.stride(0), v.stride(0), u.stride(0), y.stride(0),
                          HAS_BIAS=b is not None, SPLIT_N=split_n, BLOCK_M=block_m, BLOCK_K=block_k,
                          BLOCK_R=block_r, BLOCK_N=block_n, ONE_CHUNK=one_chunk,
                          UPCAST=interpreting(), num_warps=num_warps)
    return y
