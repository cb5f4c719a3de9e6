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


@pytest.mark.parametrize("spec,stage", [
    ("prune.magnitude+nas.random", "stage 2 (nas.random)"),
    ("prune.structured:ratio=0.5+distill.kd", "stage 2 (distill.kd)"),
    ("distill.kd+prune.magnitude+distill.dkd:temperature=2.5", "stage 3 (distill.dkd:temperature=2.5)"),
    ("prune.magnitude+nas.bo:sampler=nsga2+quant.minmax", "stage 2 (nas.bo:sampler=nsga2)"),
])
def test_a_stage_that_starts_from_the_teacher_must_come_first(spec, stage):
    """Such a stage ignores its input: after another stage it would spend its share and throw the
    earlier result away (prune.structured+distill.kd stored the student, not the pruned model).
    Rejected before any work, naming the stage, why, and what to do instead."""
    with pytest.raises(ConfigError) as err:
        create_method(spec)
    msg = str(err.value)
    assert msg.startswith(f"{stage} starts from the teacher") and "discard the earlier stages' result" in msg
    name = stage.split("(")[1].split(":")[0].rstrip(")")
    assert f"put {name} first" in msg
    assert (f"{name}:student=input" in msg) == name.startswith("distill.")


def test_what_each_stage_starts_from():
    assert create_method("nas.random").starts_from == "teacher"
    assert create_method("distill.kd").starts_from == "teacher"
    assert create_method("distill.kd:student=input").starts_from == "input"
    assert create_method("prune.structured").starts_from == "input"
    p = create_method("nas.random[0.2]+prune.structured[0.3]+distill.feature:student=input[0.5]")  # first, then inputs
    assert [m.starts_from for m in p.stages] == ["teacher", "input", "input"] and p.starts_from == "teacher"
    assert create_method("prune.structured[0.2]+distill.kd:student=input[0.8]").spec == \
        "prune.structured[0.2]+distill.kd:student=input[0.8]"


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("task_name", ["toy-cnn", "toy-transformer"])
def test_prune_then_distill_keeps_the_pruned_model(task_name, conformance_tasks, method_contract, tmp_path):
    """prune.structured + distill.kd:student=input stores the pruned model, distilled: the whole
    contract holds (it reloads alone, pruned heads re-synced by the pruning stage's after_resize), and
    its reloaded parameter count is the structured stage's alone, not a derived student's."""
    task, baseline = conformance_tasks[task_name]
    pruned = method_contract(lambda: create_method("prune.structured:ratio=0.5"), task, baseline, tmp_path / "p")
    spec = "prune.structured:ratio=0.5[0.3]+distill.kd:student=input[0.7]"
    both = method_contract(lambda: create_method(spec), task, baseline, tmp_path / "pd")
    assert _params(both) == _params(pruned) < _params(baseline)
    assert {k: v.shape for k, v in both.state_dict().items()} == {k: v.shape for k, v in pruned.state_dict().items()}
    if task_name == "toy-transformer":  # 2 heads -> 1 in every layer, as the reloaded attention must know
        assert [blk.attention.self.num_attention_heads for blk in both.model.bert.encoder.layer] == [1, 1]


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


def _fashion_mnist_installed() -> bool:
    from pathlib import Path

    from slimbench.tasks.vision import FASHION_MNIST_DIR, _has_idx
    return _has_idx(Path(FASHION_MNIST_DIR))


@pytest.mark.slow
@pytest.mark.skipif(not _fashion_mnist_installed(), reason="no Fashion-MNIST (apt-get install dataset-fashion-mnist)")
def test_prune_then_recover_kd_against_plain_finetuning(tmp_path, monkeypatch):
    """The README's claim on the standard CNN task (quick profile): after pruning half the channels,
    20% of the budget pruning and 80% recovering, both recoveries lift the pruned model far above
    where pruning left it and store the same pruned architecture, but KD (T=4, alpha=0.9) does not
    beat plain fine-tuning on the labels at this budget (16 steps): measured over seeds 0-2, 65.2% vs
    66.8% test accuracy, fine-tuning ahead in every seed. If KD ever wins here, update the README."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    kd = "prune.structured:ratio=0.5[0.2]+distill.kd:student=input[0.8]"
    ft = "prune.structured:ratio=0.5[0.2]+distill.scratch:student=input[0.8]"
    assert main(["run", "--tasks", "fashion-mnist", "--profile", "quick", "--method", kd, "--method", ft,
                 "--seeds", "2", "--results-dir", str(tmp_path), "--no-progress"]) == 0
    records = Tracker(None, "slimbench", tmp_path).read_records()
    base = next(r for r in records if r["method"]["name"] == "baseline")
    runs = {spec: [r for r in records if r["method"]["name"] == "pipeline" and r["method"]["spec"] == spec]
            for spec in (kd, ft)}
    acc = {}
    for spec, rs in runs.items():
        assert len(rs) == 2 and all(r["status"] == "FINISHED" for r in rs)
        for r in rs:
            pruned, recovered = (s["val_accuracy"] for s in r["method_metrics"]["stages"])
            assert recovered > pruned + 0.3  # the second stage trained the pruned model, not a fresh student
            assert r["metrics"]["size_bytes"] < base["metrics"]["size_bytes"] / 3  # the pruned model is stored
        acc[spec] = sum(r["metrics"]["accuracy"] for r in rs) / len(rs)
    sizes = {round(r["metrics"]["size_bytes"], -3) for rs in runs.values() for r in rs}
    assert len(sizes) == 1  # one pruned architecture, whichever loss recovered it
    assert acc[kd] <= acc[ft], f"KD {acc[kd]:.4f} now beats fine-tuning {acc[ft]:.4f}: update the README"
    assert runs[kd][0]["method_metrics"]["control"] == {  # read against the same pipeline, fine-tuned
        "method": "pipeline", "config": {"stages": ["prune.structured:ratio=0.5", "distill.scratch:student=input"],
                                         "shares": [0.2, 0.8]}}
    from slimbench.leaderboard.rows import aggregate
    row = next(r for r in aggregate(records).rows() if r.label.endswith("distill.kd student=input"))
    assert "the control prune.structured ratio=0.5 + distill.scratch student=input" in row.note
