"""FLOP and BOP counting: known formulas, CPU SDPA, and declared slim_cost overrides."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimbench.suite.measure.flops import count_flops


class _Wrap(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class _Declared(nn.Module):
    """A linear layer that claims a fixed cost, e.g. a sparse kernel."""

    def __init__(self, dense: int, effective: int):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.dense, self.effective = dense, effective

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    def slim_cost(self, inputs: tuple[Any, ...], output: Any) -> dict[str, int]:
        assert isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor)
        return {"dense": self.dense, "effective": self.effective}


def test_linear_is_exact() -> None:
    m, k, n = 3, 16, 5
    got = count_flops(_Wrap(nn.Linear(k, n)), {"x": torch.randn(m, k)})
    assert got == {"dense": 2 * m * k * n, "effective": 2 * m * k * n, "bops": m * k * n * 32 * 32}
    half = count_flops(_Wrap(nn.Linear(k, n)), {"x": torch.randn(m, k)}, compute_dtype=torch.bfloat16)
    assert half["bops"] == m * k * n * 16 * 16  # undeclared MACs count at the compute dtype's width


class _Pipeline(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(8, 8)
        self.sparse = _Declared(dense=1000, effective=300)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sparse(self.pre(x))


def test_slim_cost_replaces_traced_flops() -> None:
    model = _Pipeline()
    got = count_flops(model, {"x": torch.randn(1, 8)})
    # no declared BOPs: the declared effective MACs count at 32 x 32 like the rest
    assert got == {"dense": 2 * 64 + 1000, "effective": 2 * 64 + 300, "bops": (64 + 150) * 32 * 32}


class _LowBit(_Declared):
    def slim_cost(self, inputs: tuple[Any, ...], output: Any) -> dict[str, int]:
        return {"dense": 128, "effective": 128, "bops": 64 * 4 * 8}  # 4-bit weights x 8-bit activations


def test_declared_bops_replace_the_dense_width() -> None:
    model = _Pipeline()
    model.sparse = _LowBit(0, 0)
    got = count_flops(model, {"x": torch.randn(1, 8)})
    assert got["bops"] == 64 * 32 * 32 + 64 * 4 * 8


def test_outermost_declaration_wins_and_training_flag_restored() -> None:
    outer = _Declared(dense=50, effective=10)
    outer.lin = _Declared(dense=999, effective=999)  # nested declaring module is ignored
    outer.train()
    assert count_flops(outer, {"x": torch.randn(2, 8)}) == {"dense": 50, "effective": 10, "bops": 5 * 32 * 32}
    assert outer.training


def _bert(impl: str) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=32, num_labels=3)
    cfg._attn_implementation = impl
    return transformers.BertForSequenceClassification(cfg)


def test_cpu_sdpa_attention_is_counted() -> None:
    ids = torch.randint(0, 50, (1, 16))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    sdpa, eager = _bert("sdpa"), _bert("eager")
    assert sdpa.config._attn_implementation == "sdpa"
    got, ref = count_flops(sdpa, inputs), count_flops(eager, inputs)
    assert got == ref
    with torch.no_grad(), FlopCounterMode(display=False) as stock:  # counts CPU SDPA as 0
        sdpa.eval()(**inputs)
    layers, b, h, s, d = 2, 1, 4, 16, 8
    attention = layers * 2 * (2 * b * h * s * s * d)  # QK^T and PV, 2 FLOPs per MAC
    assert got["dense"] - stock.get_total_flops() == attention


def test_resnet18_gmacs() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False)
    got = count_flops(model, {"x": torch.randn(1, 3, 224, 224)})
    assert got["dense"] == got["effective"]
    assert abs(got["dense"] / 2 - 1.814e9) / 1.814e9 < 0.01
