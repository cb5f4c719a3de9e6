"""Pipelines (`a+b+c`): specs and their errors, the method contract on both conformance tasks, and one
run through the harness with its stages recorded."""
from __future__ import annotations

import pytest

from slimbench.core.config import ConfigError
from slimbench.methods import create_method
from slimbench.suite.cli import main
from slimbench.suite.tracking import Tracker


def test_spec_round_trip_label_and_shares():
    p = create_method("prune.magnitude:sparsity=0.7+quant.minmax:bits=8")
    assert p.name == "pipeline" and p.family == "pipeline"
    assert p.config.stages == ("prune.magnitude:sparsity=0.7", "quant.minmax:bits=8")
    assert p.config.shares == (0.5, 0.5) and p.config.versions == (1, 1)
    assert p.label == "prune.magnitude sparsity=0.7 + quant.minmax bits=8"
    assert create_method(p.spec).config == p.config
    q = create_method('distill.kd[0.6] + prune.structured:ratio=0.25 [0.3] + quant.w8a8 [0.1]')
    assert q.config.shares == (0.6, 0.3, 0.1) and len(q.stages) == 3
    assert q.default_seeds == 3  # the distillation stage's
    glob = create_method("prune.magnitude+quant.minmax:skip=*.fc[12]")  # brackets in a setting are not a share
    assert glob.config.stages[1] == "quant.minmax:skip=*.fc[12]" and glob.config.shares == (0.5, 0.5)
    three = create_method("prune.magnitude+prune.structured+quant.minmax")
    assert three.config.shares == (0.333333,) * 3 and not three.simulated


@pytest.mark.parametrize("spec,message", [
    ("quant.minmax+prune.magnitude", "stage 2 (prune.magnitude) cannot follow quant.minmax"),
    ("lowrank.svd+quant.minmax", "cannot follow lowrank.svd"),
    ("prune.magnitude[0.7]+quant.minmax[0.5]", "add up to 1.2"),
    ("prune.magnitude[0.5]+quant.minmax", "to every stage"),
    ("prune.magnitude[half]+quant.minmax[0.1]", "budget share 'half'"),
    ("prune.magnitude+", "empty stage"),
    ("prune.magnitude+quant.minmax:bits=5", "bits=5"),
    ("prune.magnitude+quant.nope", "unknown method 'quant.nope'"),
])
def test_bad_pipelines_are_rejected_before_any_work(spec, message):
    with pytest.raises((ConfigError, Exception), match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        create_method(spec)


@pytest.mark.parametrize("task_name", ["toy-cnn", "toy-transformer"])
@pytest.mark.parametrize("spec", ["distill.kd+prune.magnitude+quant.minmax:bits=8",
                                  "prune.structured[0.3]+quant.w8a8[0.7]"])
def test_pipeline_contract(spec, task_name, conformance_tasks, method_contract, tmp_path):
    """The artifact is the last stage's and reloads alone onto a freshly built model (a narrower
    student, pruned channels), deterministic, every step of every stage within its share."""
    task, baseline = conformance_tasks[task_name]
    method_contract(lambda: create_method(spec), task, baseline, tmp_path)


def test_pipeline_run_records_its_stages(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = "prune.magnitude:sparsity=0.7,schedule=gradual[0.4]+quant.qat:bits=8[0.6]"
    assert main(["run", "--tasks", "toy", "--profile", "quick", "--method", spec, "--results-dir", str(tmp_path),
                 "--no-progress"]) == 0
    recs = {r["method"]["name"]: r for r in Tracker(None, "slimbench", tmp_path).read_records()}
    run, base = recs["pipeline"], recs["baseline"]
    assert run["status"] == "FINISHED" and run["method"]["family"] == "pipeline"
    assert run["method"]["label"] == "prune.magnitude schedule=gradual sparsity=0.7 + quant.qat bits=8"
    stages = run["method_metrics"]["stages"]
    assert [s["method"] for s in stages] == ["prune.magnitude:schedule=gradual,sparsity=0.7", "quant.qat:bits=8"]
    total = run["budget"]["finetune"]["budget"]
    for s, share in zip(stages, (0.4, 0.6)):
        assert s["share"] == share and s["budget"]["finetune"]["budget"] == int(total * share)
        assert 0 < s["budget"]["finetune"]["used"] <= s["budget"]["finetune"]["budget"]
        assert 0 <= s["val_accuracy"] <= 1
    assert run["budget"]["finetune"]["used"] == sum(s["budget"]["finetune"]["used"] for s in stages)
    assert stages[0]["metrics"]["sparsity"] >= 0.69  # the pruning stage's own figures
    assert run["metrics"]["size_bytes"] < base["metrics"]["size_bytes"] / 3  # 8-bit packed, last stage's format
    assert "+" in run["command"] and "--method" in run["command"]


def test_stage_ledgers_book_on_the_run_ledger_and_refuse_cleanly():
    from slimbench.core.recipe import BudgetExceeded, StepLedger

    run = StepLedger("pipeline", {"finetune": 10, "search": 4})
    stage = run.child("prune.magnitude", {"finetune": 4, "search": 0})
    stage.charge(3)
    stage.count_candidates(2)
    assert (stage.used["finetune"], run.used["finetune"], run.candidates) == (3, 3, 2)
    with pytest.raises(BudgetExceeded, match="only 1 of 4 are left"):
        stage.charge(2)
    assert (stage.used["finetune"], run.used["finetune"]) == (3, 3)  # a refusal books nothing anywhere
    with pytest.raises(BudgetExceeded):
        stage.charge(1, "search")
    assert run.used.get("search", 0) == 0
