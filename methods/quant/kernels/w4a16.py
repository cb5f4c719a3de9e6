"""W4A16: 4-bit group-wise weights x fp16/bf16 activations, dequantized inside the GEMM.

Weights stay packed in HBM as `QuantLinear` stores them: uint8 [N, K/2], even k in the low
nibble, fp16 scales [N, K/g] and optional uint8 zeros (symmetric layers use the implicit
zero 8). A [BLOCK_N, BLOCK_K/2] byte tile is split into nibbles and re-interleaved into
k order, dequantized to the activation dtype and fed to `tl.dot`. BLOCK_K divides the
group, so each K step needs one scale per output channel. Small M is memory-bound on the
weight stream and launches too few programs to fill the GPU, so K is split across programs
(`split_k`) whose fp32 partials are summed with atomics.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from slimbench.methods.quant.kernels._util import interpreting, pow2_at_most, pow2_cover


@dataclass(frozen=True)
class W4Config:
    block_m: int = 16
    block_n: int = 64
    block_k: int = 128
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3


def default_config(m: int, n: int, k: int, group: int, sms: int = 132) -> W4Config:
    """Fixed tiles by shape; split-K so that small-M launches cover the SMs about twice."""
    bk = pow2_at_most(group, 128)
    if interpreting():
        return W4Config(pow2_cover(m, 16, 64), pow2_cover(n, 16, 128), bk, 1, 4, 1)
    if m <= 64:
        bm, bn = pow2_cover(m, 16, 64), 64
        tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
        split = 1
        while tiles * split < 2 * sms and k // (bk * split * 2) >= 4:
            split *= 2
        return W4Config(bm, bn, bk, split, 4, 4)
    return W4Config(128, 128, min(bk, 64), 1, 8, 3)


@triton.jit
def _w4a16_kernel(x_ptr, w_ptr, s_ptr, z_ptr, bias_ptr, out_ptr, M, N, K,
                  stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_sg, stride_zn, stride_zg,
                  stride_om, stride_on,
                  GROUP: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
                  EVEN_K: tl.constexpr, UPCAST: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    grid_n = tl.cdiv(N, BLOCK_N)
    pid_m = pid // grid_n
    pid_n = pid % grid_n
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.where(offs_m < M, offs_m, 0)
    rn = tl.where(offs_n < N, offs_n, 0)
    offs_k = tl.arange(0, BLOCK_K)
    offs_b = tl.arange(0, BLOCK_K // 2)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    # Split s takes K blocks s, s + SPLIT_K, ...: a loop from 0 with one trip count for every
    # program keeps the loop software-pipelined (a per-split start offset defeats the pipeliner).
    for it in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
        k0 = (it * SPLIT_K + pid_k) * BLOCK_K
        x_ptrs = x_ptr + rm[:, None] * stride_xm + (k0 + offs_k)[None, :] * stride_xk
        w_ptrs = w_ptr + rn[:, None] * stride_wn + (k0 // 2 + offs_b)[None, :] * stride_wk
        g = k0 // GROUP
        if EVEN_K:
            x = tl.load(x_ptrs)
            packed = tl.load(w_ptrs)
        else:  # past the end only in the last trip of some splits: zero x makes it contribute 0
            x = tl.load(x_ptrs, mask=(k0 + offs_k)[None, :] < K, other=0.0)
            packed = tl.load(w_ptrs, mask=(k0 // 2 + offs_b)[None, :] < K // 2, other=0)
            g = tl.minimum(g, K // GROUP - 1)
        q = tl.interleave(packed & 0xF, packed >> 4).to(tl.float32)  # [BLOCK_N, BLOCK_K] in k order
        s = tl.load(s_ptr + rn * stride_sn + g * stride_sg).to(tl.float32)
        if HAS_ZERO:
            z = tl.load(z_ptr + rn * stride_zn + g * stride_zg).to(tl.float32)
        else:
            z = tl.full([BLOCK_N], 8.0, tl.float32)
        w = ((q - z[:, None]) * s[:, None]).to(x.dtype)
        if UPCAST:  # the interpreter cannot dot bf16; fp32 of bf16 values gives the same products
            acc = tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), acc)
        else:
            acc = tl.dot(x, tl.trans(w), acc)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
    if SPLIT_K == 1:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn).to(tl.float32)[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(out_ptrs, acc, mask=mask)


def w4a16_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
                 group_size: int, bias: torch.Tensor | None = None,
                 config: W4Config | None = None) -> torch.Tensor:
    """x [M, K] fp16/bf16 @ dequant(qweight uint8 [N, K/2], scale [N, K/g], zero) ^T + bias -> [M, N]."""
    m, k = x.shape
    n = qweight.shape[0]
    if qweight.dtype != torch.uint8 or qweight.shape[1] * 2 != k or k % group_size:
        raise ValueError(f"w4a16_linear: qweight must be uint8 [N, K/2] with group_size | K; got "
                         f"{qweight.dtype} {tuple(qweight.shape)}, K={k}, group_size={group_size}")
    cfg = config or default_config(m, n, k, group_size)
    if group_size % cfg.block_k or cfg.block_k < 16:
        raise ValueError(f"w4a16_linear: block_k={cfg.block_k} must be >= 16 and divide group_size={group_size}")
    split = max(1, min(cfg.split_k, k // cfg.block_k))
    if split > 1:
        out = torch.zeros(m, n, dtype=torch.float32, device=x.device)
    else:
        out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    z = zero if zero is not None else scale
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n), split)
    _w4a16_kernel[grid](
        x, qweight, scale, z, bias if bias is not None else out, out, m, n, k,
        x.stride(0), x.stride(1), qweight.stride(0), qweight.stride(1), scale.stride(0), scale.stride(1),
        z.stride(0), z.stride(1), out.stride(0), out.stride(1),
        GROUP=group_size, HAS_ZERO=zero is not None, HAS_BIAS=bias is not None, SPLIT_K=split,
        EVEN_K=k % (cfg.block_k * split) == 0, UPCAST=interpreting() and x.dtype == torch.bfloat16,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    if split > 1:
        if bias is not None:
            out += bias.float()
        out = out.to(x.dtype)
    return out
