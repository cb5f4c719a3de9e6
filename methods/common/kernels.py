"""Launch-side helpers every family's Triton kernels share (no Triton import here: the kernels
import Triton themselves, so these stay importable where Triton is not)."""
from __future__ import annotations

import os


def interpreting() -> bool:
    """Whether kernels run through Triton's interpreter (`TRITON_INTERPRET=1`: CPU tensors, CI)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def pow2_at_most(n: int, cap: int) -> int:
    """Largest power of two <= min(n, cap) that divides n (block sizes for exact tiling)."""
    b = 1
    while b * 2 <= cap and n % (b * 2) == 0:
        b *= 2
    return b


def pow2_cover(n: int, lo: int, hi: int) -> int:
    """Smallest power of two >= n, clamped to [lo, hi]."""
    p = 1
    while p < max(n, 1):
        p *= 2
    return max(lo, min(hi, p))
