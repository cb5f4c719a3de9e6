"""Helpers shared by the quantization kernels (the family-independent ones are in `methods.common.kernels`)."""
from __future__ import annotations

import triton
import triton.language as tl

from slimbench.methods.common.kernels import interpreting, pow2_at_most, pow2_cover  # noqa: F401


@triton.jit
def round_half_even(v):
    """torch.round semantics (ties to even), so kernel codes match the CPU reference; exact except
    within an ulp of a .5 boundary, where the fp32 add `v + 0.5` itself rounds (a 1-code
    difference the tests allow)."""
    r = tl.floor(v + 0.5)
    tie = (r - v) == 0.5
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(tie & odd, r - 1.0, r)


def as_words(t):
    """A contiguous view of `t` (last dim a whole number of 32-bit words) as int32, copying only
    when its data is not 4-byte aligned: the GEMV kernels load packed codes and fp16/bf16 pairs
    as whole 32-bit words."""
    import torch

    t = t.contiguous()
    if t.data_ptr() % 4:
        t = t.clone()
    return t.view(torch.int32)


@triton.jit
def unpack_pair(p, BF16: tl.constexpr):
    """int32 holding two 16-bit floats (element 2i in the low half) -> (lo, hi) as fp32.

    fp16 halves become one HADD2.F32 each on sm_80+ (no conversion-pipe instruction); bf16 is a shift."""
    if BF16:
        return (p << 16).to(tl.float32, bitcast=True), (p & -65536).to(tl.float32, bitcast=True)
    else:
        lo = (p & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        hi = (p >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        return lo, hi


@triton.jit
def store_lane_sums(acc, row, M, offs_n, rn, N, bias_ptr, out_ptr, stride_om, HAS_BIAS: tl.constexpr):
    """Lane-parallel GEMV epilogue: reduce acc [BLOCK_N, LANES] over lanes, add bias, store row `row`."""
    y = tl.sum(acc, axis=1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rn).to(tl.float32)
    tl.store(out_ptr + row * stride_om + offs_n, y.to(out_ptr.dtype.element_ty), mask=(offs_n < N) & (row < M))

