"""Which kernel each weight layer runs on each timed device: the record's `execution_paths`.

A compressed layer states its path (`slim_path(device, dtype)`, decided by the same tests as its
forward); a plain nn.Linear / nn.Conv2d runs the stock dense kernel of its dtype. A latency whose
model has any layer on a path labelled `reference: ...` measures slimbench's missing kernel, not
the method: the summary and the leaderboard mark such rows.
"""
from __future__ import annotations

import torch
from torch import nn

from slimbench.methods.common.layers import dense_path


def execution_paths(model: nn.Module, device: str, dtype: torch.dtype) -> dict[str, str]:
    """{layer name: path} for every compressed layer and every plain weight layer of `model`."""
    out: dict[str, str] = {}
    owned: list[str] = []  # layers whose children (factor convs, inner Linears) belong to them
    for name, mod in model.named_modules():
        if any(name.startswith(p + ".") for p in owned):
            continue
        path = getattr(mod, "slim_path", None)
        if callable(path):
            out[name] = path(device, dtype)
            owned.append(name)
        elif isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            out[name] = dense_path(device, mod.weight.dtype)
    return out

