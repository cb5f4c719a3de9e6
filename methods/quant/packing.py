"""Bit-packing of b-bit unsigned codes into uint8 along the last dim (b in 2, 3, 4, 8).

Packing is what makes low-bit storage honest: a 4-bit layer must weigh half a byte per
weight in the saved artifact, not a byte. Codes are packed little-endian in *units*:
b=2 packs 4 codes per byte, b=4 two per byte (even index in the low nibble), b=3 packs 8
codes into 3 bytes (a 24-bit word, code j at bits 3j..3j+2), b=8 is the identity. A length
that is not a whole number of units is zero-padded; `padding(n, bits)` says by how much and
`unpack` needs the true length `n` back (layers keep it as their in_features).
"""
from __future__ import annotations

import math

import torch

from slimbench.methods.quant.options import SUPPORTED_BITS


def _unit(bits: int) -> tuple[int, int]:
    """(codes, bytes) per packing unit: the smallest whole-byte run of b-bit codes."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits!r} cannot be packed; supported: {', '.join(map(str, SUPPORTED_BITS))}")
    span = math.lcm(bits, 8)
    return span // bits, span // 8


def padding(n: int, bits: int) -> int:
    """Number of zero codes appended to a row of `n` codes to fill the last unit."""
    per, _ = _unit(bits)
    return -n % per


def packed_len(n: int, bits: int) -> int:
    """Bytes per packed row of `n` codes."""
    per, nbytes = _unit(bits)
    return (n + padding(n, bits)) // per * nbytes


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in [0, 2**bits) along the last dim into a contiguous uint8 tensor."""
    per, nbytes = _unit(bits)
    if codes.is_floating_point() or codes.is_complex():
        raise TypeError(f"pack expects integer codes, got {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise ValueError(f"codes out of range for {bits} bits: [{int(codes.min())}, {int(codes.max())}]")
    if bits == 8:
        return codes.to(torch.uint8).contiguous()
    n = codes.shape[-1]
    c = torch.nn.functional.pad(codes.to(torch.int64), (0, padding(n, bits)))
    c = c.reshape(*codes.shape[:-1], -1, per)
    shifts = torch.arange(per, device=codes.device, dtype=torch.int64) * bits
    word = (c << shifts).sum(-1, keepdim=True)  # disjoint bit fields: sum == bitwise or
    byte_shifts = torch.arange(nbytes, device=codes.device, dtype=torch.int64) * 8
    out = (word >> byte_shifts) & 0xFF
    return out.reshape(*codes.shape[:-1], -1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack`: uint8 [..., packed_len(n, bits)] -> uint8 codes [..., n]."""
    per, nbytes = _unit(bits)
    if packed.dtype not in (torch.uint8, torch.int8):
        raise TypeError(f"unpack expects uint8 storage, got {packed.dtype}")
    if packed.shape[-1] != packed_len(n, bits):
        raise ValueError(f"packed row has {packed.shape[-1]} bytes; {n} codes at {bits} bits need "
                         f"{packed_len(n, bits)}")
    if bits == 8:
        return packed.view(torch.uint8)
    b = packed.view(torch.uint8).to(torch.int64).reshape(*packed.shape[:-1], -1, nbytes)
    byte_shifts = torch.arange(nbytes, device=packed.device, dtype=torch.int64) * 8
    word = (b << byte_shifts).sum(-1, keepdim=True)
    shifts = torch.arange(per, device=packed.device, dtype=torch.int64) * bits
    codes = (word >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], -1)[..., :n].to(torch.uint8)
