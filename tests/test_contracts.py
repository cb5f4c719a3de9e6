"""The contracts the method families are written against, each checked by a test that could fail.

- The context gives no path to the test split, and the teacher is a private frozen copy.
- A distilled student, a search child and a channel-pruned model (test doubles of the families
  to come) reload from their artifact bytes alone and give the same outputs.
- Budgets are enforced and recorded; search candidates become nested runs that never show up as rows.
- Every run has its baseline row; the run key changes with a method's code version.
"""
from __future__ import annotations

import copy
import gc
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimbench.methods import Compressed, Method, MethodConfig, create_method
from slimbench.suite.context import make_context


# ---------------------------------------------------------------- the context

def _reachable(root, limit: int = 200_000) -> list:
    """Objects reachable from `root` by references, not descending into modules, classes or
    module globals (everything is reachable through those)."""
    module_dicts = {id(m.__dict__) for m in list(__import__("sys").modules.values()) if m is not None}
    seen, out, todo = set(), [], [root]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (types.ModuleType, type)) or id(obj) in module_dicts:
            continue
        seen.add(id(obj))
        out.append(obj)
        todo.extend(gc.get_referents(obj))
    return out


def _leaks(reachable: list, task) -> list[str]:
    """What, among `reachable`, leads to the task's test split."""
    from slimbench.tasks.base import TaskConfig

    data = task.data()
    found = []
    for o in reachable:
        if o is data.test or o is task or o is data:
            found.append(type(o).__name__)
        elif isinstance(o, TaskConfig) and o.data:
            found.append("TaskConfig with its data loader")
    return found


def test_context_has_no_path_to_the_test_split(toy_task, toy_baseline):
    ctx = make_context(toy_task, baseline=toy_baseline)
    data = toy_task.data()
    assert _leaks(_reachable(types.SimpleNamespace(t=toy_task)), toy_task)  # the walk does find a real path
    reachable = _reachable(ctx)
    assert not _leaks(reachable, toy_task), "the test split is reachable from the context"
    assert all(o is not toy_baseline for o in reachable)  # only a frozen copy
    # what it does give works: train, validation and calibration batches, fresh models
    assert next(ctx.train_batches())[0]["features"].shape[0] == toy_task.config.finetune.batch_size
    assert sum(len(y) for _, y in ctx.val_batches()) == len(data.val)
    assert sum(len(y) for _, y in ctx.calibration()) == toy_task.config.calibration_size
    assert ctx.example_inputs(3)["features"].shape == (3, 32)
    assert type(ctx.build_model()) is type(toy_baseline)
    assert not hasattr(ctx.task, "data") and not hasattr(ctx.task, "test_batches")


def test_harness_context_has_no_path_to_the_test_split(tmp_path, monkeypatch, hook_method):
    """The same, for the context the harness really builds (candidate logger and trainer included)."""
    from slimbench.tasks.base import Task, TaskData

    seen = {}

    def peek(self, model, ctx):
        from slimbench.tasks.base import TaskConfig
        reachable = _reachable(ctx)
        seen["task"] = any(isinstance(o, Task) for o in reachable)
        seen["data"] = any(isinstance(o, TaskData) and o.test is not None for o in reachable)
        seen["loader"] = any(isinstance(o, TaskConfig) and o.data for o in reachable)
        return Compressed(model)

    monkeypatch.setattr(hook_method, "on_compress", peek)
    assert _run(tmp_path, "--method", "test.hook") == 0
    assert seen == {"task": False, "data": False, "loader": False}


def test_validation_split_is_disjoint_and_documented(toy_task):
    data = toy_task.data()
    assert (len(data.train), len(data.val), len(data.test)) == (1024, 128, 256)
    assert data.info["sizes"] == {"train": 1024, "val": 128, "test": 256}
    train = {tuple(x.tolist()) for x, _ in (data.train[i] for i in range(len(data.train)))}
    assert not any(tuple(data.val[i][0].tolist()) in train for i in range(len(data.val)))


def test_val_accuracy_scores_validation_like_the_suite(toy_task, toy_baseline):
    from slimbench.methods.base import CompressionContext
    from slimbench.suite.measure.accuracy import evaluate

    ctx = make_context(toy_task, baseline=toy_baseline)
    batches = list(ctx.val_batches())
    expected = evaluate(toy_baseline, batches, ctx.device)["accuracy"]
    assert 0.5 < ctx.val_accuracy(toy_baseline) == pytest.approx(expected)
    one = batches[:1]
    assert ctx.val_accuracy(toy_baseline, one) == pytest.approx(evaluate(toy_baseline, one, "cpu")["accuracy"])
    bare = CompressionContext(**{f: getattr(ctx, f) for f in ("task", "trainer", "device", "seed", "ledger",
                                                              "calibration", "train_stream", "val", "example")})
    with pytest.raises(RuntimeError, match="no evaluator"):
        bare.val_accuracy(toy_baseline)


def test_teacher_is_a_frozen_private_copy(toy_task, toy_baseline):
    before = copy.deepcopy(toy_baseline.state_dict())
    ctx = make_context(toy_task, baseline=toy_baseline)
    teacher = ctx.teacher
    assert teacher is ctx.teacher and teacher is not toy_baseline  # one private copy per context
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert next(teacher.parameters()).device == ctx.device
    with torch.no_grad():  # a careless method
        for p in teacher.parameters():
            p.zero_()
    teacher.train()
    assert all(torch.equal(v, toy_baseline.state_dict()[k]) for k, v in before.items())
    fresh = make_context(toy_task, baseline=toy_baseline).teacher
    assert not fresh.training and any(float(p.abs().sum()) > 0 for p in fresh.parameters())
    with pytest.raises(RuntimeError, match="no teacher"):
        make_context(toy_task).teacher


# ---------------------------------------------------------------- family test doubles

class Student(Method):
    """A distillation double: a narrower/shallower student built by the task's builder, trained
    with a KD loss against the frozen teacher for the whole fine-tuning budget."""

    family = "distillation"
    name = "test.student"
    config_cls = MethodConfig
    overrides = {"toy-cnn": {"channels": (16, 24, 24, 48)}, "toy-transformer": {"num_hidden_layers": 1}}

    def compress(self, model, ctx):
        over = self.overrides[ctx.task.name]
        student = ctx.build_model(**over)
        teacher = ctx.teacher

        def kd(m, inputs, logits, labels, t=2.0):
            with torch.no_grad():
                target = teacher(**inputs)
            soft = F.kl_div(F.log_softmax(logits / t, -1), F.softmax(target / t, -1), reduction="batchmean")
            return 0.5 * t * t * soft + 0.5 * F.cross_entropy(logits, labels)

        ctx.trainer.fit(student, ctx.train_batches(), ctx.recipe(), ctx.seed, loss=kd)
        with torch.no_grad():
            val = [(student(**x).argmax(-1) == y).float().mean() for x, y in ctx.val_batches()]
        return Compressed(student.eval(), build_overrides=over, metrics={"val_accuracy": float(torch.stack(val).mean())})


class Child(Method):
    """A search double: two candidate depths scored on validation after proxy training on the
    search budget, each logged as a candidate; the best is kept with the teacher's weights where
    shapes allow (layer dropping)."""

    family = "nas"
    name = "test.child"
    config_cls = MethodConfig
    space = {"toy-cnn": [{"channels": (16, 24, 24, 48)}, {"channels": (32, 48, 48, 96)}],
             "toy-transformer": [{"num_hidden_layers": 1}, {"num_hidden_layers": 2}]}

    def compress(self, model, ctx):
        scores = []
        for i, over in enumerate(self.space[ctx.task.name][:ctx.search.candidates]):
            child = ctx.build_model(**over)
            own = child.state_dict()
            child.load_state_dict({k: v for k, v in ctx.teacher.state_dict().items()
                                   if k in own and own[k].shape == v.shape}, strict=False)
            ctx.trainer.fit(child, ctx.train_batches(), ctx.recipe(ctx.search.proxy_steps), ctx.seed,
                            account="search")
            with torch.no_grad():
                acc = float(torch.cat([(child(**x).argmax(-1) == y).float() for x, y in ctx.val_batches()]).mean())
            ctx.log_candidate(f"candidate-{i}", {k: str(v) for k, v in over.items()}, {"val_accuracy": acc})
            scores.append((acc, -i, over, child))
        acc, _, over, best = max(scores, key=lambda s: s[:2])
        return Compressed(best.eval(), build_overrides=over, metrics={"candidates": len(scores), "best_val": acc})


class ChannelPrune(Method):
    """A structured-pruning double: drops half the channels inside the first residual block
    (conv1 -> bn1 -> conv2, the residual sum untouched) or half the FFN neurons of every BERT
    layer; restore is the default one, which resizes layers to the saved tensors."""

    family = "pruning"
    name = "test.channel_prune"
    config_cls = MethodConfig

    def compress(self, model, ctx):
        with torch.no_grad():
            if ctx.task.kind == "vision":
                block = model.net.layer1[0]
                keep = block.conv1.weight.abs().sum((1, 2, 3)).argsort(descending=True)[:16].sort().values
                _slice_conv(block.conv1, keep, out=True)
                _slice_bn(block.bn1, keep)
                _slice_conv(block.conv2, keep, out=False)
            else:
                for layer in model.model.bert.encoder.layer:
                    up, down = layer.intermediate.dense, layer.output.dense
                    keep = up.weight.abs().sum(1).argsort(descending=True)[:32].sort().values
                    up.weight = nn.Parameter(up.weight[keep].clone())
                    up.bias = nn.Parameter(up.bias[keep].clone())
                    up.out_features = len(keep)
                    down.weight = nn.Parameter(down.weight[:, keep].clone())
                    down.in_features = len(keep)
        return model


def _slice_conv(conv, keep, out):
    conv.weight = nn.Parameter((conv.weight[keep] if out else conv.weight[:, keep]).contiguous().clone())
    if out:
        conv.out_channels = len(keep)
    else:
        conv.in_channels = len(keep)


def _slice_bn(bn, keep):
    bn.weight, bn.bias = nn.Parameter(bn.weight[keep].clone()), nn.Parameter(bn.bias[keep].clone())
    bn.running_mean, bn.running_var = bn.running_mean[keep].clone(), bn.running_var[keep].clone()
    bn.num_features = len(keep)


@pytest.mark.parametrize("double", [Student, Child, ChannelPrune])
@pytest.mark.parametrize("task_name", ["toy-cnn", "toy-transformer"])
def test_changed_architectures_reload_from_bytes(double, task_name, conformance_tasks, method_contract, tmp_path):
    task, baseline = conformance_tasks[task_name]
    reloaded = method_contract(double, task, baseline, tmp_path)
    n_params = sum(p.numel() for p in reloaded.parameters())
    assert n_params < sum(p.numel() for p in baseline.parameters()) or double is Child


def test_search_budget_and_candidates(conformance_tasks):
    task, baseline = conformance_tasks["toy-transformer"]
    logged = []
    ctx = make_context(task, baseline=baseline, candidate_logger=lambda *a: logged.append(a) or "id")
    result = Child().compress(copy.deepcopy(baseline), ctx)
    assert [name for name, _, _ in logged] == ["candidate-0", "candidate-1"]
    assert ctx.ledger.summary()["search"] == {"used": 4, "budget": task.config.search.steps, "candidates": 2}
    assert result.metrics["candidates"] == 2


# ---------------------------------------------------------------- through the harness

def _run(tmp_path: Path, *extra: str) -> int:
    from slimbench.suite.cli import main
    return main(["run", "--tasks", "toy", "--profile", "quick", "--results-dir", str(tmp_path), "--no-progress",
                 *extra])


def test_method_alone_gets_its_baseline_row_and_deltas(tmp_path, monkeypatch, capsys):
    import json

    from slimbench.suite.cli import main
    from slimbench.suite.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _run(tmp_path, "--method", "torch.dynamic_int8", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    int8 = next(r for r in rows if r["method"] == "torch.dynamic_int8")
    assert int8["delta_accuracy"] is not None and int8["speedup_bs1"] is not None and int8["compression"] > 1
    tracker = Tracker(None, "slimbench", tmp_path)
    assert sorted(r["method"]["name"] for r in tracker.read_records()) == ["baseline", "torch.dynamic_int8"]
    # a second method finds the baseline row in the store and does not measure it again
    assert _run(tmp_path, "--method", "half", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert next(r for r in rows if r["method"] == "half")["delta_accuracy"] is not None
    assert len(tracker.read_records()) == 3
    assert main(["results", "--results-dir", str(tmp_path), "--method", "half", "--json"]) == 0


def test_budget_overrun_fails_the_run_with_a_clear_error(tmp_path, monkeypatch):
    from slimbench.methods.reference.half import Half
    from slimbench.suite.tracking import Tracker

    def greedy(self, model, ctx):
        ctx.trainer.fit(model, ctx.train_batches(), ctx.recipe(ctx.budget_steps + 1), ctx.seed)
        return model

    monkeypatch.setattr(Half, "compress", greedy)
    assert _run(tmp_path, "--method", "half") == 1
    rec = next(r for r in Tracker(None, "slimbench", tmp_path).read_records() if r["method"]["name"] == "half")
    assert rec["status"] == "FAILED" and "BudgetExceeded" in rec["error"] and "only 5 of 5" in rec["error"]
    assert rec["budget"]["finetune"] == {"used": 0, "budget": 5}


def test_candidates_are_nested_runs_never_rows(tmp_path, monkeypatch, hook_method):
    from slimbench.leaderboard.rows import aggregate
    from slimbench.suite.tracking import Tracker

    def search(self, model, ctx):
        for i in range(2):
            ctx.log_candidate(f"c{i}", {"depth": i}, {"val_accuracy": 0.5 + i / 10})
        return Compressed(model, metrics={"candidates": 2})

    monkeypatch.setattr(hook_method, "on_compress", search)
    assert _run(tmp_path, "--method", "test.hook") == 0
    tracker = Tracker(None, "slimbench", tmp_path)
    runs = tracker.runs()
    parent = next(r for r in runs if r.data.tags.get("slimbench.method") == "test.hook"
                  and r.data.tags.get("slimbench.kind") == "run")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    records = tracker.read_records()
    assert len(records) == 2  # baseline + half; candidates are not runs of their own
    hook = next(r for r in records if r["method"]["name"] == "test.hook")
    assert hook["method_metrics"] == {"candidates": 2} and hook["budget"]["search"]["candidates"] == 2
    assert parent.data.metrics["method.candidates"] == 2 and parent.data.metrics["search_candidates"] == 2
    board = aggregate(records)
    assert not board.failed() and {r.method for r in board.rows()} == {"baseline", "test.hook"}


def test_run_key_includes_method_version(toy_task):
    from slimbench.suite.runner import run_key

    method = create_method("torch.dynamic_int8")
    key = run_key(toy_task, method, 0, "cpu (x)")
    bumped = copy.copy(method)
    bumped.version = 2  # what a method's class says after its algorithm changed
    assert run_key(toy_task, bumped, 0, "cpu (x)") != key
    assert run_key(toy_task, method, 0, "cpu (y)") != key  # and with the device's capabilities
