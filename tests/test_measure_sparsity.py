"""Sparsity and effective FLOPs are measured on the weights a layer computes with, whatever format
stores them: a pruned layer that was then quantized keeps its zeros in both figures (before, a
quantized layer declared its full dense cost and sparsity came from the method's own report)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from slimbench.suite.measure.flops import count_flops
from slimbench.suite.measure.sparsity import measure_sparsity, weight_layers


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


class _Call(nn.Module):
    """`model(**inputs)` as the suite calls it."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def test_zeros_are_counted_per_layer_and_overall() -> None:
    net = _mlp()
    with torch.no_grad():
        net[0].weight[:, :8] = 0  # half of the first layer
    s = measure_sparsity(net)
    assert s["layers"] == {"0": 0.5, "2": 0.0} and s["weights"] == 16 * 32 + 32 * 4
    assert s["sparsity"] == pytest.approx(256 / (512 + 128))
    flops = count_flops(_Call(net), {"features": torch.randn(1, 16)})
    assert flops["dense"] == 2 * (16 * 32 + 32 * 4) and flops["effective"] == 2 * (256 + 32 * 4)


def test_a_twin_counts_once_with_the_weight_it_computes_with() -> None:
    class Twin(nn.Module):  # stores its weight another way, keeps a plain Linear inside
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(4, 4)
            with torch.no_grad():
                self.inner.weight.fill_(1.0)

        def forward(self, x):
            return nn.functional.linear(x, self.slim_weight())

        def slim_weight(self):
            return torch.eye(4)  # 12 of 16 zero, whatever the inner layer holds

    model = nn.Sequential(Twin())
    assert [n for n, _ in weight_layers(model)] == ["0"]
    assert measure_sparsity(model)["layers"] == {"0": 0.75}


@pytest.mark.parametrize("quant", ["quant.minmax:bits=8", "quant.w8a8", "torch.dynamic_int8"])
def test_pruned_then_quantized_keeps_its_zeros_in_sparsity_and_effective_flops(quant, toy_task, toy_baseline) -> None:
    from slimbench.methods import as_compressed, create_method
    from slimbench.suite.context import make_context

    spec = f"prune.magnitude:sparsity=0.5+{quant}"
    method = create_method(spec)
    ctx = make_context(toy_task, baseline=toy_baseline, seed=0)
    model = as_compressed(method.compress(copy.deepcopy(toy_baseline), ctx)).model.eval()
    inputs = toy_task.example_inputs(1)
    flops = count_flops(model, inputs)
    s = measure_sparsity(model)
    assert 0.45 < s["sparsity"] < 0.55, s  # the pruned zeros survive 8-bit quantization as exact zeros
    assert flops["effective"] < 0.6 * flops["dense"], flops
    dense = count_flops(toy_baseline, inputs)
    assert flops["dense"] == dense["dense"] == dense["effective"]


def test_weights_in_memory_include_what_a_layer_expands_on_first_use(toy_task, toy_baseline, tmp_path) -> None:
    """A sparse layer expands its dense weight on its first forward: `weights_bytes` is taken after a
    warm-up forward, so the copy it runs on is counted (it was missing when taken right after load)."""
    from slimbench.core.record import DeviceRef, MethodRef, RunRecord, TaskRef
    from slimbench.methods import as_compressed, create_method
    from slimbench.suite.artifact import save_artifact
    from slimbench.suite.context import make_context
    from slimbench.suite.measure.reloaded import measure_artifact
    from slimbench.suite.measure.size import tensor_bytes
    from slimbench.suite.progress import ProgressConfig

    method = create_method("prune.magnitude:sparsity=0.5")
    result = as_compressed(method.compress(copy.deepcopy(toy_baseline), make_context(toy_task, baseline=toy_baseline)))
    save_artifact(result, method, tmp_path)
    record = RunRecord(run_key="k", task=TaskRef(), method=MethodRef(), seed=0, device=DeviceRef())
    model = measure_artifact(toy_task, method, tmp_path, record=record, device="cpu", latency_devices=(), threads=1,
                             latency_profile=(0, 1, 0.0, 0.1), progress=ProgressConfig(False))
    sparse = [m for m in model.modules() if hasattr(m, "expand")]
    assert sparse and all(m._dense is not None for m in sparse)
    expanded = sum(m._dense.numel() * m._dense.element_size() for m in sparse)
    stored = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert record.metrics["weights_bytes"] == tensor_bytes(model) >= stored + expanded
    assert record.metrics["sparsity"] == pytest.approx(0.5, abs=0.01) and record.sparsity_layers
