"""The W8A8 fused producers (LayerNorm -> int8 codes, one stacked Q|K|V GEMM) against plain torch,
run on CPU tensors by the Triton interpreter (set before any triton import: see
test_kernels_quant.py for why, and for the subprocess rerun when another module got there first).

Each check is a function used twice: on the kernels' output (it must pass) and on a deliberately
wrong input (it must fail), so a check that cannot fail does not pass silently.
"""
from __future__ import annotations

import copy
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
    return interpreted_kernels("slimbench.methods.quant.kernels", ["_util", "w8a8", "fused_producers"],
                               "fused_producers._layernorm_quant_kernel")


# ---------------------------------------------------------------- the checks

def check_layernorm(y, x, weight, bias, eps, residual=None):
    """y against torch: the sum rounded to x's dtype (as `x + residual` is), LayerNorm in fp32."""
    h = x if residual is None else x + residual
    n = x.shape[-1]
    ref = F.layer_norm(h.float(), (n,), None if weight is None else weight.float(),
                       None if bias is None else bias.float(), eps).to(x.dtype)
    tol = 1e-5 if x.dtype == torch.float32 else 2e-3  # fp16: an ulp of the rounded result
    torch.testing.assert_close(y.float(), ref.float(), rtol=tol, atol=tol)


def check_codes(q, s, y):
    """The codes are exactly the per-token quantization of the stored y (what the int8 GEMM takes
    from `quantize_act`): same scale convention, same rounding and clamping, bit for bit."""
    from slimbench.methods.quant.w8a8 import quantize_per_token

    qr, sr = quantize_per_token(y.reshape(-1, y.shape[-1]))
    assert q.dtype == torch.int8 and s.dtype == torch.float32
    assert torch.equal(s, sr), f"scales differ: max rel {float(((s - sr) / sr).abs().max()):.3g}"
    assert torch.equal(q, qr), f"{int((q != qr).sum())} codes differ"


def check_outputs(outs, refs, dtype):
    """Each split of the stacked GEMM equals its own layer's output (fp32: same int32 sums and the
    same fp32 epilogue order; fp16: one rounding of it)."""
    assert len(outs) == len(refs)
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    for out, ref in zip(outs, refs):
        assert out.dtype == dtype and out.shape == ref.shape
        torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * float(ref.abs().max()))


# ---------------------------------------------------------------- LayerNorm -> int8

LN_CASES = [  # m, n, dtype, residual, bias, block_m (None: default)
    (5, 768, torch.float32, True, True, 4),  # BERT's N, M not a multiple of the row block
    (6, 768, torch.float16, True, True, None),
    (3, 100, torch.float16, False, False, 2),  # N not a power of two; one constant row (scale clamp)
    (7, 48, torch.float32, False, True, 1),
]


@pytest.mark.parametrize("m,n,dtype,res,has_bias,block_m", LN_CASES)
def test_layernorm_quant_matches_torch(kern, m, n, dtype, res, has_bias, block_m):
    fp = kern["fused_producers"]
    g = torch.Generator().manual_seed(m * n)
    x = (torch.randn(m, n, generator=g) * 3 + 1).to(dtype)
    r = torch.randn(m, n, generator=g).to(dtype) if res else None
    w = (torch.rand(n, generator=g) + 0.5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if has_bias else None
    if not res:
        x[0] = 2.0  # LayerNorm of a constant row is the bias, or all zeros: the 1e-10 scale floor
    cfg = fp.LNConfig(block_m, 4) if block_m else None
    y, q, s = fp.layernorm_quant(x, w, b, 1e-12 if dtype == torch.float32 else 1e-5, r, cfg)
    assert y.shape == x.shape and y.dtype == dtype and q.shape == (m, n) and s.shape == (m,)
    check_layernorm(y, x, w, b, 1e-12 if dtype == torch.float32 else 1e-5, r)
    check_codes(q, s, y)
    qk, sk = kern["w8a8"].quantize_act(y)  # the GEMM's own quantizer, on the same y: identical
    assert torch.equal(q, qk) and torch.equal(s, sk)


def test_layernorm_quant_leading_dims_and_errors(kern):
    fp = kern["fused_producers"]
    x = torch.randn(2, 3, 40)
    y, q, s = fp.layernorm_quant(x, None, None, 1e-5, x.flip(1))
    check_layernorm(y, x, None, None, 1e-5, x.flip(1))
    check_codes(q, s, y)
    assert q.shape == (6, 40) and s.shape == (6,)
    with pytest.raises(ValueError, match="residual"):
        fp.layernorm_quant(x, None, None, 1e-5, x[:1])
    with pytest.raises(ValueError, match=f"N={fp.MAX_N + 1}"):
        fp.layernorm_quant(torch.zeros(1, fp.MAX_N + 1), None, None)


def test_layernorm_checks_catch_wrong_inputs(kern):
    """Each check fails on a plausible mistake: a wrong eps or a forgotten residual (LayerNorm),
    the scale divided by 128 or taken from the fp32 value before rounding to fp16, truncation
    instead of round-half-even, and a code off by one (the codes)."""
    fp = kern["fused_producers"]
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(4, 96, generator=g).half(), torch.randn(4, 96, generator=g).half()
    w, b = torch.rand(96, generator=g).half() + 0.5, torch.randn(96, generator=g).half()
    y, q, s = fp.layernorm_quant(x, w, b, 1e-5, r)
    check_layernorm(y, x, w, b, 1e-5, r)
    check_codes(q, s, y)
    with pytest.raises(AssertionError):
        check_layernorm(y, x, w, b, 1.0, r)
    with pytest.raises(AssertionError):
        check_layernorm(y, x, w, b, 1e-5)
    amax = y.float().abs().amax(-1)
    for wrong_s in (amax / 128, F.layer_norm((x + r).float(), (96,), w.float(), b.float()).abs().amax(-1) / 127):
        with pytest.raises(AssertionError, match="scales differ"):
            check_codes(torch.round(y.float() / wrong_s[:, None]).clamp(-127, 127).to(torch.int8), wrong_s, y)
    with pytest.raises(AssertionError, match="codes differ"):
        check_codes(torch.trunc(y.float() / s[:, None]).to(torch.int8), s, y)
    q_bad = q.clone()
    q_bad[1, 5] += 1 if q_bad[1, 5] < 127 else -1
    with pytest.raises(AssertionError, match="1 codes differ"):
        check_codes(q_bad, s, y)


# ---------------------------------------------------------------- one stacked Q|K|V GEMM

def _layers(k, sizes, bias=(True, False, True), static=None, seed=0):
    from slimbench.methods.quant.w8a8 import W8A8Linear

    torch.manual_seed(seed)
    return [W8A8Linear.from_linear(nn.Linear(k, n, bias=bb), static) for n, bb in zip(sizes, bias)]


@pytest.mark.parametrize("m,k,sizes,dtype", [(37, 96, (40, 40, 40), torch.float32),
                                             (5, 768, (48, 48, 48), torch.float16),
                                             (18, 64, (32, 16, 24), torch.float32)])
def test_fused_qkv_matches_three_layers(kern, m, k, sizes, dtype):
    """One quantization + one GEMM over the stacked weights == each layer's own quantize + GEMM
    (the CPU reference path), with or without codes handed over by a producer."""
    fp, w8 = kern["fused_producers"], kern["w8a8"]
    layers = _layers(k, sizes)
    x = torch.randn(m, k).to(dtype)
    fw = fp.fuse_w8a8_weights(layers)
    assert fw.weight.shape == (sum(sizes), k) and fw.weight.is_contiguous() and fw.sizes == sizes
    with torch.no_grad():
        refs = [lay.gemm(x.float()).to(dtype) for lay in layers]
    outs = fp.fused_linear(x, fw)
    check_outputs(outs, refs, dtype)
    assert all(o.data_ptr() == outs[0].data_ptr() + sum(sizes[:i]) * o.element_size()
               for i, o in enumerate(outs))  # views of one output, not copies
    codes = w8.quantize_act(x)
    check_outputs(fp.fused_linear(None, fw, codes, dtype), refs, dtype)


def test_fused_qkv_checks_catch_wrong_inputs(kern):
    """The output check fails when the stacking is wrong: weights in another order, scales not
    moved with their weights, or a bias dropped."""
    fp = kern["fused_producers"]
    layers = _layers(64, (32, 32, 32), bias=(True, True, True))
    x = torch.randn(9, 64)
    with torch.no_grad():
        refs = [lay.gemm(x) for lay in layers]
    fw = fp.fuse_w8a8_weights(layers)
    check_outputs(fp.fused_linear(x, fw), refs, torch.float32)
    kqv = fp.fuse_w8a8_weights([layers[1], layers[0], layers[2]])
    wrong = [fp.FusedWeights(kqv.weight, kqv.weight_scale, kqv.bias, kqv.sizes, None),  # K, Q, V order
             fp.FusedWeights(fw.weight, kqv.weight_scale, fw.bias, fw.sizes, None),  # Q's rows, K's scales
             fp.FusedWeights(fw.weight, fw.weight_scale, None, fw.sizes, None)]  # bias lost
    for bad in wrong:
        with pytest.raises(AssertionError):
            check_outputs(fp.fused_linear(x, bad), refs, torch.float32)


def test_fuse_w8a8_weights_refuses_what_one_input_cannot_serve(kern):
    fp = kern["fused_producers"]
    from slimbench.methods.quant.w8a8 import W8A8Linear

    with pytest.raises(ValueError, match="in_features differ"):
        fp.fuse_w8a8_weights(_layers(64, (8, 8), (True, True)) + _layers(32, (8,), (True,)))
    with pytest.raises(ValueError, match="static input scales differ"):
        fp.fuse_w8a8_weights(_layers(64, (8,), (True,), 0.1) + _layers(64, (8,), (True,), 0.2))
    with pytest.raises(ValueError, match="mix of static and per-token"):
        fp.fuse_w8a8_weights(_layers(64, (8,), (True,), 0.1) + _layers(64, (8,), (True,)))
    with pytest.raises(ValueError, match="asymmetric"):
        fp.fuse_w8a8_weights([W8A8Linear.from_linear(nn.Linear(64, 8), 0.1, 0, symmetric=False)])
    same = fp.fuse_w8a8_weights(_layers(64, (8, 8), (False, False), 0.1))  # one static scale serves both
    assert same.bias is None and float(same.input_scale) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="static input scale"):
        fp.fused_linear(None, same, (torch.zeros(2, 64, dtype=torch.int8), torch.ones(2)))


# ---------------------------------------------------------------- wired into a BERT encoder

def _w8a8_bert():
    from transformers import BertConfig, BertModel

    from slimbench.methods.common.layers import replace_module
    from slimbench.methods.quant.w8a8 import W8A8Linear

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=128, vocab_size=100)).eval()
    for name, lin in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        replace_module(model, name, W8A8Linear.from_linear(lin, None))
    return model


def test_bert_producers_rewrite(kern, monkeypatch):
    """fuse_bert_producers on a W8A8 BERT: the state dict is untouched; the torch paths give the
    unfused model's output exactly; the kernel paths match it, with one quantization and one GEMM
    for Q|K|V and none for FFN-up (the LayerNorm wrote the codes); Q and V stacked the wrong
    way round are caught."""
    from slimbench.methods.quant.w8a8_producers import fuse_bert_producers

    model = _w8a8_bert()
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(input_ids=ids).last_hidden_state
    state = model.state_dict()
    ref_path, fused = copy.deepcopy(model), copy.deepcopy(model)
    report = fuse_bert_producers(ref_path, kernel=False)
    assert len(report["qkv"]) == 2 and len(report["ffn_up"]) == 2 and len(report["producers"]) == 5
    assert not report["kept"]
    fuse_bert_producers(fused, kernel=True)
    for m in (ref_path, fused):
        after = m.state_dict()
        assert list(after) == list(state) and all(torch.equal(after[k], v) for k, v in state.items())
    calls = {"quantize_act": 0, "int8_gemm": 0}
    for fn in calls:
        real = getattr(kern["w8a8"], fn)
        monkeypatch.setattr(kern["w8a8"], fn, lambda *a, _r=real, _f=fn, **kw: calls.__setitem__(_f, calls[_f] + 1)
                            or _r(*a, **kw))
    with torch.no_grad():
        assert torch.equal(ref_path(input_ids=ids).last_hidden_state, ref)
        out = fused(input_ids=ids).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)  # LayerNorm ulps can move a code by one
    # per layer one GEMM for Q|K|V and one for FFN-up, both on the LayerNorms' codes (no quantize_act);
    # the other W8A8 Linears (attention-out, FFN-down, pooler) take their CPU path, not counted here
    assert calls == {"quantize_act": 0, "int8_gemm": 4}, calls
    group = fused.encoder.layer[0].attention.self.slim_qkv
    group.weight.copy_(torch.cat(group.weight.split(64)[::-1]))  # stacked V|K|Q: must not pass
    with torch.no_grad(), pytest.raises(AssertionError):
        torch.testing.assert_close(fused(input_ids=ids).last_hidden_state, ref, rtol=2e-2, atol=2e-2)
