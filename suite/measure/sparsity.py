"""Sparsity, measured: the share of zeros in the weights each layer really computes with.

Measured by the suite on the reloaded model, for every row, whatever produced it (a pruner, a
pipeline, a plugin, a quantizer after a pruner), so no method reports its own sparsity to the
leaderboard. The layers counted are the weight layers, those a method may prune: `nn.Linear` and
`nn.Conv1d/2d/3d`, and every compressed twin that says which dense weight it computes with by
defining `slim_weight() -> Tensor` (a sparse layer its expanded weight, a quantized layer its
dequantized weight). A layer inside a twin is part of the twin and is not counted again. A
factorised layer (low rank) is its factor layers.

The same effective weights give the FLOP counter its `effective` figure (`flops.py`): a zero
multiplies nothing, whatever format stores it.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def effective_weight(module: nn.Module) -> torch.Tensor | None:
    """The dense weight `module` computes with, or None when it is not a weight layer."""
    declared = getattr(module, "slim_weight", None)
    if callable(declared):
        with torch.no_grad():
            return declared()
    if isinstance(module, WEIGHT_LAYERS) and isinstance(getattr(module, "weight", None), torch.Tensor):
        return module.weight
    return None


def is_weight_layer(module: nn.Module) -> bool:
    return callable(getattr(module, "slim_weight", None)) or (
        isinstance(module, WEIGHT_LAYERS) and isinstance(getattr(module, "weight", None), torch.Tensor))


def weight_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every weight layer, outermost first; a twin's own sub-layers are skipped."""
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if is_weight_layer(module):
            if callable(getattr(module, "slim_weight", None)):
                inside.append(name)
            yield name, module


def zeros(weight: torch.Tensor) -> int:
    """Exact zeros of a weight of any dtype (float8 has no CPU count kernel: counted as float)."""
    w = weight.detach()
    try:
        return int(w.numel() - torch.count_nonzero(w))
    except (RuntimeError, NotImplementedError):
        return int(w.numel() - torch.count_nonzero(w.float()))


def density(module: nn.Module) -> float | None:
    """Nonzero share of `module`'s effective weight (None: not a weight layer)."""
    w = effective_weight(module)
    if w is None or w.numel() == 0:
        return None
    return 1.0 - zeros(w) / w.numel()


def measure_sparsity(model: nn.Module) -> dict:
    """{"sparsity": overall share of zeros, "zeros", "weights", "layers": {name: share}}."""
    layers: dict[str, float] = {}
    total = zero = 0
    for name, module in weight_layers(model):
        w = effective_weight(module)
        if w is None or w.numel() == 0:
            continue
        z = zeros(w)
        layers[name or "(model)"] = round(z / w.numel(), 6)
        total += w.numel()
        zero += z
    return {"sparsity": zero / total if total else 0.0, "zeros": zero, "weights": total, "layers": layers}
