"""Size definitions: on-disk bytes and resident tensor bytes."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from slimbench.suite.measure.size import artifact_size, tensor_bytes


def test_artifact_size_sums_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 123)
    (tmp_path / "b").write_bytes(b"")
    (tmp_path / "c").write_bytes(b"y" * 7)
    assert artifact_size([tmp_path / "a", tmp_path / "b", str(tmp_path / "c")]) == 130


def test_tensor_bytes_params_buffers_and_ties() -> None:
    model = nn.Linear(10, 5)  # 50 + 5 fp32
    model.register_buffer("codes", torch.zeros(7, dtype=torch.int8))
    assert tensor_bytes(model) == 55 * 4 + 7
    tied = nn.Module()
    tied.a = nn.Linear(4, 4, bias=False)
    tied.b = nn.Linear(4, 4, bias=False)
    tied.b.weight = tied.a.weight
    assert tensor_bytes(tied) == 16 * 4
    assert tensor_bytes(nn.Linear(4, 4).half()) == 20 * 2


def test_tensor_bytes_counts_a_sparse_buffer_by_its_parts() -> None:
    """A CSR weight a layer keeps for its kernel is resident too: its row pointers, column indices
    and values count (a CSR tensor has no single storage to read)."""
    m = nn.Module()
    crow = torch.tensor([0, 3, 3, 3, 3, 3, 3, 3, 3])  # 8 rows, 3 nonzeros in row 0
    w = torch.sparse_csr_tensor(crow, torch.tensor([0, 1, 2]), torch.ones(3), (8, 16), check_invariants=True)
    m.register_buffer("w", w, persistent=False)
    assert tensor_bytes(m) == 9 * 8 + 3 * 8 + 3 * 4  # int64 crow [9], int64 col [3], fp32 values [3]


def test_tensor_bytes_counts_a_prepacked_weight_once_it_exists() -> None:
    """A W8A8 layer on a CPU with exact oneDNN int8 keeps its weight prepacked after the first
    forward: that copy is resident too."""
    from slimbench.methods.quant.w8a8 import PREPACKED_MIN_ROWS, W8A8Linear, cpu_prepacked_int8

    layer = W8A8Linear.from_linear(nn.Linear(64, 32), None)
    before = tensor_bytes(layer)
    layer(torch.randn(3, 64))  # few rows: torch._int_mm, nothing packed
    assert tensor_bytes(layer) == before
    layer(torch.randn(PREPACKED_MIN_ROWS, 64))
    assert tensor_bytes(layer) == before + (64 * 32 if cpu_prepacked_int8() else 0)
