"""Shared storage formats against plain references: bit packing lives in test_quant.py; here the
sparse ones (bitmask, CSR, N:M) round-trip exactly and store what they claim."""
from __future__ import annotations

import pytest
import torch

from slimbench.methods.common import storage


def _sparse(shape, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(*shape, generator=g)
    return dense * (torch.rand(*shape, generator=g) < density)


@pytest.mark.parametrize("shape,density", [((7, 13), 0.3), ((64, 64), 0.05), ((5,), 1.0), ((3, 4), 0.0)])
def test_bitmask_round_trip(shape, density):
    dense = _sparse(shape, density)
    values, mask = storage.to_bitmask(dense)
    assert values.numel() == int((dense != 0).sum()) and mask.dtype == torch.uint8
    assert mask.numel() == -(-dense.numel() // 8)
    assert torch.equal(storage.from_bitmask(values, mask, tuple(shape)), dense)


@pytest.mark.parametrize("cols", [10, 300, 40000])
def test_csr_round_trip_and_index_width(cols):
    dense = _sparse((6, cols), 0.01, seed=cols)
    values, col, ptr = storage.to_csr(dense)
    assert col.dtype == {10: torch.uint8, 300: torch.int16, 40000: torch.int32}[cols]
    assert ptr.tolist()[0] == 0 and ptr.tolist()[-1] == values.numel() == int((dense != 0).sum())
    assert torch.equal(storage.from_csr(values, col, ptr, cols), dense)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_nm_round_trip_and_layout(n, m):
    g = torch.Generator().manual_seed(n * 10 + m)
    dense = torch.randn(8, 4 * m, generator=g)
    groups = dense.reshape(8, 4, m)
    keep = torch.rand(8, 4, m, generator=g).argsort(-1)[..., :n]  # n random survivors per group
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    sparse = (groups * mask).reshape(8, 4 * m)
    sparse[0, :m] = 0  # a group with fewer than n nonzeros still stores n slots
    values, positions = storage.to_nm(sparse, n, m)
    assert values.shape == (8, 4 * n) and positions.dtype == torch.uint8
    assert positions.numel() == 8 * storage.packed_len(4 * n, storage.nm_index_bits(m))
    assert torch.equal(storage.from_nm(values, positions, n, m, 4 * m), sparse)


def test_nm_rejects_denser_groups():
    with pytest.raises(ValueError, match="more than 2 nonzeros"):
        storage.to_nm(torch.ones(2, 8), 2, 4)
    with pytest.raises(ValueError, match="multiple of M=4"):
        storage.to_nm(torch.zeros(2, 6), 2, 4)
