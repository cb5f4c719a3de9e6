"""The harness end to end on the toy task, checked through MLflow: runs, failures, skips, errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimbench.suite.cli import main
from slimbench.suite.tracking import Tracker


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["run", "--tasks", "toy", "--profile", "quick", "--results-dir", str(tmp_path),
                 "--no-progress", *extra])


def _records(tmp_path: Path) -> list[dict]:
    tracker = Tracker(None, "slimbench", tmp_path)
    return [(run, tracker.run_json(run.info.run_id)) for run in tracker.runs()]


def test_run_tracks_measurements_in_mlflow(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _run(tmp_path, "--method", "baseline", "--method", "torch.dynamic_int8") == 0
    runs = _records(tmp_path)
    assert len(runs) == 2
    tracker = Tracker(None, "slimbench", tmp_path)
    for run, rec in runs:
        assert run.info.status == "FINISHED" and rec["status"] == "FINISHED"
        m = run.data.metrics
        for key in ("accuracy", "balanced_accuracy", "size_bytes", "flops_dense", "flops_effective",
                    "params_total", "latency_cpu_bs1_median_ms", "latency_cpu_bs8_p90_ms",
                    "memory_cpu_bs8_peak_bytes"):
            assert key in m, key
        assert 0.25 < m["accuracy"] <= 1.0 and m["flops_dense"] > 0
        # the reported size is the bytes of the logged artifact
        local = Path(tracker.client.download_artifacts(run.info.run_id, "artifact", str(tmp_path / "dl" / run.info.run_id)))
        assert m["size_bytes"] == sum(f.stat().st_size for f in local.iterdir())
        assert run.data.params["task"] == "toy" and run.data.tags["slimbench.git_commit"]
        assert rec["provenance"]["mlflow_run_id"] == run.info.run_id and rec["command"].startswith("slimbench run")
        assert {e["dtype"] for e in rec["latency"] + rec["memory"]} == {"float32"}  # what was timed
    by_method = {rec["method"]["name"]: rec for _, rec in runs}
    assert by_method["torch.dynamic_int8"]["metrics"]["size_bytes"] < by_method["baseline"]["metrics"]["size_bytes"] / 2
    # each weight layer's kernel where latency was timed: the stock int8 GEMM, or dense fp32 (baseline)
    paths = {m: set(rec["execution_paths"]["cpu"].values()) for m, rec in by_method.items()}
    assert paths["baseline"] == {"dense float32 (oneDNN)"}
    assert any("quantized::linear_dynamic" in p for p in paths["torch.dynamic_int8"])
    out = capsys.readouterr().out
    assert "torch.dynamic_int8" in out and "baseline" in out  # the summary table
    assert "leaderboard: 2 runs" in out and (tmp_path / "leaderboard" / "index.html").exists()  # built at the end

    # a re-run skips completed (task, config, seed); --force runs again
    assert _run(tmp_path, "--method", "baseline") == 0
    assert len(_records(tmp_path)) == 2
    assert _run(tmp_path, "--method", "baseline", "--force") == 0
    assert len(_records(tmp_path)) == 3

    capsys.readouterr()
    assert main(["results", "--results-dir", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"baseline", "torch.dynamic_int8"}
    int8 = next(r for r in rows if r["method"] == "torch.dynamic_int8")
    assert int8["compression"] > 2 and int8["delta_accuracy"] is not None


def test_failing_method_is_recorded_and_others_continue(tmp_path, monkeypatch):
    from slimbench.methods.reference.half import Half

    def boom(self, model, ctx):
        raise RuntimeError("kaboom in compress")

    monkeypatch.setattr(Half, "compress", boom)
    assert _run(tmp_path, "--method", "half", "--method", "baseline") == 1
    runs = {rec["method"]["name"]: (run, rec) for run, rec in _records(tmp_path)}
    run, rec = runs["half"]
    assert run.info.status == "FAILED" and rec["status"] == "FAILED" and "kaboom" in rec["error"]
    tracker = Tracker(None, "slimbench", tmp_path)
    tb = Path(tracker.client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path / "tb")))
    assert "kaboom in compress" in tb.read_text()
    assert runs["baseline"][0].info.status == "FINISHED"
    # the failed run is not "completed": a re-run retries it
    monkeypatch.undo()
    assert _run(tmp_path, "--method", "half") == 0


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "nosuch"], "unknown task 'nosuch'"),
    (["--tasks", "toy", "--method", "baseline:bits=4"], "baseline has no config field 'bits'"),
    (["--tasks", "toy", "--method", "torch.dynamic_int9"], "Did you mean 'torch.dynamic_int8'"),
    (["--tasks", "toy", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_fails_before_any_work(tmp_path, capsys, argv, message):
    assert main(["run", "--results-dir", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() or not _records(tmp_path)


def test_method_config_file_is_run_and_recorded_verbatim(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tmp_path / "int8.yaml"
    cfg.write_text("# keep the last layer in fp32\nmethod: torch.dynamic_int8\nskip: [net.4]\n")
    assert _run(tmp_path, "--method-config", str(cfg)) == 0
    tracker = Tracker(None, "slimbench", tmp_path)
    rec = next(r for r in tracker.read_records() if r["method"]["name"] == "torch.dynamic_int8")
    assert rec["method"]["config"]["skip"] == ["net.4"] and rec["method"]["config_files"] == {str(cfg): cfg.read_text()}
    assert "--method torch.dynamic_int8:skip=net.4 " in rec["command"]  # reproducible without the file
    run_id = rec["provenance"]["mlflow_run_id"]
    saved = Path(tracker.client.download_artifacts(run_id, "method_config", str(tmp_path / "mc")))
    assert [p.read_text() for p in saved.iterdir()] == [cfg.read_text()]
    assert rec["budget"] == {"finetune": {"used": 0, "budget": 5}, "search": {"used": 0, "budget": 12, "candidates": 0}}
    assert rec["device"]["capability"]["isa"] and rec["metrics"]["bops"] > 0


def test_what_is_measured_is_what_the_bytes_hold(tmp_path, monkeypatch):
    """A method that stores nothing and restores its weights from module state, one that reads them
    back from a file it wrote elsewhere, and one that peeks at the test split: the first is measured
    by its bytes (an untrained model, flagged), the other two fail."""
    from slimbench.methods import METHODS

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    import broken_plugins

    METHODS.names()
    for cls in (broken_plugins.BadSelfContained, broken_plugins.BadSelfContainedFile, broken_plugins.BadTestSplit):
        monkeypatch.setitem(METHODS._entries, cls.name, cls)
        monkeypatch.setitem(METHODS._origin, cls.name, f"broken_plugins:{cls.__name__}")
    assert _run(tmp_path, "--method", "baseline", "--method", "broken.self_contained", "--method",
                "broken.self_contained_file", "--method", "broken.test_split") == 1
    recs = {r["method"]["name"]: r for _, r in _records(tmp_path)}
    base, hollow = recs["baseline"], recs["broken.self_contained"]
    assert hollow["status"] == "FINISHED" and hollow["method_metrics"]["params_total"] == 6532  # its claim, apart
    assert any("the artifact stores (0, 0)" in w for w in hollow["warnings"])  # it stores no weight
    assert hollow["metrics"]["accuracy"] < base["metrics"]["accuracy"] - 0.2  # an untrained model: what it stored
    assert any("computes other outputs" in w for w in hollow["warnings"])
    stash = recs["broken.self_contained_file"]
    assert stash["status"] == "FAILED" and "NotSelfContained" in stash["error"] and "slimbench-broken-stash" in stash["error"]
    peek = recs["broken.test_split"]
    assert peek["status"] == "FAILED" and "read the test split" in peek["error"] and "went on after the error" in peek["error"]
