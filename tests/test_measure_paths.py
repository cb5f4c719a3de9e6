"""Execution paths: each weight layer states the kernel it runs; reference paths are marked where latency is shown."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from slimbench.leaderboard.export import kernels_text
from slimbench.leaderboard.rows import aggregate
from slimbench.methods.common.layers import REFERENCE
from slimbench.methods.lowrank.modules import LowRankLinear
from slimbench.methods.prune.sparse import SparseLinear
from slimbench.methods.quant import w8a8
from slimbench.methods.quant.linear import QuantLinear
from slimbench.suite.measure.paths import execution_paths
from slimbench.suite.summary import rows_from_records


def _fake_run():
    """tests/fixtures/leaderboard/synthetic.py's `fake_run`, by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("paths_fixture_synthetic",
                                                  Path(__file__).parent / "fixtures" / "leaderboard" / "synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.fake_run


fake_run = _fake_run()


def reference_layers(paths: dict[str, str]) -> list[str]:
    return [name for name, path in paths.items() if path.startswith(REFERENCE)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    dense = nn.Linear(16, 16)
    w = dense.weight.detach().clone()
    w[w.abs() < 0.1] = 0
    m = nn.Sequential()
    m.add_module("plain", nn.Linear(16, 16))
    m.add_module("int8", w8a8.W8A8Linear.from_linear(dense, None))
    m.add_module("int4", QuantLinear.from_linear(dense, 4, "group", 8, True))
    m.add_module("sparse", SparseLinear.from_dense(w, None, "bitmask", "dense"))
    m.add_module("csr", SparseLinear.from_dense(w, None, "csr", "csr"))
    m.add_module("lowrank", LowRankLinear.from_factors(torch.randn(16, 4), torch.randn(4, 16), None, "torch"))
    return m


def test_each_layer_names_its_path_and_reference_paths_are_the_missing_kernels(monkeypatch):
    monkeypatch.setattr(w8a8, "cpu_int_mm_exact", lambda: True)
    monkeypatch.setattr(w8a8, "cpu_prepacked_int8", lambda: False)
    paths = execution_paths(_model(), "cpu", torch.float32)
    assert set(paths) == {"plain", "int8", "int4", "sparse", "csr", "lowrank"}  # factor Linears belong to their layer
    assert paths["plain"] == "dense float32 (oneDNN)" and "torch._int_mm" in paths["int8"]
    assert paths["csr"] == "sparse CSR GEMM: torch.sparse.mm" and "two dense GEMMs" in paths["lowrank"]
    assert reference_layers(paths) == ["int4", "sparse"]
    # without an exact int8 GEMM the W8A8 layer falls back to its fp32 reference, and says so
    monkeypatch.setattr(w8a8, "cpu_int_mm_exact", lambda: False)
    assert execution_paths(_model(), "cpu", torch.float32)["int8"].startswith(REFERENCE)
    # an int8 conv runs im2col + the GEMM: slimbench has no int8 conv kernel, so it is a reference path
    monkeypatch.setattr(w8a8, "cpu_int_mm_exact", lambda: True)
    conv = w8a8.W8A8Conv2d.from_conv(nn.Conv2d(4, 8, 3, padding=1), None)
    label = execution_paths(nn.Sequential(conv), "cpu", torch.float32)["0"]
    assert label.startswith(REFERENCE) and "im2col" in label and "torch._int_mm" in label


def test_the_path_is_what_forward_runs_for_the_int8_layer(monkeypatch):
    """The label follows the forward's own dispatch: the int8 op it names is the one called (the
    prepacked oneDNN op, `torch._int_mm`, or neither when no exact int8 GEMM exists)."""
    layer = _model().int8
    called = []
    real_mm, real_packed = torch._int_mm, w8a8.prepacked_int8_acc
    monkeypatch.setattr(torch, "_int_mm", lambda a, b: called.append("_int_mm") or real_mm(a, b))
    monkeypatch.setattr(w8a8, "prepacked_int8_acc", lambda *a: called.append("qlinear") or real_packed(*a))
    for exact, packed in ((True, True), (True, False), (False, False)):
        if packed and not w8a8._probe_prepacked():
            continue  # this CPU or build has no exact oneDNN int8 Linear
        monkeypatch.setattr(w8a8, "cpu_int_mm_exact", lambda exact=exact: exact)
        monkeypatch.setattr(w8a8, "cpu_prepacked_int8", lambda packed=packed: packed)
        label = execution_paths(nn.Sequential(layer), "cpu", torch.float32)["0"]
        for rows in (3, w8a8.PREPACKED_MIN_ROWS):
            called.clear()
            layer(torch.randn(rows, 16))
            big = rows >= w8a8.PREPACKED_MIN_ROWS
            assert ("_int_mm" in called) == ("torch._int_mm" in label and not (big and packed)), (exact, packed, label)
            assert ("qlinear" in called) == ("oneDNN qlinear" in label and big), (exact, packed, label)


def test_bf16_without_cpu_units_is_a_reference_path(monkeypatch):
    m = nn.Sequential(nn.Linear(4, 4)).to(torch.bfloat16)
    assert not reference_layers(execution_paths(m, "cuda", torch.bfloat16))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert reference_layers(execution_paths(m, "cpu", torch.bfloat16)) == ["0"]


def _runs(paths: dict[str, str] | None) -> list[dict]:
    base = fake_run()
    run = fake_run(method="quant.minmax", family="quantization", config={"bits": 4}, latency_ms=5.0)
    if paths is not None:
        run["execution_paths"] = {"cpu": paths}
    return [base, run]


def test_leaderboard_and_summary_mark_rows_timed_on_a_reference_path():
    ref = {"a": f"{REFERENCE}dequantize + dense GEMM every call", "b": "dense float32 (oneDNN)"}
    row = next(r for sec in aggregate(_runs(ref)).sections for r in sec.real if r.method == "quant.minmax")
    assert kernels_text(row) == "reference 1/2"
    summary = next(r for r in rows_from_records(_runs(ref)) if r["method"].startswith("quant.minmax"))
    assert summary["kernels"] == "reference 1/2"
    real = {"a": "int8 GEMM: torch._int_mm (oneDNN, VNNI/AMX)", "b": "dense float32 (oneDNN)"}
    row = next(r for sec in aggregate(_runs(real)).sections for r in sec.real if r.method == "quant.minmax")
    assert kernels_text(row) == "real"
    row = next(r for sec in aggregate(_runs(None)).sections for r in sec.real if r.method == "quant.minmax")
    assert kernels_text(row) == ""  # a record from before paths were recorded: not claimed either way
