"""`slimbench verify`: a bundle's artifacts re-measured here against what its records claim, and the
verdicts on the leaderboard. A cheater who edits a run.json and rewrites the manifest to match gets
through the bundle reader (the hashes detect damage, not edits) but not through verify."""
from __future__ import annotations

import json
import os
import tarfile

import pytest

from slimbench.leaderboard.bundle import BundleError, extract_artifacts, read_bundle, write_bundle
from slimbench.suite import verdicts
from slimbench.suite.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A results folder with the toy task's baseline and a magnitude-pruned run."""
    results = tmp_path_factory.mktemp("store")
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        assert main(["run", "--tasks", "toy", "--profile", "quick", "--method", "baseline", "--method",
                     "prune.magnitude", "--results-dir", str(results), "--no-progress"]) == 0
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return results


@pytest.fixture(scope="module")
def bundle(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "lab.tar.gz"
    assert main(["export", "--results-dir", str(store), "--out", str(out), "--artifacts"]) == 0
    return out


@pytest.fixture(scope="module")
def clean(bundle, tmp_path_factory):
    """`slimbench verify` of the untouched bundle, latency included: (exit code, record path)."""
    out = tmp_path_factory.mktemp("verified") / "verification.json"
    with pytest.MonkeyPatch.context() as mp:  # an idle machine, whoever else runs here: timings compared
        mp.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
        rc = main(["verify", str(bundle), "--latency", "--latency-tol", "100", "--out", str(out), "--no-progress"])
    return rc, out


def _rewrite(bundle, out, edit, tmp_path):
    """The bundle re-packed as a cheater would: each record through `edit(record) -> [records]`, its
    artifact kept, the manifest's sizes and hashes rewritten to match."""
    src, folders = extract_artifacts(bundle, tmp_path / "x")
    entries = []
    for i, (rec, folder) in enumerate(zip(src.runs, folders)):
        files = {str(f.relative_to(folder)): f for f in folder.rglob("*") if f.is_file()} if folder else {}
        entries += [(f"r{i}-{j}", r, files) for j, r in enumerate(edit(rec))]
    return write_bundle(out, entries, {"experiment": "slimbench"})


def _by_method(doc):
    return {r["method"]: r for r in doc["runs"]}


def test_an_untouched_bundle_verifies(clean, bundle, tmp_path, capsys):
    rc, path = clean
    doc = json.loads(path.read_text())
    assert rc == 0 and doc["format"] == verdicts.FORMAT and doc["machine"]["device_label"].startswith("cpu")
    runs = _by_method(doc)
    assert set(runs) == {"baseline", "prune.magnitude"} and all(r["verdict"] == "verified" for r in runs.values())
    pruned = runs["prune.magnitude"]
    assert pruned["measured"]["size_bytes"] == pruned["claimed"]["size_bytes"] > 0
    assert pruned["measured"]["sparsity"] > 0.1 and pruned["tolerances"]["accuracy"] == pytest.approx(
        1 / pruned["measured"]["eval_examples"])
    # the same machine and threads: latency compared, batch by batch
    assert pruned["latency"] and all(p["compared"] and p["measured_ms"] > 0 for p in pruned["latency"])
    site = tmp_path / "site"
    assert main(["leaderboard", "--from", str(bundle), "--verified", str(path), "--out", str(site)]) == 0
    rows = json.loads((site / "rows.json").read_text())["rows"]
    assert rows and all(r["verification"] == "verified" for r in rows)
    assert "| ✓ |" in (site / "leaderboard.md").read_text()


def test_a_cheated_bundle_is_a_mismatch_with_claimed_and_measured(clean, bundle, tmp_path, capsys):
    def cheat(rec):
        if rec["method"]["name"] == "prune.magnitude":
            rec["metrics"]["accuracy"] = min(1.0, rec["metrics"]["accuracy"] + 0.05)
            rec["metrics"]["size_bytes"] -= 1000
        return [rec]

    cheated = _rewrite(bundle, tmp_path / "cheated.tar.gz", cheat, tmp_path)
    read_bundle(cheated)  # internally consistent: the reader has nothing to object to
    out = tmp_path / "v.json"
    capsys.readouterr()
    assert main(["verify", str(cheated), "--json", "--out", str(out), "--no-progress"]) == 1
    doc = json.loads(capsys.readouterr().out)
    runs = _by_method(doc)
    assert runs["baseline"]["verdict"] == "verified"
    bad = runs["prune.magnitude"]
    assert bad["verdict"] == "mismatch"
    assert bad["claimed"]["size_bytes"] == bad["measured"]["size_bytes"] - 1000
    assert bad["claimed"]["accuracy"] > bad["measured"]["accuracy"]
    assert any(r.startswith("size_bytes: claimed") for r in bad["reasons"])
    assert any(r.startswith("accuracy: claimed") for r in bad["reasons"])

    site = tmp_path / "site"
    assert main(["leaderboard", "--from", str(cheated), "--verified", str(out), "--out", str(site)]) == 0
    rows = json.loads((site / "rows.json").read_text())["rows"]
    marks = {r["method"]: r["verification"] for r in rows}
    assert marks == {"baseline": "verified", "prune.magnitude": "mismatch"}
    assert "| ✗ |" in (site / "leaderboard.md").read_text()
    assert 'class="badge mismatch"' in (site / "index.html").read_text()
    page = (site / next(r for r in rows if r["method"] == "prune.magnitude")["pages"][0]).read_text()
    assert "Mismatch" in page and str(bad["claimed"]["size_bytes"]) in page and str(bad["measured"]["size_bytes"]) in page

    # the untouched bundle's verdicts say nothing about the edited record: unverified, not verified
    assert main(["leaderboard", "--from", str(cheated), "--verified", str(clean[1]), "--out", str(tmp_path / "s2")]) == 0
    rows = json.loads((tmp_path / "s2" / "rows.json").read_text())["rows"]
    assert {r["method"]: r["verification"] for r in rows} == {"baseline": "verified", "prune.magnitude": "unverified"}


def test_runs_that_cannot_be_re_measured_say_why(bundle, store, tmp_path, capsys):
    bare = tmp_path / "bare.tar.gz"
    assert main(["export", "--results-dir", str(store), "--out", str(bare)]) == 0

    def other(rec):
        if rec["method"]["name"] == "baseline":
            return [{**rec, "task": {**rec["task"], "name": "no-such-task"}}]
        return [{**rec, "baseline": {**rec["baseline"], "key": "0" * 16}},
                {**rec, "run_key": "k2", "method": {**rec["method"], "name": "nope.method"}},
                {**rec, "run_key": "k3", "method": {**rec["method"], "version": 99}}]

    moved = _rewrite(bundle, tmp_path / "moved.tar.gz", other, tmp_path)
    capsys.readouterr()
    assert main(["verify", str(bare), str(moved), "--json", "--no-progress"]) == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert len(runs) == 6 and all(r["verdict"] == "cannot verify" for r in runs)
    reasons = [r["reasons"][0] for r in runs]
    assert sum("carries no artifact" in r for r in reasons) == 2
    assert any("task 'no-such-task'" in r and "not available here" in r for r in reasons)
    assert any("the task definition differs" in r and "0000000000000000" in r for r in reasons)
    assert any("method 'nope.method' is not installed here" in r for r in reasons)
    assert any("version 99" in r for r in reasons)


def test_an_artifact_of_another_config_is_a_mismatch(bundle, tmp_path, capsys):
    def claim_more(rec):  # the record claims sparsity 0.9; its artifact was written at 0.5
        if rec["method"]["name"] != "prune.magnitude":
            return []
        return [{**rec, "method": {**rec["method"], "config": {**rec["method"]["config"], "sparsity": 0.9}}}]

    other = _rewrite(bundle, tmp_path / "other.tar.gz", claim_more, tmp_path)
    capsys.readouterr()
    assert main(["verify", str(other), "--json", "--no-progress"]) == 1
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["verdict"] == "mismatch" and "the artifact was written by 'prune.magnitude'" in run["reasons"][0]
    assert "'sparsity': 0.5" in run["reasons"][0] and "'sparsity': 0.9" in run["reasons"][0]


def test_a_damaged_bundle_exits_2_with_the_reason(bundle, tmp_path, capsys):
    with tarfile.open(bundle) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar if m.isfile()]
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(damaged, "w:gz") as tar:
        for m, body in members:
            if m.name.endswith("model.safetensors"):
                body = body[:-1] + bytes([body[-1] ^ 1])  # one flipped bit in transit
            tar.addfile(m, __import__("io").BytesIO(body))
    capsys.readouterr()
    assert main(["verify", str(damaged), str(tmp_path / "nowhere.tar.gz"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "damaged.tar.gz: rejected:" in err and "does not match its SHA-256" in err and "damaged in transit" in err
    assert "nowhere.tar.gz: rejected: no such file" in err


def test_a_bundle_cannot_vouch_for_itself(tmp_path, capsys):
    rec = {"run_key": "k", "status": "FINISHED", "task": {"name": "toy"}, "method": {"name": "baseline"},
           "device": {"type": "cpu"}, "metrics": {"accuracy": 0.9},
           "provenance": {"verification": {"verdict": "verified"}}}
    path = write_bundle(tmp_path / "b.tar.gz", [("r1", rec, {})], {})
    assert "verification" not in read_bundle(path).runs[0]["provenance"]
    assert main(["leaderboard", "--from", str(path), "--out", str(tmp_path / "site")]) == 0
    assert json.loads((tmp_path / "site" / "rows.json").read_text())["rows"][0]["verification"] == "unverified"
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({"runs": []}))
    for bad, why in ((tmp_path / "missing.json", "not a readable JSON file"), (bogus, "not a verification record")):
        assert main(["leaderboard", "--from", str(path), "--verified", str(bad), "--out", str(tmp_path / "s")]) == 2
        assert why in capsys.readouterr().err


def test_extraction_writes_only_checked_files_inside_the_folder(tmp_path):
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    rec = {"run_key": "k", "status": "FINISHED", "task": {"name": "toy"}, "method": {"name": "baseline"},
           "device": {"type": "cpu"}}
    good = write_bundle(tmp_path / "g.tar.gz", [("a", rec, {"sub/model.bin": model}), ("b", rec, {})], {})
    _, folders = extract_artifacts(good, tmp_path / "out")
    assert folders[1] is None and (folders[0] / "sub" / "model.bin").read_bytes() == b"weights"
    assert [p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()] \
        == ["00000/sub/model.bin"]

    with tarfile.open(good) as tar:  # run a's artifact listed under run b: refused before anything is written
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    manifest = json.loads(members["manifest.json"])
    manifest["runs"][1]["artifacts"], manifest["runs"][0]["artifacts"] = manifest["runs"][0]["artifacts"], []
    members["manifest.json"] = json.dumps(manifest).encode()
    moved = tmp_path / "m.tar.gz"
    with tarfile.open(moved, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, __import__("io").BytesIO(body))
    with pytest.raises(BundleError, match="is not a file under its run's folder"):
        extract_artifacts(moved, tmp_path / "out2")
    assert not any((tmp_path / "out2").rglob("*")) if (tmp_path / "out2").exists() else True


def test_tolerances_and_comparison():
    cpu, gpu = {"device": {"type": "cpu"}}, {"device": {"type": "cuda"}}
    assert verdicts.accuracy_tolerance(cpu, 250, None) == pytest.approx(0.004)
    assert verdicts.accuracy_tolerance(gpu, 10_000, None) == pytest.approx(0.002)
    assert verdicts.accuracy_tolerance(gpu, 10_000, 0.0) == 0.0
    assert verdicts.balanced_tolerance(0.01, [50, 50]) == pytest.approx(0.01)  # balanced classes: the same
    assert verdicts.balanced_tolerance(0.01, [90, 10]) == pytest.approx(0.05)  # one flip in the small class weighs 5x
    claimed = {"size_bytes": 100, "sparsity": 0.5, "accuracy": 0.9, "flops_dense": 7}
    measured = {"size_bytes": 100.0, "sparsity": 0.5000009, "accuracy": 0.897, "flops_dense": 8, "bops": 3}
    reasons = verdicts.compare(claimed, measured, {"sparsity": 1e-6, "accuracy": 0.004})
    assert reasons == ["flops_dense: claimed 7, measured 8 (must match exactly)"]  # bops not claimed: not compared
    assert verdicts.compare({"accuracy": "0.99"}, {"accuracy": 0.9}, {"accuracy": 0.1})
    rows, late = verdicts.compare_latency([{"device": "cpu", "batch_size": 1, "median_ms": 1.0},
                                           {"device": "cuda", "batch_size": 1, "median_ms": 0.1}],
                                          [{"device": "cpu", "batch_size": 1, "median_ms": 2.0}], True, 0.5)
    assert rows == [{"batch_size": 1, "claimed_ms": 1.0, "measured_ms": 2.0, "compared": True}] and len(late) == 1
    assert verdicts.compare_latency([{"device": "cpu", "batch_size": 1, "median_ms": 1.0}],
                                    [{"device": "cpu", "batch_size": 1, "median_ms": 2.0}], False, 0.5)[1] == []


def test_a_pipeline_is_rebuilt_from_its_config(tmp_path):
    """Pipelines are not registered by name: verify builds them from their recorded stages."""
    from slimbench.core.config import to_dict
    from slimbench.methods import create_method
    from slimbench.suite.verify import VerifyOptions, _Cannot, _Checker
    from slimbench.tasks import get_task

    config = to_dict(create_method("prune.magnitude+quant.minmax:bits=8").config)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "model.json").write_text(json.dumps({"method": {"name": "pipeline", "config": config}}))
    record = {"task": {"name": "toy", "profile": "quick"}, "method": {"name": "pipeline", "version": 1, "config": config},
              "baseline": {"key": get_task("toy", "quick").config.baseline_key()}}
    _, method = _Checker(None, VerifyOptions()).resolve(record, tmp_path)
    assert method.name == "pipeline" and [s.name for s in method.stages] == ["prune.magnitude", "quant.minmax"]
    record["method"]["config"] = {**config, "stages": ["prune.magnitude", "nope.method"]}
    with pytest.raises(_Cannot, match="not valid here.*nope.method"):
        _Checker(None, VerifyOptions()).resolve(record, tmp_path)


def test_timings_on_a_busy_or_other_machine_are_shown_not_compared(monkeypatch):
    from slimbench.suite.provenance import capability, cpu_model
    from slimbench.suite.verify import VerifyOptions, _Checker

    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    checker = _Checker(None, VerifyOptions(latency=True))
    here = {"type": "cpu", "name": cpu_model(), "capability": capability("cpu"), "threads": checker.threads}
    assert checker.comparable({"device": here}) == (True, "")
    assert checker.comparable({"device": {**here, "name": "Other CPU 9000"}})[0] is False
    assert "cores" in checker.comparable({"device": {**here, "threads": checker.threads + 1}})[1]
    monkeypatch.setattr(os, "getloadavg", lambda: (checker.threads + 1.0, 0.0, 0.0))
    busy = _Checker(None, VerifyOptions(latency=True)).comparable({"device": here})
    assert busy[0] is False and "busy" in busy[1]
