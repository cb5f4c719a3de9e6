"""Micro-benchmarks (pytest-benchmark): each compressed layer against its dense counterpart at
MiniLM's Linear shapes (rotten-tomatoes), a batch-1 (48 tokens) and a batch-32 (1536 tokens) input.

    make micro        # or: python -m pytest benchmarks/micro --benchmark-storage=results/benchmarks/micro ...

Each layer is made by its method on a one-layer model (what the suite stores and runs), then its
forward is timed. These are benchmarks, not tests of speed: the test-suite runs them once each with
--benchmark-disable (do they work?), never checking a time.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")

SHAPES = {"qkv": (384, 384), "ffn_up": (384, 1536), "ffn_down": (1536, 384)}  # (in, out)
TOKENS = {"bs1": 48, "bs32": 1536}
SPECS = ("dense", "torch.dynamic_int8", "quant.w8a8", "quant.minmax", "quant.minmax:bits=8,granularity=channel",
         "prune.magnitude:sparsity=0.9,finetune=false,kernel=dense",
         "prune.magnitude:sparsity=0.9,finetune=false,kernel=csr", "prune.nm:finetune=false",
         "lowrank.svd:params=0.25")


class OneLayer(nn.Module):
    def __init__(self, k: int, n: int):
        super().__init__()
        self.proj = nn.Linear(k, n)

    def forward(self, x):
        return self.proj(x)


_LAYERS: dict[tuple[str, str], nn.Module] = {}


def compressed(spec: str, shape: str) -> nn.Module:
    """The layer `spec` makes of a seeded dense Linear of `shape` (cached across batch sizes)."""
    key = (spec, shape)
    if key not in _LAYERS:
        from slimbench.methods import create_method
        from slimbench.methods.base import as_compressed
        from slimbench.suite.context import make_context

        torch.manual_seed(0)
        k, n = SHAPES[shape]
        model = OneLayer(k, n).eval()
        if spec != "dense":
            calib = [({"x": torch.randn(64, k)}, torch.zeros(64, dtype=torch.long))]
            ctx = make_context(calibration=calib, train=calib, val=calib, seed=0)
            model = as_compressed(create_method(spec).compress(copy.deepcopy(model), ctx)).model.eval()
        _LAYERS[key] = model
    return _LAYERS[key]


@pytest.mark.parametrize("tokens", list(TOKENS))
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("spec", SPECS)
def test_layer_forward(benchmark, spec, shape, tokens):
    model = compressed(spec, shape)
    x = torch.randn(TOKENS[tokens], SHAPES[shape][0])
    benchmark.group = f"{shape} {tokens}"
    benchmark.extra_info["layer"] = type(model.proj).__name__

    def run():
        with torch.inference_mode():
            return model(x)
    y = benchmark(run)
    assert y.shape == (TOKENS[tokens], SHAPES[shape][1])
