"""The pruning family's Triton kernels against plain torch references, on CPU through Triton's
interpreter (the variable must be set before triton's first import: see test_kernels_quant.py;
the fixtures that load the kernels or rerun the file are in conftest.py)."""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # noqa: E402  (must precede any triton import)

import pytest
import torch

from slimbench.methods.common import storage


def test_kernels_in_subprocess(interpreter_rerun):
    proc = interpreter_rerun()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def kern(interpreted_kernels):
    return interpreted_kernels("slimbench.methods.prune.kernels", ["nm", "blocksparse"], "nm._nm24_kernel")


def _two_of_four(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    keep = torch.rand(n, k // 4, 4, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, keep, True).reshape(n, k)
    w = w * mask
    w[0, :4] = 0  # a group with nothing kept still decodes
    return w


@pytest.mark.parametrize("m,k,n,dtype,bias", [(1, 32, 8, torch.float16, True), (5, 64, 40, torch.float16, False),
                                              (33, 128, 24, torch.bfloat16, True)])
def test_nm24_matches_dense_reference(kern, m, k, n, dtype, bias):
    w = _two_of_four(n, k, seed=m + k)
    values, positions = storage.to_nm(w, 2, 4)
    x = torch.randn(m, k).to(dtype)
    b = torch.randn(n) if bias else None
    out = kern["nm"].nm24_linear(x, values, positions, b)
    ref = x.float() @ w.to(dtype).float().t() + (b if bias else 0)
    assert out.dtype == dtype and out.shape == (m, n)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max()))


def test_nm24_rejects_bad_shapes(kern):
    with pytest.raises(ValueError, match="multiple of 16"):
        kern["nm"].nm24_linear(torch.randn(2, 24).half(), torch.zeros(4, 12), torch.zeros(4, 3, dtype=torch.uint8))


def _block_sparse(n: int, k: int, block: int, density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    keep = torch.rand(n // block, k // block, generator=g) < density
    keep[0] = False  # an empty block row
    return w * keep.repeat_interleave(block, 0).repeat_interleave(block, 1)


@pytest.mark.parametrize("m,k,n,block,density,dtype", [(3, 64, 48, 16, 0.5, torch.float16),
                                                        (20, 128, 64, 32, 0.25, torch.bfloat16),
                                                        (1, 64, 64, 16, 1.0, torch.float16)])
def test_block_sparse_matches_dense_reference(kern, m, k, n, block, density, dtype):
    w = _block_sparse(n, k, block, density, seed=k + n)
    bsr = w.to_sparse_bsr((block, block))
    x = torch.randn(m, k).to(dtype)
    b = torch.randn(n)
    out = kern["blocksparse"].bsr_linear(x, bsr.values(), bsr.crow_indices(), bsr.col_indices(), b)
    ref = x.float() @ w.to(dtype).float().t() + b
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max()))
