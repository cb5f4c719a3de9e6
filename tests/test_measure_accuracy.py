"""Streaming accuracy and balanced accuracy on a model with known predictions."""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from slimbench.suite.measure.accuracy import evaluate


class _Lookup(nn.Module):
    """Predicts the class stored in `pred` for each item: logits = one-hot(pred)."""

    def __init__(self, num_classes: int, wrap: bool = False):
        super().__init__()
        self.num_classes, self.wrap = num_classes, wrap

    def forward(self, pred: torch.Tensor):
        logits = F.one_hot(pred, self.num_classes).float()
        return SimpleNamespace(logits=logits) if self.wrap else logits


def _batches(preds: list[int], labels: list[int], size: int):
    for i in range(0, len(preds), size):
        yield {"pred": torch.tensor(preds[i:i + size])}, torch.tensor(labels[i:i + size])


def test_exact_accuracy_and_balanced_accuracy() -> None:
    # class 0: 6 items, 5 right; class 1: 3 items, 1 right; class 2: 1 item, 0 right
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2]
    preds = [0, 0, 0, 0, 0, 1, 1, 0, 0, 0]
    model = _Lookup(4)
    model.train()
    seen: list[int] = []
    out = evaluate(model, _batches(preds, labels, 3), "cpu", progress=seen.append)
    assert out["n"] == 10 and seen == [3, 3, 3, 1]
    assert out["accuracy"] == 0.6
    assert math.isclose(out["balanced_accuracy"], (5 / 6 + 1 / 3 + 0) / 3)  # class 3 absent: excluded
    assert model.training


def test_hf_style_output_and_empty() -> None:
    out = evaluate(_Lookup(2, wrap=True), _batches([1, 1], [1, 0], 1), "cpu")
    assert out == {"accuracy": 0.5, "balanced_accuracy": 0.5, "n": 2}
    empty = evaluate(_Lookup(2), iter([]), "cpu")
    assert empty["n"] == 0 and math.isnan(empty["accuracy"])
