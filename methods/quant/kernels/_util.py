"""Launch-side helpers shared by the kernels."""
from __future__ import annotations

import os

import triton
import triton.language as tl


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def pow2_at_most(n: int, cap: int) -> int:
    """Largest power of two <= min(n, cap) that divides n (block sizes for exact tiling)."""
    b = 1
    while b * 2 <= cap and n % (b * 2) == 0:
        b *= 2
    return b


def pow2_cover(n: int, lo: int, hi: int) -> int:
    """Smallest power of two >= n, clamped to [lo, hi]."""
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


@triton.jit
def round_half_even(v):
    """torch.round semantics (ties to even), so kernel codes match the CPU reference exactly."""
    r = tl.floor(v + 0.5)
    tie = (r - v) == 0.5
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(tie & odd, r - 1.0, r)
