"""The 2:4 sparse-MMA kernel (`kernels/nm_sparse_mma.py`): on CPU, the weight layout (packing, then
the hardware's reading of it emulated lane by lane, must give back the weight; a wrong interleaving
or a non-2:4 weight is caught) and the benchmark's code paths; on a CUDA GPU with sparse tensor
cores (sm_80+), the kernel itself against torch (skipped elsewhere)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from slimbench.methods.common import storage
from slimbench.methods.prune.kernels import nm_sparse_mma as sm

ROOT = Path(__file__).resolve().parents[1]
HAS_SPARSE_TC = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
needs_sparse_tc = pytest.mark.skipif(not HAS_SPARSE_TC, reason="needs a CUDA GPU with sparse tensor cores (sm_80+)")


def _two_of_four(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    keep = torch.rand(n, k // 4, 4, generator=g).argsort(-1)[..., :2]
    mask = torch.zeros(n, k // 4, 4, dtype=torch.bool).scatter_(-1, keep, True).reshape(n, k)
    w = w * mask
    w[0, :4] = 0  # a group with nothing kept
    w[1, 4:8] = torch.tensor([0.0, 0.0, 0.0, 2.5])  # one kept value, in the last slot
    return w


@pytest.mark.parametrize("n,k", [(64, 64), (200, 128), (1000, 256), (3072, 768), (768, 3072)])
def test_pack_then_emulated_decode_is_the_weight(n, k):
    w = _two_of_four(n, k, seed=n + k)
    p = sm.pack_dense(w)
    assert p.values.dtype == torch.float16 and p.values.shape == (n, k // 2)
    assert p.meta.dtype == torch.int32 and p.meta.shape == (-(-n // 128) * 8, k // 64, 32)
    assert torch.equal(sm.decode_emulated(p), w.half())


def test_stored_layer_format_converts_as_stored():
    """The layer's stored tensors (values fp32, positions uint8) convert without being changed, in bf16 too."""
    from torch import nn

    from slimbench.methods.prune.sparse import nm_twin

    lin = nn.Linear(128, 48)
    with torch.no_grad():
        lin.weight.copy_(_two_of_four(48, 128, seed=3))
    twin = nm_twin(lin, 2, 4)
    before = (twin.values.clone(), twin.positions.clone())
    p = sm.to_sparse_mma(twin.values, twin.positions, 128, torch.bfloat16)
    assert torch.equal(sm.decode_emulated(p).float(), twin.expand().bfloat16().float())
    assert torch.equal(twin.values, before[0]) and torch.equal(twin.positions, before[1])


def test_metadata_words_follow_the_ptx_layout():
    """Hand-placed groups land in the bits PTX names for m16n8k32 (16-bit types): lane 4g + 2s + h,
    bits 0-15 row g / bits 16-31 row g+8, columns 32s + 16h + 4j at bits 4j; nibble = i0 | i1 << 2."""
    w = torch.zeros(16, 64)
    w[0, 1], w[0, 3] = 1, 2     # row 0, group 0 (inputs 0-3): slots 1, 3 -> 0b1101 at lane 0, bits 0-3
    w[8, 6], w[8, 7] = 3, 4     # row 8, group 1 (inputs 4-7): slots 2, 3 -> 0b1110 at lane 0, bits 20-23
    w[0, 16], w[0, 18] = 5, 6   # row 0, inputs 16-19 (h = 1): slots 0, 2 -> 0b1000 at lane 1, bits 0-3
    w[2, 33], w[2, 34] = 7, 8   # row 2, inputs 32-35 (selector 1): slots 1, 2 -> 0b1001 at lane 8 + 2, bits 0-3
    w[13, 63] = 9               # row 13 = 5 + 8, inputs 60-63 (s = 1, h = 1, j = 3): slots 0, 3 -> lane 23, bits 28-31
    p = sm.pack_dense(w)
    words = p.meta[0, 0].long() & 0xFFFFFFFF
    nib = lambda lane, bit: int(words[lane] >> bit) & 0xF  # noqa: E731
    assert nib(0, 0) == 0b1101 and nib(0, 20) == 0b1110 and nib(1, 0) == 0b1000
    assert nib(10, 0) == 0b1001 and nib(23, 28) == 0b1100
    assert nib(4, 0) == 0b0100  # row 1, an empty group: slots 0, 1 (a valid nibble)
    assert p.meta[1:].unique().tolist() == [0x44444444]  # padded rows 16-127: valid nibbles
    assert p.values[0, :2].tolist() == [1, 2] and p.values[13, 30:].tolist() == [0, 9]


@pytest.mark.parametrize("swap", ["k halves (lanes 4g <-> 4g+1)", "selectors (lanes 4g,4g+1 <-> 4g+2,4g+3)",
                                  "rows g <-> g+8 (16-bit halves)", "lane groups g <-> g+1"])
def test_a_wrong_interleaving_is_caught(swap):
    w = _two_of_four(256, 256, seed=7)
    p = sm.pack_dense(w)
    m = p.meta.view(p.meta.shape[0], p.meta.shape[1], 8, 2, 2)  # [rb, kb, g, s, h]
    if swap.startswith("k halves"):
        bad = m.flip(4)
    elif swap.startswith("selectors"):
        bad = m.flip(3)
    elif swap.startswith("rows"):
        u = p.meta.long() & 0xFFFFFFFF
        bad = ((u >> 16) | ((u & 0xFFFF) << 16))
        bad = torch.where(bad >= 2 ** 31, bad - 2 ** 32, bad).to(torch.int32)
    else:
        bad = m.roll(1, 2)
    q = sm.Packed24(p.values, bad.reshape(p.meta.shape).contiguous(), p.out_features, p.in_features)
    assert not torch.equal(sm.decode_emulated(q), w.half())


def test_a_non_24_weight_is_refused_naming_the_group():
    w = _two_of_four(32, 64, seed=1)
    w[5, 8:12] = torch.tensor([1.0, 2.0, 0.0, 3.0])
    with pytest.raises(ValueError, match=r"row 5, group 2 \(inputs 8\.\.11\) has 3 nonzeros"):
        sm.pack_dense(w)


def test_metadata_with_equal_slots_is_refused_naming_the_group():
    values, positions = storage.to_nm(_two_of_four(16, 64, seed=2), 2, 4)
    pos = storage.unpack(positions, 2, 32).clone()
    pos[3, 10:12] = 1  # row 3, group 5: both kept values at slot 1
    with pytest.raises(ValueError, match=r"row 3, group 5 \(inputs 20\.\.23\) stores both values at slot 1"):
        sm.to_sparse_mma(values, storage.pack(pos, 2), 64)


def test_invalid_metadata_nibbles_are_refused():
    p = sm.pack_dense(_two_of_four(16, 64, seed=4))
    with pytest.raises(ValueError, match="invalid 2:4 metadata nibble 0b0000"):
        sm.decode_emulated(sm.Packed24(p.values, torch.zeros_like(p.meta), 16, 64))


def test_descending_slot_pairs_are_put_in_order():
    """A stored pair with its slots descending (not what `to_nm` writes) is swapped with its values:
    the kernel's ordered metadata needs i0 < i1."""
    w = _two_of_four(16, 64, seed=5)
    values, positions = storage.to_nm(w, 2, 4)
    pos = storage.unpack(positions, 2, 32).reshape(16, 16, 2).flip(-1).reshape(16, 32)
    p = sm.to_sparse_mma(values.reshape(16, 16, 2).flip(-1).reshape(16, 32), storage.pack(pos, 2), 64)
    assert torch.equal(sm.decode_emulated(p), w.half())
    words = p.meta.long() & 0xFFFFFFFF
    nibs = torch.stack([(words >> (4 * j)) & 0xF for j in range(8)])
    assert bool(((nibs & 3) < (nibs >> 2)).all())


def test_k_must_be_a_multiple_of_64():
    with pytest.raises(ValueError, match="multiple of 64"):
        sm.pack_dense(_two_of_four(16, 96, seed=6))
    assert sm.unsupported(96, torch.float16) and sm.unsupported(128, torch.float32) and \
        sm.unsupported(128, torch.bfloat16) is None


def test_layer_keeps_the_triton_kernel_unless_told():
    from slimbench.methods.prune.sparse import NMLinear

    layer = NMLinear(128, 32, True, 2, 4)
    assert layer.nm_kernel == "triton" and not layer.runs_sparse_mma(4096, torch.device("cuda"))
    assert layer.slim_path("cuda", torch.float16).startswith("Triton 2:4")
    layer.nm_kernel = "auto"  # no shape measured yet: still Triton
    assert not layer.runs_sparse_mma(4096, torch.device("cpu"))
    layer.nm_kernel = "sparse_mma"
    assert layer.runs_sparse_mma(1, torch.device("cuda"))
    assert layer.slim_path("cuda", torch.float16).startswith("CUDA 2:4 sparse-MMA")
    narrow = NMLinear(96, 32, True, 2, 4)
    narrow.nm_kernel = "sparse_mma"  # K=96 is not a whole number of 64-column tiles: Triton
    assert not narrow.runs_sparse_mma(1, torch.device("cuda"))
    layer.nm_kernel = "cusparselt"
    with pytest.raises(ValueError, match="valid: 'triton', 'sparse_mma', 'auto'"):
        layer.runs_sparse_mma(1, torch.device("cuda"))


def test_benchmark_smoke_runs_every_path(tmp_path):
    """benchmarks/nm_sparse_mma.py --smoke: packing, the emulated layout, the Triton kernel (interpreted)
    and the record, on tiny CPU shapes (the CUDA kernel itself needs the GPU machine)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nm_sparse_mma.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rec = json.loads((tmp_path / "nm-sparse-mma-cpu-smoke.json").read_text())
    assert rec["complete"] and len(rec["shapes"]) == 2 and rec["measured_faster"] == []
    for entry in rec["shapes"]:
        assert set(entry["configs"]) == {str(c) for c in sm.CONFIGS} and entry["bf16_ok"]
        assert all(c["ok"] and c["rel_err"] < 1e-3 for c in entry["configs"].values())
        assert entry["triton_rel_err"] < 2e-2 and entry["dense_ms"] > 0


def test_benchmark_bows_out_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the benchmark would run")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nm_sparse_mma.py")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "no CUDA device" in proc.stdout, proc.stdout + proc.stderr


@needs_sparse_tc
@pytest.mark.parametrize("m,k,n,dtype,config", [(1, 4096, 11008, torch.float16, None), (16, 256, 200, torch.float16, 2),
                                                (33, 128, 64, torch.bfloat16, 0), (300, 512, 384, torch.float16, 1),
                                                (130, 768, 3072, torch.float16, 0), (5, 64, 48, torch.bfloat16, None)])
def test_kernel_matches_torch(m, k, n, dtype, config):
    w = _two_of_four(n, k, seed=m + k + n).cuda()
    x = torch.randn(m, k, device="cuda").to(dtype)
    b = torch.randn(n, device="cuda")
    p = sm.pack_dense(w, dtype)
    out = sm.nm24_sparse_mma_linear(x, p, b, config)
    ref = F.linear(x.float(), w.to(dtype).float(), b)
    assert out.dtype == dtype and out.shape == (m, n)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max()))
    exact = sm.nm24_sparse_mma_linear(x, p, None, config).float()  # products are exact in fp32: tight bound
    torch.testing.assert_close(exact, x.float() @ w.to(dtype).float().t(), rtol=1e-2, atol=1e-2)


@needs_sparse_tc
def test_layer_runs_the_sparse_mma_kernel_on_cuda():
    from torch import nn

    from slimbench.methods.prune.sparse import nm_twin

    lin = nn.Linear(256, 192)
    with torch.no_grad():
        lin.weight.copy_(_two_of_four(192, 256, seed=9))
    twin = nm_twin(lin, 2, 4).cuda()
    lin = lin.cuda().half()
    x = torch.randn(4, 7, 256, device="cuda", dtype=torch.float16)
    twin.nm_kernel = "sparse_mma"
    with torch.no_grad():
        y = twin(x)
        torch.testing.assert_close(y.float(), lin(x).float(), rtol=2e-2, atol=2e-2)
        assert torch.float16 in twin.__dict__["_mma24"]
        twin.float()  # moving or casting the layer drops the derived metadata
        assert "_mma24" not in twin.__dict__
