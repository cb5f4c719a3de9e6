"""The low-rank family's fused Triton kernel against a plain torch reference, on CPU through
Triton's interpreter (the variable must be set before triton's first import: see
test_kernels_quant.py; the fixtures that load the kernel or rerun the file are in conftest.py)."""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # noqa: E402  (must precede any triton import)

import pytest
import torch


def test_kernels_in_subprocess(interpreter_rerun):
    proc = interpreter_rerun()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def kern(interpreted_kernels):
    return interpreted_kernels("slimbench.methods.lowrank.kernels", ["fused"], "fused._lowrank_kernel")["fused"]


def _operands(m, k, n, r, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g).to(dtype)
    v = (torch.randn(r, k, generator=g) / k ** 0.5).to(dtype)
    u = (torch.randn(n, r, generator=g) / r ** 0.5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype)
    return x, v, u, b


def _reference(x, v, u, b):
    """Two matmuls in fp32, the intermediate rounded to the activation dtype as the kernel keeps it."""
    t = (x.float() @ v.float().t()).to(x.dtype).float()
    y = t @ u.float().t()
    return y + b.float() if b is not None else y


@pytest.mark.parametrize("m,k,n,r,block_r,split_n", [
    (5, 40, 33, 7, None, 1),      # ragged everything, the rank in one chunk (kept in registers)
    (70, 64, 96, 40, 16, 1),      # three rank chunks through the scratch strip
    (33, 30, 50, 20, 16, 2),      # output columns split over two programs per row block
    (1, 128, 64, 128, 32, 1),     # one row (decode-shaped), four chunks
])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_matches_reference(kern, m, k, n, r, block_r, split_n, dtype):
    x, v, u, b = _operands(m, k, n, r, dtype, seed=m + k + n + r)
    y = kern.lowrank_linear(x, v, u, b, block_r=block_r, split_n=split_n)
    assert y.shape == (m, n) and y.dtype == dtype
    tol = 2e-2 if dtype == torch.float16 else 8e-2
    torch.testing.assert_close(y.float(), _reference(x, v, u, b), rtol=tol, atol=tol)


def test_fused_without_bias_and_wrong_shapes(kern):
    x, v, u, _ = _operands(9, 32, 24, 12, torch.float16, seed=1)
    torch.testing.assert_close(kern.lowrank_linear(x, v, u).float(), _reference(x, v, u, None), rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match="do not chain"):
        kern.lowrank_linear(x, v.t().contiguous(), u)


def test_module_runs_the_torch_path_on_cpu():
    """On CPU (and whenever grad is on) LowRankLinear is two matmuls, equal to the factors' product."""
    from slimbench.methods.lowrank.modules import LowRankLinear

    g = torch.Generator().manual_seed(0)
    a, b, bias = torch.randn(24, 6, generator=g), torch.randn(6, 16, generator=g), torch.randn(24, generator=g)
    layer = LowRankLinear.from_factors(a, b, bias, kernel="fused")
    x = torch.randn(3, 5, 16, generator=g)
    torch.testing.assert_close(layer(x), x @ (a @ b).t() + bias, rtol=1e-5, atol=1e-5)
