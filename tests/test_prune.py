"""Pruning: achieved sparsity equals what was asked (measured from the reloaded artifact), masks
held through fine-tuning, the cubic ramp, the random control, sensitivity allocation, group lasso,
N:M patterns, sparse storage formats and kernels, structured surgery, and bad input named before
any work. Conformance (round trip, size, determinism, budget) is in test_conformance.py."""
from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import nn

from slimbench.core.config import ConfigError
from slimbench.core.recipe import TrainRecipe
from slimbench.methods import create_method
from slimbench.methods.prune import masks as mk
from slimbench.methods.prune.sensitivity import allocate
from slimbench.methods.prune.sparse import NMLinear, SparseConv2d, SparseLinear
from slimbench.suite.artifact import load_artifact, save_artifact
from slimbench.suite.context import make_context
from slimbench.suite.trainer import Trainer

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def _compress(spec, task, baseline, **ctx_kw):
    ctx = make_context(task, baseline=baseline, **ctx_kw)
    return create_method(spec).compress(copy.deepcopy(baseline), ctx), ctx


def _reloaded(spec, result, task, tmp_path):
    method = create_method(spec)
    save_artifact(result, method, tmp_path)
    return load_artifact(tmp_path, task.build_model, method).eval()


def _layer_sparsity(model) -> dict[str, float]:
    return {n: 1 - m.values.numel() / (m.in_features * m.out_features)
            for n, m in model.named_modules() if isinstance(m, (SparseLinear, NMLinear))}


# ---------------------------------------------------------------- asked == achieved

@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_achieved_sparsity_is_what_was_asked(scope, sparsity, toy_task, toy_baseline, tmp_path):
    spec = f"prune.magnitude:sparsity={sparsity},scope={scope}"
    result, _ = _compress(spec, toy_task, toy_baseline)
    reloaded = _reloaded(spec, result, toy_task, tmp_path)
    per_layer = _layer_sparsity(reloaded)
    sizes = {n: m.in_features * m.out_features for n, m in reloaded.named_modules() if isinstance(m, SparseLinear)}
    assert set(per_layer) == {"net.0", "net.2", "net.4"}  # the toy MLP's last layer is not named as a head
    overall = sum(per_layer[n] * sizes[n] for n in sizes) / sum(sizes.values())
    assert abs(overall - sparsity) <= 1 / min(sizes.values())
    if scope == "layer":
        assert all(abs(s - sparsity) <= 1 / sizes[n] for n, s in per_layer.items())
    assert result.metrics["sparsity"] == pytest.approx(overall, abs=1e-6)
    assert result.metrics["sparsity_per_layer"] == pytest.approx(per_layer, abs=1e-6)
    with torch.no_grad():  # what was stored is what runs
        x = toy_task.example_inputs(4)
        torch.testing.assert_close(reloaded(**x), result.model.eval()(**x))


def test_per_layer_map_and_masks_held_through_fine_tuning(toy_task, toy_baseline):
    spec = 'prune.magnitude:{"sparsity": 0.5, "per_layer": {"net.0": 0.9}, "scope": "layer"}'
    model = copy.deepcopy(toy_baseline)
    layers = mk.selected(model, create_method(spec).config.skip, "t")
    scores = mk.saliency(model, layers, "magnitude")
    allocation = mk.allocate(scores, 0.5, "layer", {"net.0": 0.9})  # 0.5 overall: the others make up the rest
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    assert sum(allocation[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(0.5)
    masks = mk.masks_from(scores, allocation)
    result, ctx = _compress(spec, toy_task, toy_baseline)
    assert ctx.ledger.summary()["finetune"]["used"] == toy_task.config.finetune.steps  # it did train
    for name in ("net.0", "net.2"):
        layer = result.model.get_submodule(name)
        dense = layer.weight2d()
        assert torch.equal(dense != 0, masks[name] & (dense != 0))  # nothing pruned came back
        assert torch.count_nonzero(dense[~masks[name]]) == 0
    assert result.metrics["sparsity_per_layer"]["net.0"] == pytest.approx(0.9, abs=1e-3)
    assert result.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ConfigError, match="other layers would need sparsity"):
        _compress('prune.magnitude:{"sparsity": 0.1, "per_layer": {"net.2": 0.9}}', toy_task, toy_baseline)


def test_cubic_ramp_and_gradual_schedule(toy_task, toy_baseline):
    assert mk.cubic(0, 100, 0.8) == 0 and mk.cubic(75, 100, 0.8) == pytest.approx(0.8)
    assert mk.cubic(100, 100, 0.8) == pytest.approx(0.8)
    ramp = [mk.cubic(t, 100, 0.8) for t in range(0, 101, 5)]
    assert ramp == sorted(ramp) and ramp[1] - ramp[0] > ramp[-6] - ramp[-7]  # fast first, slow at the end
    result, _ = _compress("prune.magnitude:sparsity=0.6,schedule=gradual,update_every=2", toy_task, toy_baseline)
    assert result.metrics["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert result.metrics["mask_updates"] >= 3
    with pytest.raises(ConfigError, match="gradual .* needs finetune=true"):
        create_method("prune.magnitude:schedule=gradual,finetune=false")


def test_random_control_matches_magnitude_per_layer_sparsity(toy_task, toy_baseline):
    mag, _ = _compress("prune.magnitude:sparsity=0.6,finetune=false", toy_task, toy_baseline)
    rnd, _ = _compress("prune.random:sparsity=0.6,finetune=false", toy_task, toy_baseline)
    assert rnd.metrics["sparsity_per_layer"] == pytest.approx(mag.metrics["sparsity_per_layer"], abs=1e-6)
    a, b = mag.model.net[0].weight2d() != 0, rnd.model.net[0].weight2d() != 0
    assert not torch.equal(a, b)  # same counts, other positions
    x, y = next(iter(toy_task.loader("val", 128)))
    with torch.no_grad():  # without fine-tuning the criterion matters: magnitude keeps more accuracy
        acc = lambda m: float((m(**x).argmax(-1) == y).float().mean())  # noqa: E731
        assert acc(mag.model) > acc(rnd.model)


def test_sensitivity_allocation_meets_the_target_and_favours_robust_layers():
    curves = {"robust": {0.3: 0.90, 0.5: 0.90, 0.9: 0.89}, "fragile": {0.3: 0.88, 0.5: 0.80, 0.9: 0.50}}
    sizes = {"robust": 100, "fragile": 300}
    for target in (0.2, 0.4, 0.6):
        chosen, _ = allocate(curves, 0.90, sizes, target, {})
        assert sum(chosen[n] * sizes[n] for n in sizes) / 400 == pytest.approx(target)
        assert chosen["robust"] >= chosen["fragile"]
    chosen, _ = allocate(curves, 0.90, sizes, 0.5, {"robust": 0.1})
    assert chosen["robust"] == 0.1 and (0.1 * 100 + chosen["fragile"] * 300) / 400 == pytest.approx(0.5)


def test_sensitivity_records_its_scan_cost(toy_task, toy_baseline):
    result, _ = _compress("prune.sensitivity:sparsity=0.5,levels=0.5;0.9,saliency=fisher,grad_batches=2",
                          toy_task, toy_baseline)
    m = result.metrics
    assert m["scan_evaluations"] == 3 * 2 + 1  # 3 layers x 2 levels, plus the unpruned model
    assert m["scan_examples"] == 128  # the whole toy validation split
    assert m["saliency_batches"] == 2 and m["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert m["saliency_backward_passes"] == 2 * 64  # fisher: one backward pass per example (toy batches of 64)
    assert set(m["allocated"]) == {"net.0", "net.2", "net.4"}


def test_group_lasso_prunes_whole_rows(toy_task, toy_baseline):
    result, _ = _compress("prune.l1:penalty=group,strength=1e-3,sparsity=0.5", toy_task, toy_baseline)
    for name in ("net.0", "net.2", "net.4"):
        layer = result.model.get_submodule(name)
        stored = storage_rows(layer)
        assert set(stored.tolist()) <= {0, layer.in_features}  # every row stored whole or not at all
    assert 0.5 <= result.metrics["sparsity"] < 0.5 + 64 / 6400  # at most one row past the target


def storage_rows(layer) -> torch.Tensor:
    """Stored positions per row of a bitmask SparseLinear."""
    from slimbench.methods.common import storage
    keep = storage.from_bitmask(torch.ones_like(layer.values), layer.mask, (layer.out_features, layer.in_features))
    return keep.sum(1).long()


# ---------------------------------------------------------------- N:M

def test_nm_pattern_is_held_and_reloads(toy_task, toy_baseline, tmp_path):
    result, _ = _compress("prune.nm", toy_task, toy_baseline)
    reloaded = _reloaded("prune.nm", result, toy_task, tmp_path)
    for m in reloaded.modules():
        if isinstance(m, NMLinear):
            w = m.weight2d()
            assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
            assert m.positions.dtype == torch.uint8 and m.positions.numel() * 8 == w.numel() // 2 * 2
    assert result.metrics["sparsity"] == 0.5 and result.metrics["pattern"] == "2:4"


def test_nm_pattern_must_divide_the_layer():
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match=r"m=4 does not divide in_features=6 of layer '0'"):
        create_method("prune.nm:skip=").compress(model, make_context())
    with pytest.raises(ConfigError, match="m=3 is not supported"):
        create_method("prune.nm:n=1,m=3")
    with pytest.raises(ConfigError, match="n=4 must be smaller than m=4"):
        create_method("prune.nm:n=4")


# ---------------------------------------------------------------- storage and kernels

@pytest.mark.parametrize("storage", ["bitmask", "csr"])
def test_storage_counts_values_and_reports_index_bytes(storage, toy_task, toy_baseline, tmp_path):
    spec = f"prune.magnitude:sparsity=0.8,scope=layer,storage={storage},finetune=false"
    result, _ = _compress(spec, toy_task, toy_baseline)
    info = save_artifact(result, create_method(spec), tmp_path)
    layer = result.model.net[0]
    assert layer.values.numel() == int(round(0.2 * 64 * 32))
    shapes = [(64, 32), (64, 64), (4, 64)]  # [out, in] of the three layers; in <= 256: one-byte column indices
    if storage == "bitmask":
        index = sum(-(-o * i // 8) for o, i in shapes)
    else:
        index = sum(int(round(0.2 * o * i)) + (o + 1) * 4 for o, i in shapes)
    assert info.index_bytes == index
    dense_params = sum(p.numel() for p in toy_baseline.parameters())
    assert info.params_total < dense_params  # values counted, not the positions
    assert "note" not in result.metrics and result.metrics["sparse_weight_bytes"] < result.metrics["dense_weight_bytes"]


def test_sparse_larger_than_dense_is_recorded(toy_task, toy_baseline):
    result, _ = _compress("prune.magnitude:sparsity=0.0,storage=csr,finetune=false", toy_task, toy_baseline)
    assert "larger than dense" in result.metrics["note"]


def test_csr_kernel_matches_dense_and_says_which_is_faster(toy_task, toy_baseline):
    result, _ = _compress("prune.magnitude:sparsity=0.7,kernel=csr,finetune=false", toy_task, toy_baseline)
    x = toy_task.example_inputs(8)
    model = result.model.eval()
    with torch.no_grad():
        csr = model(**x)
        for m in model.modules():
            if isinstance(m, SparseLinear):
                m.kernel = "dense"
        torch.testing.assert_close(model(**x), csr, rtol=1e-5, atol=1e-5)
    assert result.metrics["csr_ms_bs1"] > 0 and result.metrics["dense_ms_bs1"] > 0
    faster = result.metrics["dense_ms_bs1"] < result.metrics["csr_ms_bs1"]
    assert ("dense kernel would be faster" in result.metrics.get("note", "")) == faster


def test_sparse_conv_and_effective_flops():
    from torch.utils.flop_counter import FlopCounterMode  # noqa: F401  (the counter the suite uses)

    from slimbench.suite.measure.flops import count_flops
    conv = nn.Conv2d(4, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight[:, :2] = 0
    sparse = SparseConv2d.from_conv(conv, "bitmask")
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), conv(x))
    flops = count_flops(nn.Sequential(sparse), {"input": x[:1]})
    assert flops["effective"] == flops["dense"] // 2


# ---------------------------------------------------------------- structured

def test_structured_cnn_removes_channels_consistently(conformance_tasks, tmp_path):
    task, baseline = conformance_tasks["toy-cnn"]
    result, _ = _compress("prune.structured:ratio=0.5,finetune=false", task, baseline)
    model = result.model
    assert result.metrics["channels_after"] < result.metrics["channels_before"]
    assert model.net.fc.out_features == 4  # the head keeps its classes
    reloaded = _reloaded("prune.structured:ratio=0.5,finetune=false", result, task, tmp_path)
    x = task.example_inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**x), model(**x))
    assert sum(p.numel() for p in reloaded.parameters()) < 0.5 * sum(p.numel() for p in baseline.parameters())


def test_structured_transformer_removes_heads_and_neurons(tmp_path):
    from slimbench.tasks import raw_task
    from slimbench.tasks.base import Task, config_from_dict

    raw = raw_task("toy-transformer")
    raw["model"]["kwargs"] = {**raw["model"]["kwargs"], "num_attention_heads": 4}
    task = Task(config_from_dict(raw))
    baseline = task.build_model()
    result, _ = _compress("prune.structured:ratio=0.5,finetune=false", task, baseline)
    att = result.model.model.bert.encoder.layer[0].attention.self
    assert att.num_attention_heads == 2 and att.query.out_features == 16
    assert result.model.model.bert.encoder.layer[0].intermediate.dense.out_features == 32
    assert result.metrics["heads_removed"] == 4 and result.metrics["heads_before"] == 8
    reloaded = _reloaded("prune.structured:ratio=0.5,finetune=false", result, task, tmp_path)
    assert reloaded.model.bert.encoder.layer[1].attention.self.num_attention_heads == 2
    x = task.example_inputs(3)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**x), result.model.eval()(**x))


def test_structured_says_unsupported_for_a_plain_mlp(toy_task):
    reason = create_method("prune.structured").supports(toy_task.spec(), "cpu")
    assert reason and "neither" in reason


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("spec, message", [
    ("prune.magnitude:sparsity=1.0", r"sparsity=1.0 must be in \[0, 1\)"),
    ("prune.magnitude:sparsity=-0.1", r"sparsity=-0.1 must be in \[0, 1\)"),
    ("prune.structured:ratio=1", r"ratio=1.0 must be in \[0, 1\)"),
    ('prune.magnitude:{"per_layer": {"net.0": 1.5}}', r"per_layer\['net.0'\]=1.5 must be in \[0, 1\)"),
    ("prune.sensitivity:levels=", "levels is empty"),
    ("prune.magnitude:storage=coo", "choose one of auto, bitmask, csr, bsr"),
    ('prune.l1:{"penalty": "group", "per_layer": {"net.0": 0.5}}', r"cannot take per_layer=\{'net.0': 0.5\}"),
    ("prune.nm:m=3", "m=3 is not supported; choose one of 2, 4, 8, 16"),
])
def test_bad_configs_are_refused_before_any_work(spec, message):
    with pytest.raises(ConfigError, match=message):
        create_method(spec)


def test_sparsity_map_naming_no_layer_fails_before_training(toy_task, toy_baseline):
    calls = []

    class Spy(Trainer):
        def fit(self, *a, **kw):
            calls.append(1)
            return super().fit(*a, **kw)

    with pytest.raises(ConfigError, match=r"per_layer pattern '\*attention\*' names no prunable layer; the layers are "
                                          r"net.0, net.2, net.4"):
        _compress('prune.magnitude:{"per_layer": {"*attention*": 0.5}}', toy_task, toy_baseline, trainer=Spy())
    assert calls == []


def test_per_layer_patterns_resolve_in_one_place():
    """The one per_layer resolver pruning and low-rank share: a later pattern wins a layer, each hit
    is vetted in order, a pattern naming no layer lists the layers."""
    from slimbench.methods.common.layers import per_layer_map

    names = ["a.q", "a.k", "b.q"]
    seen = []
    assert per_layer_map(names, {"*.q": 1, "b.*": 2}, "m", "x layer",
                         lambda n, p, v: seen.append((n, p, v))) == {"a.q": 1, "b.q": 2}
    assert seen == [("a.q", "*.q", 1), ("b.q", "*.q", 1), ("b.q", "b.*", 2)]
    with pytest.raises(ConfigError, match=r"^m: per_layer pattern 'c\*' names no x layer; the layers are a.q, a.k, b.q$"):
        per_layer_map(names, {"*.q": 1, "c*": 2}, "m", "x layer")


def test_unreachable_sparsity_map_fails_before_training(toy_task, toy_baseline):
    calls = []

    class Spy(Trainer):
        def fit(self, *a, **kw):
            calls.append(1)
            return super().fit(*a, **kw)

    spec = 'prune.sensitivity:{"sparsity": 0.1, "per_layer": {"net.2": 0.9}}'
    with pytest.raises(ConfigError, match=r"other layers would need sparsity .*; choose sparsity in \[0\.\d+, "):
        _compress(spec, toy_task, toy_baseline, trainer=Spy())
    assert calls == []


def test_pruning_never_touches_the_baseline_cache(tmp_path, monkeypatch):
    """Through the harness: the cached baseline's bytes are the same after pruning runs as before."""
    import hashlib

    from slimbench.suite.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["run", "--tasks", "toy", "--profile", "quick", "--results-dir", str(tmp_path), "--no-progress"]
    assert main([*args, "--method", "baseline"]) == 0
    cache = next((tmp_path / "cache" / "baselines").iterdir()) / "model.safetensors"
    digest = hashlib.sha256(cache.read_bytes()).hexdigest()
    assert main([*args, "--method", "prune.magnitude:sparsity=0.9", "--method", "prune.nm", "--method",
                 "prune.l1"]) == 0
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == digest


def _pruning_methods(task) -> list[str]:
    from slimbench.methods import METHODS

    return [n for n in METHODS.names() if n.startswith("prune.") and create_method(n).supports(task.spec(), "cpu") is None]


def test_pruning_never_reads_the_test_split(toy_task, toy_baseline):
    """Every pruning method that runs on the toy compresses with every test split in the process
    sealed (`tasks.seal`): the wire must not trip (it would even if a method caught the error)."""
    from slimbench.tasks.seal import sealed

    names = _pruning_methods(toy_task)
    assert {"prune.magnitude", "prune.nm", "prune.l1", "prune.random", "prune.sensitivity"} <= set(names)
    for name in names:
        ctx = make_context(toy_task, baseline=toy_baseline)
        with sealed() as wire:
            create_method(name).compress(copy.deepcopy(toy_baseline), ctx)
        assert not wire.tripped, (name, wire.reads)


def test_the_seal_catches_a_method_that_reads_the_test_split_and_swallows_the_error(toy_task, toy_baseline):
    """The counter-test: a pruning method that peeks at the test split inside compress (its own
    `get_task(...).data().test`, the error caught) leaves the wire tripped."""
    from slimbench.tasks import get_task
    from slimbench.tasks.seal import TestSplitRead, sealed

    method = create_method("prune.magnitude:sparsity=0.5")
    compress = method.compress

    def peeking(model, ctx):
        try:
            get_task(toy_task.name, "quick").data().test[0]
        except TestSplitRead:
            pass  # swallowed: the wire still remembers
        return compress(model, ctx)
    method.compress = peeking
    ctx = make_context(toy_task, baseline=toy_baseline)
    with sealed() as wire:
        method.compress(copy.deepcopy(toy_baseline), ctx)
    assert wire.tripped and wire.reads == ["item 0"]
    assert len(get_task(toy_task.name, "quick").data().test) > 0  # unsealed again afterwards


def test_gradual_with_no_budget_still_reaches_the_target(toy_task, toy_baseline):
    result, ctx = _compress("prune.magnitude:sparsity=0.6,schedule=gradual", toy_task, toy_baseline,
                            finetune=TrainRecipe(steps=0))
    assert result.metrics["sparsity"] == pytest.approx(0.6, abs=1e-3) and ctx.ledger.used.get("finetune", 0) == 0


def test_kept_zero_weights_are_stored_so_sparsity_is_what_was_asked(toy_task, toy_baseline):
    model = copy.deepcopy(toy_baseline)
    with torch.no_grad():
        model.net[2].weight[:, :8] = 0  # exact zeros among the weights magnitude pruning keeps at 0%
    result = create_method("prune.magnitude:sparsity=0.0,finetune=false").compress(model, make_context(toy_task))
    assert result.metrics["sparsity"] == 0.0


def test_sensitivity_with_a_per_layer_override_meets_the_overall_target(toy_task, toy_baseline):
    spec = 'prune.sensitivity:{"sparsity": 0.5, "per_layer": {"net.2": 0.6}, "levels": [0.3, 0.9]}'
    result, _ = _compress(spec, toy_task, toy_baseline)
    assert result.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert result.metrics["allocated"]["net.2"] == 0.6 and min(result.metrics["allocated"].values()) >= 0


def test_nm_layer_dispatch_and_kernel_width_rule():
    """NMLinear picks the Triton kernel only where its K tile fits; elsewhere (CPU, odd widths) the dense path."""
    from slimbench.methods.prune.sparse import nm_twin

    lin = nn.Linear(20, 8)
    with torch.no_grad():
        g = lin.weight.reshape(8, 5, 4)
        keep = g.abs().topk(2, -1).indices
        lin.weight.mul_(torch.zeros_like(g, dtype=torch.bool).scatter_(-1, keep, True).reshape(8, 20))
    twin = nm_twin(lin, 2, 4)
    x = torch.randn(3, 20)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), lin(x))


def test_auto_kernel_picks_csr_by_timing_and_the_choice_travels_with_the_artifact(toy_task, toy_baseline, tmp_path,
                                                                                    monkeypatch):
    """kernel=auto keeps CSR up to between the sizes where it timed faster and slower (here: faster
    at batch 1, slower at batch 8: up to sqrt(8) -> 2 rows), stores that per layer, and the
    reloaded model runs and names the same."""
    from slimbench.methods.prune import unstructured as un

    timed: list[SparseLinear] = []  # the layer each timed call ran (a forward hook records it)

    def fake_time(fn, reps):  # CSR costs 1 ms at batch 1 and 3 ms above it; dense 2 ms
        fn()
        layer = timed[-1]
        return 2.0 if layer.csr_rows < 0 else (1.0 if layer.csr_rows <= 1 else 3.0)

    real_choose = un.choose_kernels

    def choose(model, ctx, reps=7):
        for m in model.modules():
            if isinstance(m, SparseLinear):
                m.register_forward_pre_hook(lambda mod, args: timed.append(mod))
        return real_choose(model, ctx, reps)

    monkeypatch.setattr(un, "_time_ms", fake_time)
    monkeypatch.setattr(un, "choose_kernels", choose)
    spec = "prune.magnitude:sparsity=0.9,finetune=false"
    result, _ = _compress(spec, toy_task, toy_baseline)
    choice = result.metrics["kernel_choice"]
    layers = {n: m for n, m in result.model.named_modules() if isinstance(m, SparseLinear)}
    assert choice["csr_layers"] == len(layers) == choice["sparse_linear_layers"] > 0
    assert set(choice["csr_rows"].values()) == {2}  # batch 1 won, batch 8 lost
    reloaded = _reloaded(spec, result, toy_task, tmp_path)
    for name, m in reloaded.named_modules():
        if isinstance(m, SparseLinear):
            assert (m.csr_rows, m.timed_on) == (2, "cpu")
            assert m.uses_csr(torch.zeros(2, m.in_features)) and not m.uses_csr(torch.zeros(3, m.in_features))
            assert m.slim_path("cpu", torch.float32).startswith("torch.sparse.mm (CSR) up to 2 rows")
            assert m.slim_path("cuda", torch.float16).startswith("reference: ")  # not timed there
    with torch.no_grad():
        for bs in (1, 8):
            x = toy_task.example_inputs(bs)
            torch.testing.assert_close(reloaded(**x), result.model.eval()(**x), rtol=1e-5, atol=1e-5)


def test_auto_kernel_keeps_dense_where_csr_never_wins(toy_task, toy_baseline, tmp_path, monkeypatch):
    from slimbench.methods.prune import unstructured as un

    monkeypatch.setattr(un, "_time_ms", lambda fn, reps: 1.0)  # a tie goes to dense
    spec = "prune.magnitude:sparsity=0.5,finetune=false"
    result, _ = _compress(spec, toy_task, toy_baseline)
    assert result.metrics["kernel_choice"]["csr_layers"] == 0
    reloaded = _reloaded(spec, result, toy_task, tmp_path)
    layer = next(m for m in reloaded.modules() if isinstance(m, SparseLinear))
    assert layer.csr_rows == 0 and not layer.uses_csr(torch.zeros(1, layer.in_features))
    assert "timed faster than torch.sparse.mm" in layer.slim_path("cpu", torch.float32)
