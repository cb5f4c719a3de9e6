"""Quantization methods: packing, storage honesty, accuracy, save/restore, config errors.

quant.minmax, quant.kmeans and quant.w8a8 quantize nn.Linear and nn.Conv2d layers (W8A8 on convs and
zero-point activations: test_quant_w8a8.py). Layers are small and tests few: the CPU is shared.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import slimbench.methods.quant  # noqa: F401  (registers quant.* before the registry lists it)
from slimbench.core.config import ConfigError
from slimbench.methods.base import Unsupported
from slimbench.core.recipe import TrainRecipe
from slimbench.methods import Compressed, CompressionContext, create_method
from slimbench.methods.common import storage as packing
from slimbench.methods.common.layers import snr_db
from slimbench.methods.quant.kmeans import CodebookLinear, kmeans
from slimbench.methods.quant.linear import QuantLinear
from slimbench.methods.quant.w8a8 import W8A8Linear
from slimbench.suite.context import make_context
from slimbench.suite.trainer import Trainer


class Tiny(nn.Module):
    """Two hidden Linears and a `head` (kept in fp32 by the default skip list)."""

    def __init__(self, d: int = 256, classes: int = 10, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.body(x))


def ctx_for(calib=(), train=(), steps=0, lr=1e-2, seed=0) -> CompressionContext:
    return make_context(calibration=list(calib), train=list(train), finetune=TrainRecipe(steps=steps, lr=lr),
                        seed=seed)


def compressed(spec: str, model, ctx) -> nn.Module:
    """The compressed model alone (most tests do not need the meta)."""
    return create_method(spec).compress(model, ctx).model


def batches(n=4, bs=32, d=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [({"x": torch.randn(bs, d, generator=g)}, torch.randint(0, 10, (bs,), generator=g)) for _ in range(n)]


def roundtrip(method, result: Compressed, tmp_path):
    """Save exactly as the suite does (safetensors + JSON meta), restore into a fresh skeleton."""
    path = tmp_path / "model.safetensors"
    save_file(result.model.state_dict(), str(path))
    meta = json.loads(json.dumps(result.meta))
    return method.restore(Tiny(seed=123), load_file(str(path)), meta), path.stat().st_size


# ---------------------------------------------------------------- packing

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 5, 8, 13, 64, 67])
def test_pack_roundtrip_exact(bits, n):
    codes = torch.randint(0, 2 ** bits, (3, 2, n), generator=torch.Generator().manual_seed(n))
    packed = packing.pack(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (3, 2, packing.packed_len(n, bits))
    assert packing.packed_len(n, bits) * 8 == (n + packing.padding(n, bits)) * bits
    unpacked = packing.unpack(packed, bits, n)  # bits 2 and 4 take the byte-shift path, 3 the 24-bit words
    assert unpacked.dtype == torch.uint8 and torch.equal(unpacked.long(), codes)


def test_pack_layout_and_errors():
    assert packing.pack(torch.tensor([1, 2]), 4).tolist() == [0x21]  # even index in the low nibble
    assert packing.pack(torch.tensor([1, 2, 3, 0]), 2).tolist() == [0b00111001]
    assert packing.pack(torch.arange(8), 3).tolist() == [0x88, 0xC6, 0xFA]  # 24-bit little-endian word
    assert packing.padding(13, 3) == 3 and packing.packed_len(13, 3) == 6
    with pytest.raises(ValueError, match="out of range for 4 bits"):
        packing.pack(torch.tensor([16]), 4)
    with pytest.raises(ValueError, match="bits=5"):
        packing.pack(torch.tensor([1]), 5)


# ---------------------------------------------------------------- QuantLinear / quant.minmax

def test_minmax_storage_is_packed_and_counted():
    lin = nn.Linear(256, 256)
    q = QuantLinear.from_linear(lin, bits=4, granularity="group", group_size=128, symmetric=True)
    sd = {k: v for k, v in q.state_dict().items() if k != "bias"}
    assert sd["qweight"].dtype == torch.uint8 and sd["qweight"].nbytes == 256 * 256 // 2
    assert sd["scale"].dtype == torch.float16 and sd["scale"].numel() == 256 * 2
    assert set(sd) == {"qweight", "scale"}
    q3 = QuantLinear.from_linear(lin, 3, "channel", 128, symmetric=False)
    assert q3.qweight.nbytes == 256 * 256 * 3 // 8 and q3.zero.dtype == torch.uint8 and q3.zero.numel() == 256
    q8 = QuantLinear.from_linear(lin, 8, "tensor", 128, symmetric=True)
    assert q8.qweight.dtype == torch.int8 and q8.scale.numel() == 1


@pytest.mark.parametrize("bits,gran,sym,min_db", [
    (8, "channel", True, 40), (8, "tensor", False, 40), (4, "group", True, 15), (4, "group", False, 15),
    (3, "channel", False, 12), (2, "group", False, 6)])
def test_minmax_accuracy(bits, gran, sym, min_db):
    lin, x = nn.Linear(256, 128), torch.randn(16, 256)
    q = QuantLinear.from_linear(lin, bits, gran, 128, sym)
    with torch.no_grad():
        assert snr_db(lin(x), q(x)) > min_db


def test_minmax_padded_rows():
    lin, x = nn.Linear(100, 24), torch.randn(4, 100)  # 100 3-bit codes pad to 104 (13 bytes of 8 codes -> 39 bytes)
    q = QuantLinear.from_linear(lin, 3, "channel", 128, symmetric=False)
    assert q.qweight.shape == (24, 39)
    fresh = QuantLinear(100, 24, True, 3, "channel", 128, False)
    fresh.load_state_dict(q.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), q(x)) and snr_db(lin(x), q(x)) > 12


def test_minmax_method_roundtrip(tmp_path):
    model, x = Tiny(), torch.randn(8, 256)
    with torch.no_grad():
        ref = model(x)
    method = create_method("quant.minmax:bits=4,group_size=128")
    result = method.compress(model, ctx_for())
    out_model = result.model
    assert isinstance(out_model.body[0], QuantLinear) and isinstance(out_model.head, nn.Linear)  # head skipped
    with torch.no_grad():
        out = out_model(x)
        assert snr_db(ref, out) > 15
        restored, size = roundtrip(method, result, tmp_path)
        assert torch.equal(restored(x), out)
    codes = 2 * (256 * 128 + 256 * 2 * 2 + 256 * 4)  # two layers: codes + fp16 scales + fp32 bias
    head = (10 * 256 + 10) * 4
    assert codes + head <= size < codes + head + 4096  # the rest is the safetensors header


def test_minmax_bad_configs():
    with pytest.raises(ConfigError, match=r"bits=5 .*2, 3, 4, 8"):
        create_method("quant.minmax:bits=5")
    with pytest.raises(ConfigError, match="granularity='row'"):
        create_method("quant.minmax:granularity=row")
    model = nn.Sequential(nn.Linear(100, 8))
    with pytest.raises(ConfigError, match=r"group_size=64 .*in_features=100 .*'0'.* 1, 2, 4, 5, 10, 20, 25, 50, 100"):
        compressed("quant.minmax:group_size=64", model, ctx_for())
    with pytest.raises(Unsupported, match="no nn.Linear or nn.Conv2d"):  # nothing to do here: not a failure
        compressed("quant.minmax:skip=*", model, ctx_for())
    conv = nn.Sequential(nn.Conv2d(4, 8, 3))  # rows of 4*3*3 = 36
    with pytest.raises(ConfigError, match=r"group_size=16 .*in_channels/groups\*kh\*kw=36 .*conv_granularity"):
        compressed("quant.minmax:conv_granularity=group,group_size=16", conv, ctx_for())


def test_minmax_group_at_least_row_is_per_channel():
    lin = nn.Linear(100, 8)  # group_size 128 >= 100: one group per row, same as granularity=channel
    q = QuantLinear.from_linear(lin, 4, "group", 128, True)
    ref = QuantLinear.from_linear(lin, 4, "channel", 128, True)
    assert q.group_size == 100 and q.scale.shape == (8, 1)
    assert torch.equal(q.qweight, ref.qweight) and torch.equal(q.scale, ref.scale)


# ---------------------------------------------------------------- quant.w8a8

@pytest.mark.parametrize("spec,min_db", [
    ("quant.w8a8", 30), ("quant.w8a8:activations=static,calibration=minmax", 25),
    ("quant.w8a8:activations=static,calibration=percentile", 25),
    ("quant.w8a8:activations=static,calibration=mse", 25)])
def test_w8a8_method(spec, min_db, tmp_path):
    model, x = Tiny(), torch.randn(24, 256)  # M=24 rows -> torch._int_mm
    with torch.no_grad():
        ref = model(x)
    method = create_method(spec)
    result = method.compress(model, ctx_for(calib=batches(2)))
    q = result.model
    layer = q.body[0]
    assert isinstance(layer, W8A8Linear) and layer.weight.dtype == torch.int8
    assert layer.static == (layer.input_scale is not None)
    with torch.no_grad():
        out = q(x)
        assert snr_db(ref, out) > min_db
        restored, _ = roundtrip(method, result, tmp_path)
        assert torch.equal(restored(x), out)


def test_w8a8_integer_path_is_exact():
    lin = nn.Linear(64, 32)
    q = W8A8Linear.from_linear(lin, None)
    for m in (3, 40):  # small M and M > 16 take different int paths on CUDA; both exact here
        x = torch.randn(m, 64)
        from slimbench.methods.quant.w8a8 import int8_matmul, quantize_per_token
        xq, _ = quantize_per_token(x)
        assert torch.equal(int8_matmul(xq, q.weight), (xq.long() @ q.weight.long().t()).int())
        with torch.no_grad():
            assert snr_db(lin(x), q(x)) > 30


def test_w8a8_calibration_errors():
    with pytest.raises(ValueError, match="no batches"):
        compressed("quant.w8a8:activations=static", Tiny(), ctx_for(calib=[]))
    with pytest.raises(ConfigError, match="percentile=0.0"):
        create_method("quant.w8a8:percentile=0")


# ---------------------------------------------------------------- quant.kmeans

def test_kmeans_deterministic_and_converges():
    w = torch.randn(4096, 1)
    c1, a1 = kmeans(w, 16, 10, seed=0)
    c2, a2 = kmeans(w, 16, 10, seed=0)
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    err = (c1[a1] - w).pow(2).mean()
    c0, a0 = kmeans(w, 16, 0, seed=0)  # quantile init only
    assert err <= (c0[a0] - w).pow(2).mean()


@pytest.mark.parametrize("bits,dim,min_db", [(4, 1, 15), (2, 1, 6), (8, 2, 15)])
def test_kmeans_method(bits, dim, min_db, tmp_path):
    model, x = Tiny(), torch.randn(8, 256)
    with torch.no_grad():
        ref = model(x)
    method = create_method(f"quant.kmeans:bits={bits},dim={dim},iters=8")
    result = method.compress(model, ctx_for())
    q = result.model
    layer = q.body[0]
    assert isinstance(layer, CodebookLinear)
    assert layer.codes.dtype == torch.uint8 and layer.codes.nbytes == 256 * (256 // dim) * bits // 8
    assert layer.codebook.dtype == torch.float16 and layer.codebook.shape == (2 ** bits, dim)
    with torch.no_grad():
        out = q(x)
        assert snr_db(ref, out) > min_db
        restored, _ = roundtrip(method, result, tmp_path)
        assert torch.equal(restored(x), out)


def test_kmeans_codebook_finetune_trains_only_centroids():
    model = Tiny(d=64)
    train = batches(4, bs=16, d=64, seed=3)
    method = create_method("quant.kmeans:bits=2,iters=4,finetune=true")
    before = {n: m.codebook.detach().clone() for n, m in
              compressed("quant.kmeans:bits=2,iters=4", Tiny(d=64), ctx_for()).named_modules()
              if isinstance(m, CodebookLinear)}
    head = model.head.weight.detach().clone()
    q = method.compress(model, ctx_for(train=train, steps=6, lr=1e-2)).model
    layers = {n: m for n, m in q.named_modules() if isinstance(m, CodebookLinear)}
    assert set(layers) == set(before)
    assert any(not torch.equal(m.codebook.detach(), before[n]) for n, m in layers.items())
    for m in layers.values():
        assert m.codebook.dtype == torch.float16 and not m.codebook.requires_grad
    assert torch.equal(q.head.weight, head) and q.head.weight.requires_grad  # frozen during, restored after
    ref_codes = compressed("quant.kmeans:bits=2,iters=4", Tiny(d=64), ctx_for()).body[0].codes
    assert torch.equal(q.body[0].codes, ref_codes)  # the indices stay fixed


class _LrSpy(Trainer):
    """The shared trainer, recording the recipe it was given."""

    def fit(self, model, batches, recipe, seed, **kw):
        self.recipe = recipe
        return super().fit(model, batches, recipe, seed, **kw)


def test_kmeans_finetune_moves_centroids_and_lowers_train_loss(toy_task, toy_baseline):
    """On the toy task's own fine-tuning recipe (5 steps at lr 1e-3) every layer's centroids move
    and the training loss drops well below the un-tuned codebooks'. The peak lr is rel_lr x the
    centroid RMS, not the task's lr: with the task's lr (rel_lr ~0.01 here) the loss fell 4.6%,
    with the default 0.03 about 9%."""
    import copy

    import torch.nn.functional as F

    cfg = toy_task.config
    fixed = list(toy_task.loader("train", 256))

    def run(spec):
        spy = _LrSpy()
        ctx = make_context(toy_task, baseline=toy_baseline, trainer=spy, seed=0)
        q = compressed(spec, copy.deepcopy(toy_baseline), ctx).eval()
        with torch.no_grad():
            loss = sum(float(F.cross_entropy(q(**x), y, reduction="sum")) for x, y in fixed) / 1024
        return q, {n: m for n, m in q.named_modules() if isinstance(m, CodebookLinear)}, loss, spy

    _, plain, loss0, _ = run("quant.kmeans:bits=2")
    q, tuned, loss1, spy = run("quant.kmeans:bits=2,finetune=true")
    assert set(tuned) == set(plain) and len(plain) == 3
    rms = torch.cat([m.codebook.float().flatten() for m in plain.values()]).pow(2).mean().sqrt()
    assert spy.recipe.lr == pytest.approx(0.03 * float(rms), rel=1e-3)  # not the task's 1e-3
    assert spy.recipe.steps == cfg.finetune.steps and spy.recipe.schedule == cfg.finetune.schedule
    for n, m in tuned.items():
        assert m.codebook.dtype == torch.float16 and not m.codebook.requires_grad
        assert torch.equal(m.codes, plain[n].codes)  # indices fixed
        moved = (m.codebook.float() - plain[n].codebook.float()).abs() / plain[n].codebook.float().abs()
        assert moved.median() > 0.04, n  # ~6% after the fp16 store; the task's lr moved them 2-2.5%
    assert loss1 < 0.94 * loss0, (loss0, loss1)  # 0.912 x; the task's lr gave 0.954 x


def test_kmeans_bad_configs():
    with pytest.raises(ConfigError, match=r"bits=6 .*2, 3, 4, 8"):
        create_method("quant.kmeans:bits=6")
    for bad in ("0", "-0.1", "1.5", "nan"):
        with pytest.raises(ConfigError, match=r"rel_lr=.* must be in \(0, 1\]"):
            create_method(f"quant.kmeans:finetune=true,rel_lr={bad}")
    with pytest.raises(ConfigError, match=r"dim=3 .*in_features=256 .*'body.0'"):
        compressed("quant.kmeans:dim=3", Tiny(), ctx_for())
    with pytest.raises(ConfigError, match=r"dim=5 .*in_channels/groups\*kh\*kw=36 .*'0'"):
        compressed("quant.kmeans:dim=5", nn.Sequential(nn.Conv2d(4, 8, 3)), ctx_for())


def test_declared_flops_are_dense():
    from slimbench.suite.measure.flops import count_flops

    from slimbench.suite.measure.sparsity import density

    model = compressed("quant.minmax", Tiny(), ctx_for())
    flops = count_flops(model, {"x": torch.randn(1, 256)})
    dense = 2 * (256 * 256 * 2 + 256 * 10)
    # effective: each layer's MACs whose (dequantized) weight is nonzero: 4-bit codes round some to exactly 0
    shares = [density(m) for m in (model.body[0], model.body[2])]
    assert all(0.8 < d < 1 for d in shares) and density(model.head) == 1.0
    quantized = [round(2 * 256 * 256 * d) for d in shares]
    assert flops["dense"] == dense and flops["effective"] == sum(quantized) + 2 * 256 * 10
    # BOPs: 4-bit weights x fp32 activations in the quantized layers (their nonzero MACs), 32 x 32 in the fp32 head
    assert flops["bops"] == sum(round(256 * 256 * 4 * 32 * d) for d in shares) + 256 * 10 * 32 * 32
