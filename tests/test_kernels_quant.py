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

import pytest
import torch
import torch.nn.functional as F
from torch import nn


def test_kernels_in_subprocess(interpreter_rerun):
    proc = interpreter_rerun()
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def kern(interpreted_kernels):
    """The kernel modules, (re)imported so that their kernels are interpreter functions."""
    return interpreted_kernels("slimbench.methods.quant.kernels", ["_util", "w8a8", "w4a16", "codebook"],
                               "w8a8._int8_gemm_kernel")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-12))


# ---------------------------------------------------------------- W8A8

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


@pytest.mark.parametrize("m,k,n", [(5, 64, 40), (130, 32, 72), (33, 160, 24)])
def test_int8_gemm_tma_persistent(kern, m, k, n):
    """The persistent TMA variant: more tiles than programs (the tile loop), ragged M/N/K edges
    (the descriptors zero-fill loads and clip stores), exact int32 accumulation, bias + cast."""
    from slimbench.methods.quant.w8a8 import int8_matmul

    g = torch.Generator().manual_seed(k)
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    sa, sb = (torch.rand(m, generator=g) + 0.1) / 100, (torch.rand(n, generator=g) + 0.1) / 100
    bias = torch.randn(n, generator=g)
    ref = int8_matmul(a, b).float() * sa[:, None] * sb[None, :]
    cfg = kern["w8a8"].GemmConfig(16, 16, 32, 2, 4, 1, "tma")
    assert kern["w8a8"].tma_ok(a, b, torch.float32)
    out = kern["w8a8"].int8_gemm(a, b, sa, sb, None, torch.float32, cfg)
    assert torch.equal(out, ref)
    out = kern["w8a8"].int8_gemm(a, b, sa, sb, bias, torch.float16, cfg)
    assert out.dtype == torch.float16 and rel_err(out, ref + bias) < 1e-2


@pytest.mark.parametrize("act", ["relu", "gelu", "gelu_tanh"])
@pytest.mark.parametrize("kernel", ["plain", "tma"])
def test_int8_gemm_fused_activation_and_requantization(kern, act, kernel):
    """The epilogue of a fused producer (w8a8_fuse): activation, then the consumer's static int8
    quantization, against torch (`apply_act` + `quantize_static`), through the layer's own paths."""
    from slimbench.methods.quant.w8a8 import W8A8Linear, apply_act, quantize_static

    g = torch.Generator().manual_seed(7)
    lin = nn.Linear(64, 48)
    x = torch.randn(37, 64, generator=g)
    q = W8A8Linear.from_linear(lin, float(x.abs().max() / 127))
    cfg = kern["w8a8"].GemmConfig(16, 16, 32, 2, 4, 1, kernel)
    xq, xs = kern["w8a8"].quantize_act(x, q.input_scale)
    ref = apply_act(q.gemm(x), act)  # the CPU path: exact int32 GEMM, scales, bias, then the activation
    y = kern["w8a8"].int8_gemm(xq, q.weight, xs, q.weight_scale, q.bias, torch.float32, cfg, act=act)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    out_scale = torch.tensor(float(ref.abs().max() / 127))
    codes = kern["w8a8"].int8_gemm(xq, q.weight, xs, q.weight_scale, q.bias, torch.float16, cfg, act=act,
                                   out_scale=out_scale)
    want = quantize_static(ref, out_scale)[0]
    diff = (codes.int() - want.int()).abs()
    assert codes.dtype == torch.int8 and diff.max() <= 1 and (diff > 0).float().mean() < 0.01  # rounding ties only
    with pytest.raises(ValueError, match="act='swish' is not one of"):
        kern["w8a8"].int8_gemm(xq, q.weight, xs, q.weight_scale, None, torch.float32, cfg, act="swish")


def test_int8_gemm_tma_refuses_unaligned_and_unknown(kern):
    """K not a multiple of 16 cannot be described to TMA: an explicit TMA request says so
    (a sweep must never time the plain kernel under the TMA label)."""
    a = torch.randint(-127, 128, (4, 24), dtype=torch.int8)
    b = torch.randint(-127, 128, (8, 24), dtype=torch.int8)
    assert not kern["w8a8"].tma_ok(a, b, torch.float32)
    with pytest.raises(ValueError, match="kernel='tma' needs .* K=24"):
        kern["w8a8"].int8_gemm(a, b, torch.ones(4), torch.ones(8), None, torch.float32,
                               kern["w8a8"].GemmConfig(16, 16, 32, 2, 4, 1, "tma"))
    with pytest.raises(ValueError, match="kernel='wgmma'.*'plain', 'tma'"):
        kern["w8a8"].int8_gemm(a, b, torch.ones(4), torch.ones(8), None, torch.float32,
                               kern["w8a8"].GemmConfig(16, 16, 32, 2, 4, 1, "wgmma"))


@pytest.mark.parametrize("static", [False, True])
def test_w8a8_linear_kernel_path(kern, static):
    from slimbench.methods.quant.w8a8 import W8A8Linear

    lin = nn.Linear(64, 48)
    x = torch.randn(20, 64)
    q = W8A8Linear.from_linear(lin, float(x.abs().max() / 127) if static else None)
    with torch.no_grad():
        assert torch.equal(q.kernel_forward(x), q(x))


# ---------------------------------------------------------------- W4A16

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
    W = kern["w4a16"].W4Config
    for cfg in [W(16, 64, bk, split, 4, 1)] + ([W(4, 16, 1024, 1, 4, 1, "gemv")] if group % 32 == 0 else []):
        out = kern["w4a16"].w4a16_linear(x, q.qweight, scale, zero, q._kernel_group(), q.bias, cfg)
        assert out.dtype == dtype and out.shape == (5, 72) and rel_err(out, ref) < 1e-2, cfg
    with torch.no_grad():
        assert rel_err(q.kernel_forward(x), q(x)) < 1e-2  # the module's dispatch, default config


def rand_w4(n: int, k: int, group: int, sym: bool, g: torch.Generator):
    """Fresh random packed 4-bit weights, fp16 group scales, uint8 zeros (or None) and the fp32 dequant."""
    from slimbench.methods.common import storage as packing

    codes = torch.randint(0, 16, (n, k), generator=g)
    scale = (torch.rand(n, k // group, generator=g) * 0.02 + 0.005).half()
    zero = None if sym else torch.randint(0, 16, (n, k // group), generator=g).to(torch.uint8)
    z = torch.full(scale.shape, 8.0) if zero is None else zero.float()
    w = ((codes.float().view(n, -1, group) - z[..., None]) * scale.float()[..., None]).view(n, k)
    return packing.pack(codes, 4), scale, zero, w


W4_CASES = [  # m, k, n, group, sym, dtype, bias, config (W4Config fields)
    # dot: BLOCK_K a multiple of the group with a K tail, N tail, bias, zeros, bf16 (upcast in the interpreter)
    (16, 352, 40, 32, False, torch.bfloat16, True, (16, 16, 64, 1, 1, 1)),
    (3, 352, 40, 32, True, torch.float16, False, (16, 32, 128, 2, 2, 1)),    # split-K over 4-group tiles
    (40, 256, 24, 64, False, torch.float16, True, (64, 16, 128, 1, 1, 1)),   # BLOCK_M > 32: per-weight scale
    (1, 384, 40, 128, True, torch.bfloat16, True, (16, 16, 64, 1, 1, 1)),    # BLOCK_K divides the group
    # gemv: K tail (K % BLOCK_K), rows beyond M in a program, 2- and 4-row programs, non-power-of-2 group
    (1, 1536, 40, 128, True, torch.float16, True, (1, 16, 1024, 1, 4, 1, "gemv")),
    (3, 1536, 40, 32, False, torch.bfloat16, False, (2, 16, 1024, 1, 4, 1, "gemv")),
    (3, 2048, 24, 64, False, torch.float16, True, (4, 8, 2048, 1, 2, 1, "gemv")),
    (1, 384, 40, 384, False, torch.bfloat16, True, (1, 16, 1024, 1, 4, 1, "gemv")),
]


@pytest.mark.parametrize("m,k,n,group,sym,dtype,bias,cfg", W4_CASES)
def test_w4a16_kernels_vs_torch(kern, m, k, n, group, sym, dtype, bias, cfg):
    g = torch.Generator().manual_seed(m * k + n)
    qweight, scale, zero, w = rand_w4(n, k, group, sym, g)
    x = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g) if bias else None
    ref = F.linear(x.float(), w.to(dtype).float(), b)
    out = kern["w4a16"].w4a16_linear(x, qweight, scale, zero, group, b, kern["w4a16"].W4Config(*cfg))
    assert out.dtype == dtype and out.shape == (m, n) and rel_err(out, ref) < 1e-2


def test_w4a16_default_configs_and_errors(kern, monkeypatch):
    from slimbench.methods.quant.linear import QuantLinear

    w4 = kern["w4a16"]
    q3 = QuantLinear.from_linear(nn.Linear(128, 16), 3, "group", 128, True)
    assert q3.kernel_forward(torch.randn(2, 128).half()) is None  # 3-bit: dequantize-then-matmul
    monkeypatch.setattr(w4, "interpreting", lambda: False)
    gemv = w4.default_config(1, 11008, 4096, 128)  # decode: one launch, no split-K atomics
    assert gemv.kernel == "gemv" and gemv.block_m == 1 and gemv.block_k % w4.CHUNK == 0
    m16 = w4.default_config(16, 11008, 4096, 128)
    assert m16.kernel == "dot" and m16.split_k == 1 and m16.block_k % 128 == 0
    assert m16.block_n >= 16 * m16.num_warps  # warps must not decode the same weights twice
    assert w4.default_config(1, 11008, 4096, 16).kernel == "dot"  # gemv needs group % 32 == 0
    assert w4.default_config(1, 64, 4096, 128).split_k > 1  # a few tiles only: split K
    assert w4.default_config(4096, 3072, 768, 128).split_k == 1
    qweight, scale = torch.zeros(8, 48, dtype=torch.uint8), torch.ones(8, 2).half()
    with pytest.raises(ValueError, match="group_size"):
        w4.w4a16_linear(torch.randn(2, 96).half(), qweight, scale, None, 40)
    with pytest.raises(ValueError, match="gemv"):
        w4.w4a16_linear(torch.randn(2, 96).half(), qweight, torch.ones(8, 6).half(), None, 16,
                        config=w4.W4Config(1, 16, 1024, 1, 4, 1, "gemv"))
    with pytest.raises(ValueError, match="block_k"):
        w4.w4a16_linear(torch.randn(2, 96).half(), qweight, scale, None, 48, config=w4.W4Config(16, 16, 32))


# ---------------------------------------------------------------- codebook GEMV

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


CB_CASES = [  # bits, m, k, n, dtype, bias, config (GemvConfig fields)
    (2, 1, 4096, 40, torch.float16, True, (16, 2048, 4, 1, "lanes", "select")),
    # K and row tails; 'select16' (packed 16-bit FMAs, PTX) runs as 'select' in the interpreter
    (2, 3, 2080, 24, torch.bfloat16, False, (16, 2048, 4, 1, "lanes", "select16", 2)),
    (2, 3, 1040, 24, torch.float16, True, (8, 2048, 2, 1, "lanes", "gather", 4)),
    (4, 1, 1288, 40, torch.float16, True, (16, 1024, 4, 1, "lanes", "gather")),
    (4, 3, 1032, 24, torch.bfloat16, False, (16, 1024, 4, 1, "lanes", "gather", 4)),
    (2, 16, 250, 40, torch.float16, True, (16, 64, 4, 1, "dot", "select", 16)),
    (2, 3, 250, 40, torch.bfloat16, False, (32, 128, 4, 1, "dot", "gather", 16)),
    (4, 16, 249, 40, torch.bfloat16, True, (16, 64, 4, 1, "dot", "gather", 16)),
]


@pytest.mark.parametrize("bits,m,k,n,dtype,bias,cfg", CB_CASES)
def test_codebook_kernels_vs_torch(kern, bits, m, k, n, dtype, bias, cfg):
    from slimbench.methods.common import storage as packing

    g = torch.Generator().manual_seed(bits * k + m)
    idx = torch.randint(0, 2 ** bits, (n, k), generator=g)
    table = torch.randn(2 ** bits, 1, generator=g).half()
    x = torch.randn(m, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g) if bias else None
    ref = F.linear(x.float(), table.float()[idx, 0].to(dtype).float(), b)
    out = kern["codebook"].codebook_gemv(x, packing.pack(idx, bits), table, bits, b, kern["codebook"].GemvConfig(*cfg))
    assert out.dtype == dtype and out.shape == (m, n) and rel_err(out, ref) < 1e-2


def test_codebook_default_configs_and_errors(kern, monkeypatch):
    cb = kern["codebook"]
    monkeypatch.setattr(cb, "interpreting", lambda: False)
    decode2 = cb.default_config(1, 11008, 4096, 2)
    assert (decode2.kernel, decode2.decode) == ("lanes", "select")
    assert cb.default_config(1, 11008, 4096, 4).decode == "gather"
    assert cb.default_config(16, 11008, 4096, 2).kernel == "dot"  # one decode for all rows
    assert cb.default_config(1, 11008, 250, 2).kernel == "dot"  # K not whole code words
    x, codes, table = torch.randn(1, 64).half(), torch.zeros(8, 32, dtype=torch.uint8), torch.randn(16, 1).half()
    with pytest.raises(ValueError, match="select"):
        cb.codebook_gemv(x, codes, table, 4, config=cb.GemvConfig(16, 64, 4, 1, "dot", "select", 16))
    with pytest.raises(ValueError, match="lanes"):
        cb.codebook_gemv(torch.randn(1, 60).half(), torch.zeros(8, 30, dtype=torch.uint8), table, 4,
                         config=cb.GemvConfig(16, 1024, 4, 1, "lanes"))
