"""Model size: the single definition of "how big is this model".

Two numbers, kept apart because they answer different questions:
- `artifact_size`: bytes on disk of the saved artifact (what you ship/download);
- `tensor_bytes`: bytes the model's parameters and buffers occupy in memory (what stays
  resident while it runs; a method that unpacks weights at load time shows up here).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch
from torch import nn


def artifact_size(paths: Iterable[str | os.PathLike[str]]) -> int:
    """Exact sum of the on-disk sizes (bytes) of the artifact's files."""
    return sum(os.path.getsize(Path(p)) for p in paths)


def tensor_bytes(model: nn.Module) -> int:
    """In-memory bytes of all parameters and buffers, each distinct storage counted once.

    Tied weights (one tensor reachable under two names) count once; a view counts the
    whole storage it lives in, since that storage is what is resident. A sparse tensor (a CSR
    weight a layer keeps for its kernel) counts its index and value tensors; tensors a layer holds
    outside its buffers (`slim_resident()`: a prepacked weight) count too.
    """
    seen: set[tuple[str, int]] = set()
    total = 0
    extra = [t for m in model.modules() if callable(getattr(m, "slim_resident", None)) for t in m.slim_resident()]
    tensors = []
    for t in [*model.parameters(), *model.buffers(), *extra]:
        if t.layout == torch.sparse_csr:
            tensors += [t.crow_indices(), t.col_indices(), t.values()]
        else:
            tensors.append(t)
    for t in tensors:
        if t.layout == torch._mkldnn:  # an opaque (prepacked) tensor: no storage to read, its own size
            total += t.nbytes
            continue
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if storage.data_ptr() != 0 and key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total
