"""Triton quantization kernels vs their torch references, run on CPU by the Triton interpreter.

Why this setup: Triton reads TRITON_INTERPRET when a function is decorated with @triton.jit,
and its own tl.* helpers (tl.sum, tl.interleave, ...) are decorated when triton is first
imported. So the variable must be set before the first `import triton` of the process; a
later setting gives kernels that fail inside the interpreter. This module sets it first
thing. If triton was nevertheless imported earlier without it (another test module got there
first), the in-process tests skip and `test_kernels_in_subprocess` reruns this file in a fresh
Python with the variable set, so the kernels are checked either way.
"""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"  # noqa: E402  (must precede any triton import)

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def _interpreter_ready() -> bool:
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction)


READY = _interpreter_ready()
needs_interpreter = pytest.mark.skipif(not READY, reason="triton was imported without TRITON_INTERPRET in this "
                                                         "process; test_kernels_in_subprocess runs these")


def test_kernels_in_subprocess():
    if READY:
        pytest.skip("the interpreter is active in this process: the tests below run here")
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", str(Path(__file__).resolve())],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def kern():
    """The kernel modules, (re)imported so that their kernels are interpreter functions."""
    from triton.runtime.interpreter import InterpretedFunction

    names = ["_util", "w8a8", "w4a16", "codebook"]
    mods = {n: importlib.import_module(f"slimbench.methods.quant.kernels.{n}") for n in names}
    if not isinstance(mods["w8a8"]._int8_gemm_kernel, InterpretedFunction):  # imported before the env was set
        mods = {n: importlib.reload(mods[n]) for n in names}
    return mods


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-12))


# ---------------------------------------------------------------- W8A8

@needs_interpreter
@pytest.mark.parametrize("m,k,block_k", [(3, 72, None), (5, 100, 32)])
def test_quantize_act_matches_reference(kern, m, k, block_k):
    from slimbench.methods.quant.w8a8 import quantize_per_token, quantize_static

    x = torch.randn(m, k) * 4
    x[0, 0] = 0.5 * (x[0].abs().max() / 127) * 3  # an exact .5 tie: rounds half to even like torch
    q, s = kern["w8a8"].quantize_act(x, block_k=block_k)
    qr, sr = quantize_per_token(x)
    assert torch.equal(q, qr) and torch.equal(s, sr)
    static = torch.tensor(0.02)
    q, s = kern["w8a8"].quantize_act(x.half(), static, block_k=block_k)
    qr, sr = quantize_static(x.half(), static)
    assert torch.equal(q, qr) and torch.equal(s, sr)


@needs_interpreter
@pytest.mark.parametrize("m,k,n,cfg", [(5, 72, 40, None), (40, 96, 48, (16, 16, 32, 2)), (33, 128, 64, None)])
def test_int8_gemm_epilogue(kern, m, k, n, cfg):
    from slimbench.methods.quant.w8a8 import int8_matmul

    g = torch.Generator().manual_seed(m)
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    sa, sb = (torch.rand(m, generator=g) + 0.1) / 100, (torch.rand(n, generator=g) + 0.1) / 100  # fp16-safe range
    bias = torch.randn(n, generator=g)
    ref = int8_matmul(a, b).float() * sa[:, None] * sb[None, :]
    config = kern["w8a8"].GemmConfig(*cfg, num_warps=4, num_stages=1) if cfg else None
    out = kern["w8a8"].int8_gemm(a, b, sa, sb, None, torch.float32, config)
    assert torch.equal(out, ref)  # int32 accumulation is exact; the epilogue is the same fp32 math
    for dtype in (torch.float16, torch.bfloat16):
        out = kern["w8a8"].int8_gemm(a, b, sa, sb, bias, dtype, config)
        assert out.dtype == dtype and rel_err(out, ref + bias) < 1e-2


@needs_interpreter
@pytest.mark.parametrize("static", [False, True])
def test_w8a8_linear_kernel_path(kern, static):
    from slimbench.methods.quant.w8a8 import W8A8Linear

    lin = nn.Linear(64, 48)
    x = torch.randn(20, 64)
    q = W8A8Linear.from_linear(lin, float(x.abs().max() / 127) if static else None)
    with torch.no_grad():
        assert torch.equal(q.kernel_forward(x), q(x))


# ---------------------------------------------------------------- W4A16

@needs_interpreter
@pytest.mark.parametrize("gran,group,sym,split,dtype", [
    ("group", 128, True, 1, torch.float16), ("group", 32, False, 3, torch.float16),
    ("channel", 384, False, 2, torch.bfloat16), ("tensor", 384, True, 1, torch.float16)])
def test_w4a16_matches_dequant_reference(kern, gran, group, sym, split, dtype):
    from slimbench.methods.quant.linear import QuantLinear

    lin = nn.Linear(384, 72)
    q = QuantLinear.from_linear(lin, 4, gran, group, sym)
    x = torch.randn(5, 384).to(dtype)
    ref = F.linear(x.float(), q.dequantize().to(dtype).float(), q.bias)
    scale = q.scale.expand(72, 1) if gran == "tensor" else q.scale
    zero = None if q.zero is None else (q.zero.expand(72, 1) if gran == "tensor" else q.zero)
    bk = kern["_util"].pow2_at_most(group, 128)
    cfg = kern["w4a16"].W4Config(16, 64, bk, split, 4, 1)
    out = kern["w4a16"].w4a16_linear(x, q.qweight, scale, zero, q._kernel_group(), q.bias, cfg)
    assert out.dtype == dtype and out.shape == (5, 72) and rel_err(out, ref) < 1e-2
    with torch.no_grad():
        assert rel_err(q.kernel_forward(x), q(x)) < 1e-2  # the module's dispatch, default config


@needs_interpreter
def test_w4a16_dispatch_and_split_heuristic(kern, monkeypatch):
    from slimbench.methods.quant.linear import QuantLinear

    q3 = QuantLinear.from_linear(nn.Linear(128, 16), 3, "group", 128, True)
    assert q3.kernel_forward(torch.randn(2, 128).half()) is None  # 3-bit: dequantize-then-matmul
    monkeypatch.setattr(kern["w4a16"], "interpreting", lambda: False)
    small = kern["w4a16"].default_config(1, 11008, 4096, 128)
    assert small.split_k > 1 and 128 % small.block_k == 0
    assert kern["w4a16"].default_config(4096, 3072, 768, 128).split_k == 1
    with pytest.raises(ValueError, match="group_size"):
        kern["w4a16"].w4a16_linear(torch.randn(2, 96).half(), torch.zeros(8, 48, dtype=torch.uint8),
                                   torch.ones(8, 2).half(), None, 40)


# ---------------------------------------------------------------- codebook GEMV

@needs_interpreter
@pytest.mark.parametrize("bits,k,m,dtype,bias", [(4, 256, 1, torch.float16, True), (2, 250, 3, torch.float16, False),
                                                 (2, 256, 2, torch.bfloat16, True), (4, 249, 2, torch.float16, False)])
def test_codebook_gemv(kern, bits, k, m, dtype, bias):
    from slimbench.methods.quant.kmeans import CodebookLinear

    c = CodebookLinear.from_linear(nn.Linear(k, 40, bias=bias), bits, 1, 4, seed=0)
    x = torch.randn(m, k).to(dtype)
    ref = F.linear(x.float(), c.dequantize(), c.bias)
    out = kern["codebook"].codebook_gemv(x, c.codes, c.codebook, bits, c.bias)
    assert out.dtype == dtype and rel_err(out, ref) < 1e-2
    with torch.no_grad():
        assert rel_err(c.kernel_forward(x), c(x)) < 1e-2
        assert c.kernel_forward(torch.randn(17, k).to(dtype)) is None  # large batches: dense matmul
