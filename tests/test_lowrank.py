"""The low-rank family: the factorisations against their definitions, the rank rules, the
factorised layers against the dense ones, artifacts round trips, and bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from slimbench.core.config import ConfigError
from slimbench.methods import create_method
from slimbench.methods.lowrank import factor as fx


def _matrix(out_f=40, in_f=30, seed=0):
    return torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("weighting", ["plain", "row", "col"])
def test_weighted_svd_exact_at_full_rank_and_optimal_in_its_norm(weighting):
    w = _matrix()
    g = torch.Generator().manual_seed(1)
    row = torch.rand(40, generator=g) + 0.1 if weighting == "row" else None
    col = torch.rand(30, generator=g) + 0.1 if weighting == "col" else None
    d = fx.weighted_svd(w, row, col)
    torch.testing.assert_close(d.approx(30).float(), w, rtol=1e-5, atol=1e-5)
    a, b = d.factors(8)
    assert a.shape == (40, 8) and b.shape == (8, 30)

    def weighted_error(approx):
        e = (w.double() - approx.double())
        e = e * row.double()[:, None] if row is not None else e
        e = e * col.double()[None, :] if col is not None else e
        return float(e.pow(2).sum())
    errors = [weighted_error(d.approx(r)) for r in (4, 8, 16)]
    assert errors[0] > errors[1] > errors[2]
    # Eckart-Young in the weighted norm: no other rank-8 matrix (here: plain SVD's) does better
    assert errors[1] <= weighted_error(fx.weighted_svd(w).approx(8)) + 1e-9


def test_rank_rules():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert fx.energy_rank(s, 16 / 22) == 1 and fx.energy_rank(s, 0.9) == 2 and fx.energy_rank(s, 1.0) == 4
    assert fx.params_rank(384, 384, 0.5) == 96 and fx.params_rank(10, 10, 0.01) == 1
    r_out, r_in = fx.flops_ranks(64, 32, 9, 0.4, 1.0)
    assert fx.tucker_flops(64, 32, 9, r_out, r_in, 1.0) <= 0.4 * 64 * 32 * 9
    assert fx.tucker_flops(64, 32, 9, r_out + 1, r_in + 1, 1.0) > 0.4 * 64 * 32 * 9 * 0.9


def test_vbmf_finds_the_planted_rank():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(120, 5, generator=g) @ torch.randn(5, 90, generator=g)
    assert fx.vbmf_rank(low + 0.05 * torch.randn(120, 90, generator=g)) == 5
    assert fx.vbmf_rank(low.t() + 0.05 * torch.randn(90, 120, generator=g)) == 5


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_tucker_at_full_rank_is_the_conv(stride, padding):
    from slimbench.methods.lowrank.modules import TuckerConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 10, 3, stride=stride, padding=padding, bias=True)
    twin = TuckerConv2d(conv, 10, 6).fill(*fx.tucker2(conv.weight, 10, 6), conv.bias)
    x = torch.randn(2, 6, 9, 9)
    torch.testing.assert_close(twin(x), conv(x), rtol=1e-4, atol=1e-5)
    small = TuckerConv2d(conv, 3, 2).fill(*fx.tucker2(conv.weight, 3, 2), conv.bias)
    assert small(x).shape == conv(x).shape
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in conv.parameters())


def test_low_rank_linear_flops_are_the_factors():
    from slimbench.methods.lowrank.modules import LowRankLinear
    from slimbench.suite.measure.flops import count_flops

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lr = LowRankLinear(64, 48, 8, True)

        def forward(self, x):
            return self.lr(x)
    flops = count_flops(Wrap(), {"x": torch.randn(3, 5, 64)})
    assert flops["dense"] == 2 * 15 * 8 * (64 + 48)


@pytest.mark.parametrize("spec,match", [
    ("lowrank.svd:energy=0", "energy"), ("lowrank.svd:energy=1.5", "energy"), ("lowrank.svd:params=0", "params"),
    ("lowrank.tucker:flops=0", "flops"), ('lowrank.svd:{"per_layer": {"*query*": 0}}', "rank must be >= 1"),
    ("lowrank.svd:weighting=wrong", "plain"),
])
def test_bad_configs_fail_before_work(spec, match):
    with pytest.raises(ConfigError, match=match):
        create_method(spec)


@pytest.fixture
def compress(conformance_tasks, guarded_compress):
    """(task name, spec) -> (Compressed, ctx) on that conformance task's trained baseline."""
    def run(task_name, spec, seed=0):
        task, baseline = conformance_tasks[task_name]
        return guarded_compress(create_method(spec), task, baseline, seed=seed)
    return run


@pytest.mark.parametrize("spec,match", [
    ('lowrank.svd:{"per_layer": {"*nothing*": 4}}', "names no selected layer"),
    ('lowrank.svd:{"per_layer": {"*query*": 33}}', "above the full rank 32"),
])
def test_bad_layer_maps_fail_before_work(compress, spec, match):
    with pytest.raises(ConfigError, match=match):
        compress("toy-transformer", spec)


@pytest.mark.parametrize("task_name,spec", [
    ("toy-transformer", "lowrank.svd:dense_if_slower=false"),
    ("toy-transformer", "lowrank.svd:dense_if_slower=false,weighting=activation,rank_by=energy"),
    ("toy-transformer", "lowrank.svd:dense_if_slower=false,weighting=plain,rank_by=sensitivity,levels=0.25;0.75"),
    ("toy-cnn", "lowrank.tucker:dense_if_slower=false"),
    ("toy-cnn", "lowrank.tucker:dense_if_slower=false,rank_by=energy"),
])
def test_factorised_models_keep_the_contract(conformance_tasks, method_contract, tmp_path, task_name, spec):
    """With the timing check off the toy layers are factorised (on the toy's tiny layers two
    matmuls are slower than one, so by default they stay dense): the artifact holds the factors,
    reloads from the bytes alone and runs the same."""
    from slimbench.methods.lowrank.modules import LowRankLinear, TuckerConv2d

    task, baseline = conformance_tasks[task_name]
    reloaded = method_contract(lambda: create_method(spec), task, baseline, tmp_path)
    twins = [m for m in reloaded.modules() if isinstance(m, (LowRankLinear, TuckerConv2d))]
    assert twins
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in baseline.parameters())


def test_budget_and_dense_fallback_recorded(compress):
    result, _ = compress("toy-transformer", "lowrank.svd:dense_if_slower=false,params=0.5")
    m = result.metrics
    assert 0.45 <= m["factorised_params_kept"] <= 0.5 and m["layers_factorised"] == len(m["ranks"])
    assert "val_accuracy_before_finetune" in m
    result, _ = compress("toy-transformer",
                          "lowrank.svd:dense_if_slower=false,rank_by=energy,energy=1.0")
    kept = result.metrics["kept_dense"]  # full-energy ranks: factors are larger than the dense layers
    assert kept and all("not fewer than the dense" in why for why in kept.values())


@pytest.mark.parametrize("t_dense,t_twin,verdict", [
    (0.01, 0.001, "launch-bound"),     # under LAUNCH_BOUND_MS: dense, however fast the factors
    (1.0, 1.2, "measured slower"),     # past the 5% margin
    (1.0, 1.04, None),                 # within the margin: factorised
    (1.0, 0.5, None),
])
def test_timing_decision_on_given_timings(t_dense, t_twin, verdict):
    from slimbench.methods.lowrank.procedure import timing_reason

    why = timing_reason(t_dense, t_twin, (64, 32))
    assert why is None if verdict is None else verdict in why and "(64, 32)" in why


def test_keep_dense_reason_times_in_the_compute_dtype_with_an_injected_timer():
    from slimbench.methods.lowrank.configs import SVDConfig
    from slimbench.methods.lowrank.modules import LowRankLinear
    from slimbench.methods.lowrank.procedure import keep_dense_reason

    dense = nn.Linear(32, 32)
    a, b = fx.weighted_svd(dense.weight.detach()).factors(4)
    twin = LowRankLinear.from_factors(a, b, dense.bias, "torch")
    x, seen, timings = torch.randn(8, 32), [], {}

    def timer(first, second, device):
        seen.append((first().shape, second().shape, device.type))
        return 1.0, 2.0
    why = keep_dense_reason(dense, twin, 1056, 288, x, SVDConfig(), torch.device("cpu"), timings, "l", timer=timer)
    assert "measured slower" in why and timings == {"l": [1.0, 2.0]}
    assert seen == [((8, 32), (8, 32), "cpu")]
    assert keep_dense_reason(dense, twin, 1056, 288, x, SVDConfig(dense_if_slower=False), torch.device("cpu"),
                             timer=timer) is None and len(seen) == 1  # the check off: not timed


@pytest.mark.parametrize("timed,factorised", [((1.0, 2.0), False), ((0.01, 0.001), False), ((1.0, 0.5), True)])
def test_timing_check_decides_per_layer_on_the_timings(compress, monkeypatch, timed, factorised):
    """Timings injected where the procedure takes them (so the outcome is this machine's no more):
    slower or launch-bound layers stay dense, say why, and the model is left as it was (no
    fine-tuning of an unchanged model); faster ones are factorised and fine-tuned."""
    from slimbench.methods.lowrank import procedure

    monkeypatch.setattr(procedure, "paired_ms", lambda first, second, device, reps=9: timed)
    result, ctx = compress("toy-transformer", "lowrank.svd:params=0.25")
    m = result.metrics
    assert m["layer_ms_dense_vs_factorised"] and all(t == list(timed) for t in m["layer_ms_dense_vs_factorised"].values())
    if factorised:
        assert m["layers_factorised"] == len(m["ranks"]) > 0 and "kept_dense" not in m
        assert ctx.ledger.summary()["finetune"]["used"] > 0
    else:
        assert m["layers_factorised"] == 0
        assert all(("measured slower" if timed[0] >= 0.05 else "launch-bound") in why for why in m["kept_dense"].values())
        assert "stayed dense" in m["note"] and ctx.ledger.summary()["finetune"]["used"] == 0


def test_unsupported_where_nothing_can_be_factorised(conformance_tasks):
    cnn, _ = conformance_tasks["toy-cnn"]
    bert, _ = conformance_tasks["toy-transformer"]
    assert "nn.Linear" in create_method("lowrank.svd").supports(cnn.spec(), "cpu")
    assert "Conv2d" in create_method("lowrank.tucker").supports(bert.spec(), "cpu")
    assert create_method("lowrank.svd").supports(bert.spec(), "cpu") is None
