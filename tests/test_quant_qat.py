"""quant.qat and quant.progressive: LSQ gradients, exact fake-quant -> packed conversion,
use of the shared trainer, restore through quant.minmax's path, config errors, and that QAT
improves on plain min-max at low bit-widths. Toy models and few steps: the CPU is shared."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import slimbench.methods.quant  # noqa: F401  (registers quant.qat / quant.progressive)
from slimbench.core.config import ConfigError
from slimbench.core.recipe import TrainRecipe
from slimbench.methods import METHODS, CompressionContext, create_method
from slimbench.methods.base import Unsupported
from slimbench.methods.quant import qat
from slimbench.methods.quant.fakequant import FakeQuantConv2d, FakeQuantLinear, _LSQ
from slimbench.methods.quant.linear import QuantConv2d, QuantLinear
from slimbench.methods.quant.progressive import stage_steps
from slimbench.suite.context import make_context
from slimbench.suite.trainer import Trainer


class Tiny(nn.Module):
    """Two hidden Linears and a `head` (kept in fp32 by the default skip list)."""

    def __init__(self, d: int = 64, classes: int = 10, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.body(x))


class TinyConv(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, groups=2, bias=False)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(F.relu(self.c2(F.relu(self.c1(x)))).mean((2, 3)))


class CountingTrainer(Trainer):
    """The real trainer, recording each fit call's steps and the bit-widths it trained at."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, list[int]]] = []

    def fit(self, model, batches, recipe, seed, **kw):
        self.calls.append((recipe.steps, sorted({m.bits for m in model.modules() if isinstance(m, FakeQuantLinear)})))
        return super().fit(model, batches, recipe, seed, **kw)


def batches(n=4, bs=16, shape=(64,), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [({"x": torch.randn(bs, *shape, generator=g)}, torch.randint(0, 10, (bs,), generator=g)) for _ in range(n)]


def ctx_for(train=(), steps=0, lr=1e-2, seed=0, trainer=None) -> CompressionContext:
    return make_context(train=list(train), finetune=TrainRecipe(steps=steps, lr=lr), seed=seed,
                        trainer=trainer or CountingTrainer())


def roundtrip(method, result, skeleton):
    """Save as the suite does (safetensors + JSON meta) and restore into a fresh skeleton."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        save_file(result.model.state_dict(), f"{d}/m.safetensors")
        meta = json.loads(json.dumps(result.meta))
        return method.restore(skeleton, load_file(f"{d}/m.safetensors"), meta).eval()


# ---------------------------------------------------------------- registration / contract

def test_registered_real_and_torch_free():
    assert {"quant.qat", "quant.progressive"} <= set(METHODS.names())
    for name in ("quant.qat", "quant.progressive"):
        assert METHODS.get(name).simulated is False and METHODS.get(name).family == "quantization"
    code = "import sys, slimbench.methods.quant.plugins; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert create_method("quant.progressive:schedule=8;4;2").spec == "quant.progressive:schedule=8;4;2"


def test_config_errors():
    with pytest.raises(ConfigError, match=r"bits=5 .*2, 3, 4, 8"):
        create_method("quant.qat:bits=5")
    with pytest.raises(ConfigError, match=r"schedule=8;5 contains 5, which is not supported; choose one of 2, 3, 4, 8"):
        create_method("quant.progressive:schedule=8;5")
    for bad in ("4;8", "4;4", "8;2;3"):
        with pytest.raises(ConfigError, match="strictly descending"):
            create_method(f"quant.progressive:schedule={bad}")
    with pytest.raises(ConfigError, match="empty"):
        create_method("quant.progressive:schedule=")
    with pytest.raises(ConfigError, match="group_size=0"):
        create_method("quant.qat:group_size=0")
    with pytest.raises(ConfigError, match=r"group_size=48 .*in_features=64 .*'body.0'"):  # before any training
        create_method("quant.qat:group_size=48").compress(Tiny(), ctx_for(batches(), steps=2))
    with pytest.raises(Unsupported, match="no nn.Linear or nn.Conv2d"):
        create_method("quant.progressive:skip=*").compress(Tiny(), ctx_for())


def test_stage_steps():
    assert stage_steps(7, 3) == [2, 2, 3] and stage_steps(0, 2) == [0, 0] and stage_steps(5, 1) == [5]


# ---------------------------------------------------------------- LSQ gradients

def test_lsq_backward_matches_reference():
    torch.manual_seed(0)
    w = torch.randn(4, 2, 8, requires_grad=True)
    s = (torch.rand(4, 2, 1) * 0.5 + 0.2).half().float().requires_grad_(True)  # fp16-exact: s16 == s
    grad = torch.randn(4, 2, 8)
    qmax, g = 3, 0.25
    _LSQ.apply(w, s, qmax, g).backward(grad)
    # reference: clamp then round with a straight-through estimator, through plain autograd
    w2, s2 = w.detach().clone().requires_grad_(True), s.detach().clone().requires_grad_(True)
    xc = (w2 / s2).clamp(-qmax, qmax)
    ((xc + (torch.round(xc) - xc).detach()) * s2).backward(grad)
    torch.testing.assert_close(w.grad, w2.grad)
    torch.testing.assert_close(s.grad, s2.grad * g)


# ---------------------------------------------------------------- fake-quant == packed

def _train_fake(model, spec, train, steps=4):
    cfg = create_method(spec).config.minmax_config()
    qat.prepare(model, cfg, "test")
    qat.train(model, ctx_for(train, steps), steps, qat.endless(lambda: train), "test")
    return model.eval()


@pytest.mark.parametrize("spec", ["quant.qat:bits=2", "quant.qat:bits=3,granularity=channel",
                                  "quant.qat:bits=4,group_size=16", "quant.qat:bits=8,granularity=tensor"])
def test_converted_equals_fake_quant_linear(spec):
    x = torch.randn(8, 64)
    fake = _train_fake(Tiny(), spec, batches())
    assert any(not torch.equal(m.log_scale, torch.zeros_like(m.log_scale)) for m in qat.fake_layers(fake))
    packed = qat.convert(copy.deepcopy(fake))
    layer = packed.body[0]
    assert isinstance(layer, QuantLinear) and layer.symmetric and not qat.fake_layers(packed)
    assert isinstance(packed.head, nn.Linear)  # skipped, stays fp32
    with torch.no_grad():
        torch.testing.assert_close(packed(x), fake(x), rtol=0, atol=0)
        torch.testing.assert_close(layer.dequantize(), fake.body[0].quantized_weight(), rtol=0, atol=0)


@pytest.mark.parametrize("spec", ["quant.qat:bits=3,skip=head", "quant.qat:bits=4,conv_granularity=group,"
                                                                "group_size=9,skip=head"])
def test_converted_equals_fake_quant_conv(spec):
    x = torch.randn(4, 3, 8, 8)
    fake = _train_fake(TinyConv(), spec, batches(3, 4, (3, 8, 8)))
    assert isinstance(fake.c2, FakeQuantConv2d)
    packed = qat.convert(copy.deepcopy(fake))
    assert isinstance(packed.c1, QuantConv2d) and isinstance(packed.c2, QuantConv2d) and packed.c2.groups == 2
    with torch.no_grad():
        torch.testing.assert_close(packed(x), fake(x), rtol=0, atol=0)


# ---------------------------------------------------------------- methods: trainer, budget, restore

def test_qat_uses_trainer_and_restores(tmp_path):
    trainer, x = CountingTrainer(), torch.randn(8, 64)
    method = create_method("quant.qat:bits=3")
    result = method.compress(Tiny(), ctx_for(batches(), steps=6, trainer=trainer))
    out = result.model
    assert trainer.calls == [(6, [3])]
    assert isinstance(out.body[2], QuantLinear) and out.body[2].bits == 3 and not out.training
    assert not any(p.requires_grad for p in out.body.parameters())  # packed layers hold buffers only
    restored = roundtrip(method, result, Tiny(seed=123))
    with torch.no_grad():
        assert torch.equal(restored(x), out(x))
    minmax = create_method("quant.minmax:bits=3").compress(Tiny(), ctx_for()).model
    assert {k: v.shape for k, v in out.state_dict().items()} == {k: v.shape for k, v in minmax.state_dict().items()}
    assert result.meta["layers"] == ["body.0", "body.2"]


def test_progressive_stages_and_restore():
    trainer, x = CountingTrainer(), torch.randn(8, 64)
    method = create_method("quant.progressive:schedule=8;4;2,granularity=channel")
    ctx = ctx_for(batches(), steps=7, trainer=trainer)
    result = method.compress(Tiny(), ctx)
    out = result.model
    assert trainer.calls == [(2, [8]), (2, [4]), (3, [2])] and ctx.ledger.summary()["finetune"] == {"used": 7, "budget": 7}
    assert all(m.bits == 2 and m.granularity == "channel" for m in out.modules() if isinstance(m, QuantLinear))
    restored = roundtrip(method, result, Tiny(seed=7))
    with torch.no_grad():
        assert torch.equal(restored(x), out(x))


def test_budget_zero_converts_without_training():
    trainer = CountingTrainer()
    q = create_method("quant.qat:bits=4,group_size=32").compress(Tiny(), ctx_for(steps=0, trainer=trainer)).model
    ref = create_method("quant.minmax:bits=4,group_size=32").compress(Tiny(), ctx_for()).model
    assert trainer.calls == []
    sd, ref_sd = q.state_dict(), ref.state_dict()
    assert sd.keys() == ref_sd.keys() and all(torch.equal(sd[k], ref_sd[k]) for k in sd)  # min-max start
    p = create_method("quant.progressive").compress(Tiny(), ctx_for(steps=0, trainer=trainer)).model
    assert trainer.calls == [] and isinstance(p.body[0], QuantLinear) and p.body[0].bits == 4


def test_deterministic():
    a = create_method("quant.progressive:schedule=4;3").compress(Tiny(), ctx_for(batches(), steps=4, seed=5)).model
    b = create_method("quant.progressive:schedule=4;3").compress(Tiny(), ctx_for(batches(), steps=4, seed=5)).model
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# ---------------------------------------------------------------- does training help?

def _ce_acc(model, data):
    loss = correct = n = 0
    with torch.no_grad():
        for inputs, y in data:
            out = model(**inputs)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(-1) == y).sum().item()
            n += len(y)
    return loss / n, correct / n


@pytest.mark.parametrize("bits", [2, 3])
def test_qat_beats_minmax_on_toy(bits, toy_task, toy_baseline):
    """QAT lowers the loss it trains on (the toy train split) well below plain min-max.

    On the held-out split the toy task is saturated (2-bit min-max already matches fp32
    accuracy) and 20 steps of any fine-tuning overfit its 1024 samples, so there we only
    require that QAT is not worse than min-max by more than 3 accuracy points."""
    ctx = make_context(toy_task, baseline=toy_baseline, finetune=TrainRecipe(steps=20, lr=3e-3, batch_size=64))
    minmax = create_method(f"quant.minmax:bits={bits}").compress(copy.deepcopy(toy_baseline), ctx).model
    trained = create_method(f"quant.qat:bits={bits}").compress(copy.deepcopy(toy_baseline), ctx).model
    train_split = list(toy_task.loader("train", 256))
    assert _ce_acc(trained, train_split)[0] < 0.95 * _ce_acc(minmax, train_split)[0]
    assert _ce_acc(trained, toy_task.test_batches())[1] >= _ce_acc(minmax, toy_task.test_batches())[1] - 0.03


def test_qat_distills_from_the_teacher(conformance_tasks, method_contract, tmp_path):
    """loss=kd trains the fake-quant model on the teacher's logits (the trainer is handed the KD
    loss, which is zero for a student equal to its teacher), and the result keeps the contract."""
    import torch

    from slimbench.methods import create_method
    from slimbench.methods.quant.qat import teacher_kd
    from slimbench.suite.context import make_context

    task, baseline = conformance_tasks["toy-transformer"]
    ctx = make_context(task, baseline=baseline)
    loss = teacher_kd(ctx, 2.0, 1.0)
    inputs = task.example_inputs(8)
    with torch.no_grad():
        same = loss(None, inputs, baseline(**inputs), torch.zeros(8, dtype=torch.long))
        other = loss(None, inputs, torch.zeros(8, 4), torch.zeros(8, dtype=torch.long))
    assert float(same) < 1e-6 < float(other)
    method_contract(lambda: create_method("quant.qat:loss=kd,bits=8,granularity=channel"), task, baseline, tmp_path)
