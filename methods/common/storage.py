"""Storage formats every family shares: bit-packed codes, and sparse tensors (bitmask, CSR, N:M).

Bit-packing of b-bit unsigned codes into uint8 along the last dim (b in 2, 3, 4, 8).
Packing is what makes low-bit storage honest: a 4-bit layer must weigh half a byte per
weight in the saved artifact, not a byte. Codes are packed little-endian in *units*:
b=2 packs 4 codes per byte, b=4 two per byte (even index in the low nibble), b=3 packs 8
codes into 3 bytes (a 24-bit word, code j at bits 3j..3j+2), b=8 is the identity. A length
that is not a whole number of units is zero-padded; `padding(n, bits)` says by how much and
`unpack` needs the true length `n` back (layers keep it as their in_features).

Sparse formats store the nonzero values plus index data; a layer keeping them lists the index
buffers in its `slim_index` attribute, so the artifact counts values as parameters and reports
the index bytes apart:
- bitmask: values in row-major order + one bit per position (dense-ish sparsity, any pattern);
- CSR: values + column indices (the narrowest integer type that holds them) + row pointers;
- N:M: exactly N values kept in every M consecutive inputs + each value's position in its
  group, bit-packed (2:4 needs 2 bits per value: the layout sparse tensor cores read).
"""
from __future__ import annotations

import math

import torch

from slimbench.methods.common.options import PACKABLE_BITS


def _unit(bits: int) -> tuple[int, int]:
    """(codes, bytes) per packing unit: the smallest whole-byte run of b-bit codes."""
    if bits not in PACKABLE_BITS:
        raise ValueError(f"bits={bits!r} cannot be packed; supported: {', '.join(map(str, PACKABLE_BITS))}")
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
    if 8 % bits == 0:  # whole fields in each byte: shift bytes, no int64 words (several times faster)
        u = packed.view(torch.uint8)
        fields = [(u >> (i * bits)) & ((1 << bits) - 1) for i in range(per)]
        return torch.stack(fields, -1).reshape(*packed.shape[:-1], -1)[..., :n]
    b = packed.view(torch.uint8).to(torch.int64).reshape(*packed.shape[:-1], -1, nbytes)
    byte_shifts = torch.arange(nbytes, device=packed.device, dtype=torch.int64) * 8
    word = (b << byte_shifts).sum(-1, keepdim=True)
    shifts = torch.arange(per, device=packed.device, dtype=torch.int64) * bits
    codes = (word >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*packed.shape[:-1], -1)[..., :n].to(torch.uint8)


# ------------------------------------------------------------------ sparse formats

def to_bitmask(dense: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [nnz] in row-major order, mask uint8 [ceil(numel / 8)], one bit per position).

    `keep` (bool, dense's shape) names the stored positions; default: the nonzeros. A pruning mask
    passed here stores a kept weight that happens to be 0.0 too, so the stored count is the mask's."""
    flat = dense.reshape(-1)
    keep = flat != 0 if keep is None else keep.reshape(-1).to(torch.bool)
    bits = torch.nn.functional.pad(keep.to(torch.int64), (0, -flat.numel() % 8)).reshape(-1, 8)
    mask = (bits << torch.arange(8, dtype=torch.int64, device=dense.device)).sum(-1).to(torch.uint8)
    return flat[keep].contiguous(), mask


def from_bitmask(values: torch.Tensor, mask: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `to_bitmask`."""
    numel = math.prod(shape)
    bits = (mask.to(torch.int64)[:, None] >> torch.arange(8, dtype=torch.int64, device=mask.device)) & 1
    keep = bits.reshape(-1)[:numel].bool()
    if int(keep.sum()) != values.numel():
        raise ValueError(f"bitmask marks {int(keep.sum())} nonzeros but {values.numel()} values are stored")
    out = torch.zeros(numel, dtype=values.dtype, device=values.device)
    out[keep] = values
    return out.reshape(shape)


def index_dtype(extent: int) -> torch.dtype:
    """The narrowest integer dtype holding indices 0..extent-1."""
    if extent <= 256:
        return torch.uint8
    if extent <= 1 << 15:
        return torch.int16
    return torch.int32


def to_csr(dense: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-D tensor -> (values [nnz], column indices [nnz] in `index_dtype(cols)`, row pointers int32 [rows+1]);
    `keep` as in `to_bitmask`."""
    if dense.dim() != 2:
        raise ValueError(f"to_csr expects a 2-D tensor, got shape {tuple(dense.shape)}")
    rows, cols = (dense != 0 if keep is None else keep.reshape(dense.shape).to(torch.bool)).nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=dense.shape[0])
    row_ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
    return dense[rows, cols].contiguous(), cols.to(index_dtype(dense.shape[1])), row_ptr


def from_csr(values: torch.Tensor, col_idx: torch.Tensor, row_ptr: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of `to_csr`."""
    rows = row_ptr.numel() - 1
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    row_of = torch.repeat_interleave(torch.arange(rows, device=values.device), counts)
    out = torch.zeros(rows, cols, dtype=values.dtype, device=values.device)
    out[row_of, col_idx.long()] = values
    return out


def nm_index_bits(m: int) -> int:
    """Bits per kept value's position inside its group of M (rounded up to a packable width)."""
    need = max(1, math.ceil(math.log2(m)))
    return next(b for b in PACKABLE_BITS if b >= need)


def to_nm(dense: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A [rows, cols] tensor with at most N nonzeros in every M consecutive columns ->
    (values [rows, cols*N/M] in group order, positions bit-packed uint8 [rows, packed_len(cols*N/M)]).

    Groups with fewer than N nonzeros store zeros at the lowest free positions."""
    rows, cols = dense.shape
    if cols % m:
        raise ValueError(f"N:M storage needs the row length ({cols}) to be a multiple of M={m}")
    groups = dense.reshape(rows, cols // m, m)
    if groups.numel() and int((groups != 0).sum(-1).max()) > n:
        raise ValueError(f"a group of {m} holds more than {n} nonzeros: not {n}:{m} sparse")
    # stable order: nonzeros first (by position), then zeros, keep the first N
    order = torch.argsort((groups == 0).to(torch.int8), dim=-1, stable=True)[..., :n]
    pos = order.sort(-1).values
    values = torch.gather(groups, -1, pos).reshape(rows, -1)
    return values.contiguous(), pack(pos.reshape(rows, -1), nm_index_bits(m))


def from_nm(values: torch.Tensor, positions: torch.Tensor, n: int, m: int, cols: int) -> torch.Tensor:
    """Inverse of `to_nm`."""
    rows = values.shape[0]
    pos = unpack(positions, nm_index_bits(m), cols // m * n).long().reshape(rows, cols // m, n)
    out = torch.zeros(rows, cols // m, m, dtype=values.dtype, device=values.device)
    out.scatter_(-1, pos, values.reshape(rows, cols // m, n))
    return out.reshape(rows, cols)
