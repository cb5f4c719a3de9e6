"""Latency modes: `--compile` rows are their own comparison (run key, baseline, section), CUDA-graph
points are their own rows, and CUDA rows show their speedup over `half`."""
from __future__ import annotations

import copy

import pytest

from slimbench.core.record import DeviceRef, LatencyPoint, RunRecord
from slimbench.leaderboard.export import to_markdown
from slimbench.leaderboard.rows import aggregate
from slimbench.suite.cli import main
from slimbench.suite.tracking import Tracker


def _records(tmp_path):
    tracker = Tracker(None, "slimbench", tmp_path)
    return [tracker.run_json(run.info.run_id) for run in tracker.runs()]


def _run(tmp_path, *extra: str) -> int:
    return main(["run", "--tasks", "toy", "--profile", "quick", "--results-dir", str(tmp_path),
                 "--no-progress", *extra])


def test_compiled_rows_have_their_own_key_baseline_and_section(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _run(tmp_path, "--method", "quant.minmax:bits=8") == 0  # eager: baseline row added first
    assert _run(tmp_path, "--method", "quant.minmax:bits=8", "--compile") == 0  # not skipped: another mode
    recs = _records(tmp_path)
    assert sorted((r["method"]["name"], bool(r["device"]["compile"])) for r in recs) == [
        ("baseline", False), ("baseline", True), ("quant.minmax", False), ("quant.minmax", True)]
    assert all(r["status"] == "FINISHED" and r["latency"] for r in recs)
    compiled = [r for r in recs if r["device"]["compile"]]
    assert all(r["device"]["compile"] == "default" and "--compile" in r["command"] for r in compiled)
    assert len({r["run_key"] for r in recs}) == 4
    board = aggregate(recs)
    titles = sorted(s.key[2] for s in board.sections)
    assert len(titles) == 2 and titles[1] == titles[0] + " · torch.compile"
    for sec in board.sections:  # each section's quantized row is compared with its own mode's baseline
        assert {r.method for r in sec.real} == {"baseline", "quant.minmax"}
        q = next(r for r in sec.real if r.method == "quant.minmax")
        assert q.speedup is not None and q.speedup_half is None  # vs half: CUDA rows only
    assert "torch.compile" in to_markdown(board)
    # a re-run of the compiled grid is done already
    assert _run(tmp_path, "--method", "quant.minmax:bits=8", "--compile") == 0
    assert len(_records(tmp_path)) == 4


def test_a_model_torch_compile_cannot_build_keeps_the_run_and_says_why(tmp_path, monkeypatch, toy_task,
                                                                       toy_baseline):
    """The measurement (what the harness's measurement process runs) keeps accuracy and size, and says why
    there is no compiled latency."""
    from slimbench.core.record import MethodRef, TaskRef
    from slimbench.methods import create_method
    from slimbench.suite.artifact import save_artifact
    from slimbench.suite.measure import reloaded
    from slimbench.suite.progress import ProgressConfig

    def broken(model, mode):
        def call(**inputs):
            raise RuntimeError("inductor: no C++ compiler\nmore detail")
        return call if mode else model

    monkeypatch.setattr(reloaded, "compiled", broken)
    method = create_method("baseline")
    save_artifact(copy.deepcopy(toy_baseline), method, tmp_path / "a")
    rec = RunRecord(run_key="k", task=TaskRef(), method=MethodRef(), seed=0, device=DeviceRef())
    reloaded.measure_artifact(toy_task, method, tmp_path / "a", record=rec, device="cpu", latency_devices=("cpu",),
                              threads=1, latency_profile=(1, 2, 0.0, 0.5), progress=ProgressConfig(False),
                              compile_mode="default")
    assert rec.latency == [] and rec.metrics["accuracy"] > 0 and rec.metrics["size_bytes"] > 0
    assert rec.latency_unsupported["cpu"] == ("torch.compile(mode='default') failed: RuntimeError: "
                                              "inductor: no C++ compiler")


def _run_dict(method: str, cuda_eager: float, cuda_graph: float | None, config=None) -> dict:
    rec = RunRecord(run_key=method, task=None, method=None, seed=0, device=DeviceRef(type="cuda", name="GPU"),
                    status="FINISHED").to_dict()
    rec["task"] = {"name": "t", "profile": "quick"}
    rec["method"] = {"name": method, "label": method, "config": config or {}}
    rec["metrics"] = {"accuracy": 0.9, "size_bytes": 100}
    rec["latency"] = [LatencyPoint("cuda", 32, cuda_eager, cuda_eager).__dict__]
    if cuda_graph is not None:
        rec["latency"].append({**LatencyPoint("cuda", 32, cuda_graph, cuda_graph).__dict__, "graph": True})
    return rec


def test_graph_replays_are_rows_of_their_own_and_cuda_rows_show_speedup_over_half():
    runs = [_run_dict("baseline", 4.0, 2.0), _run_dict("half", 2.0, 1.0),
            _run_dict("half", 3.0, 1.5, {"dtype": "bf16"}), _run_dict("quant.w8a8", 4.0, 0.8)]
    runs[2]["run_key"] = "half-bf16"
    (sec,) = aggregate(runs).sections
    rows = {(r.label, r.config.get("dtype"), r.device): r for r in sec.real}
    w8, w8e = rows[("quant.w8a8", None, "cuda-graph")], rows[("quant.w8a8", None, "cuda")]
    assert w8.latency_median_ms == 0.8 and w8.speedup == pytest.approx(2.5)
    assert w8.speedup_half == pytest.approx(1.25)  # against fp16 (the default half), not bf16
    assert w8e.speedup == pytest.approx(1.0) and w8e.speedup_half == pytest.approx(0.5)
    assert rows[("baseline", None, "cuda-graph")].speedup_half == pytest.approx(0.5)


def test_record_round_trip_and_labels():
    dev = DeviceRef(type="cpu", name="X", capability={"isa": "AVX2"})
    assert dev.label == "cpu (X · AVX2)"
    assert DeviceRef(type="cpu", name="X", capability={"isa": "AVX2"}, compile="default").label == \
        "cpu (X · AVX2) · torch.compile"
    rec = RunRecord(run_key="k", task=None, method=None, seed=0, device=dev, status="FINISHED")
    rec.latency = [LatencyPoint("cuda", 1, 1.0, 1.0), LatencyPoint("cuda", 1, 0.5, 0.5, graph=True)]
    back = RunRecord.from_dict(copy.deepcopy(rec.to_dict()) | {"task": {}, "method": {}})
    assert [p.graph for p in back.latency] == [False, True]
    flat = back.flat_metrics()
    assert flat["latency_cuda_bs1_median_ms"] == 1.0 and flat["latency_cuda_graph_bs1_median_ms"] == 0.5
