"""Architecture search: spaces validated before work, strategies that learn and repeat themselves
under a seed, constraints that keep candidates untrained, resumed searches, and the tabular
benchmark."""
from __future__ import annotations

from pathlib import Path

import json

import pytest

from slimbench.core.config import ConfigError
from slimbench.methods import Unsupported, create_method
from slimbench.methods.nas.space import SpaceFile, load_space, resolve
from slimbench.methods.nas.strategies import STRATEGIES, Evolution, Outcome, Reinforce, make_strategy, search


def _nas(spec: str, space: dict | None = None):
    if space is None:
        return create_method(spec)
    name, _, rest = spec.partition(":")
    fields = {"space": space, **({} if not rest else dict(kv.split("=") for kv in rest.split(",")))}
    return create_method(f"{name}:{json.dumps(fields)}")


@pytest.mark.parametrize("space, match", [
    ({"dims": {}}, "declares no dims"),
    ({"dims": {"layers.0": [1]}}, "one architecture only"),
    ({"dims": {"layers.0": [1, 1]}}, "repeats a choice"),
    ({"dims": {"layers.0": [1, "half"]}}, "positive number or a relative"),
    ({"dims": {"layers.0": [1, -2]}}, "positive number"),
    ({"dims": {"layers": [1, 2], "layers.0": [1, 2]}}, "contradict"),
    ({"dims": {"stem_width": [8, 16]}, "fixed": {"stem_width": 8}}, "both fixed and searched"),
    ({"dims": {"hidden_size": [32, 48], "num_attention_heads": [2, 5]}}, "contradictory"),
    ({"dims": {"layers.0": [1, 2]}, "colour": "red"}, "unknown key"),
    ({"dims": {"layers.0": [1, 2]}, "model": "mlp"}, "choose resnet, transformer, any"),
    ({"dims": {"layers.0": [1, 1.5]}}, "must be an integer"),
])
def test_bad_spaces_fail_when_the_config_is_built(space, match):
    with pytest.raises(ConfigError, match=match):
        _nas("nas.random", space)


@pytest.mark.parametrize("spec, match", [
    ("nas.random:space=no-such-space", "neither a file nor a built-in space"),
    ("nas.evolution:population=4,sample=5", "sample=5 must be <= population=4"),
    ("nas.bo:sampler=grid", "sampler"),
    ("nas.random:max_latency_ms=0", "max_latency_ms"),
    ("nas.rl:decay=1", "decay"),
])
def test_bad_settings_fail_before_work(spec, match):
    with pytest.raises(ConfigError, match=match):
        create_method(spec)


def test_space_file_and_relative_choices(tmp_path):
    path = tmp_path / "my_space.yaml"
    path.write_text("dims:\n  channels.1: [0.5x, 1x, 2x]\n  layers.3: [1, 3]\nfixed: {stem_width: 8}\n")
    method = create_method(f"nas.random:space={path}")
    spec = load_space(method.config.space)
    space = resolve(spec, {"channels": [32, 48, 48, 96], "layers": [1, 1, 1, 1]})
    assert space.choices == ((24, 48, 96), (1, 3))  # 48 * 0.5 = 24 (multiple of 8)
    assert space.overrides((2, 1)) == {"stem_width": 8, "channels": [32, 96, 48, 96], "layers": [1, 1, 1, 3]}
    with pytest.raises(ConfigError, match="names element 1 of 'channels'"):
        resolve(spec, {"channels": [32], "layers": [1, 1, 1, 1]})
    heads = SpaceFile("h", {"hidden_size": ("0.75x", "1x"), "num_attention_heads": (3, 4)})
    with pytest.raises(ConfigError, match="contradictory"):
        resolve(heads, {"hidden_size": 32, "num_attention_heads": 2})  # 24 / 4 and 32 / 3


def _table(cards, seed=0):
    """A synthetic table: accuracy rises with every dim's index, with a seeded bump."""
    import numpy as np
    rng = np.random.default_rng(seed)
    bump = {}

    def evaluate(arch, _i):
        bump.setdefault(arch, float(rng.normal(0, 0.01)))
        return Outcome(0.5 + 0.05 * sum(arch) / len(arch) + bump[arch], latency_ms=1.0 + sum(arch))
    return evaluate


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_fixed_seed_gives_the_same_trace(name):
    cards = (3, 3, 2, 4)
    runs = [[s.arch for s in search(make_strategy(name, cards, 7), _table(cards), 12)] for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) >= 12
    other = [s.arch for s in search(make_strategy(name, cards, 8), _table(cards), 12)]
    assert other != runs[0]


def test_evolution_mutates_one_dim_and_ages_out():
    evo = Evolution((3, 3, 2), seed=0, population=3, sample=2)
    for arch in [(0, 0, 0), (1, 1, 1), (2, 2, 0)]:
        evo.tell(arch, 0.1 * sum(arch))
    child = evo.ask()
    parents = [(1, 1, 1), (2, 2, 0), (0, 0, 0)]
    assert min(sum(a != b for a, b in zip(child, p)) for p in parents) == 1
    evo.tell((0, 1, 0), 0.0)
    assert len(evo.members) == 3 and (0, 0, 0) not in [m[0] for m in evo.members]  # the oldest died


def test_reinforce_moves_towards_the_rewarded_choice():
    rl = Reinforce((2, 2), seed=0, lr=0.01)  # rewards 40 pp apart: a small step suffices
    for _ in range(60):
        arch = rl.ask()
        rl.tell(arch, 0.9 if arch[0] == 1 else 0.5)
    assert rl.probs()[0][1] > 0.9
    assert abs(rl.probs()[1][0] - 0.5) < 0.35  # the unrewarded dim stays near uniform


def test_search_stops_when_the_space_is_exhausted():
    steps = search(make_strategy("random", (2, 2), 0), _table((2, 2)), 10)
    assert len({s.arch for s in steps}) == 4 and sum(not s.repeat for s in steps) == 4


def test_budgeted_caps():
    from slimbench.methods.nas.strategies import budgeted
    assert budgeted("evolution", 4, population=8, sample=3) == {"population": 2, "sample": 2}
    assert budgeted("tpe", 16, startup=4) == {"startup": 4} and budgeted("nsga2", 4) == {"startup": 2}
    assert budgeted("rl", 4, lr=0.1) == {"lr": 0.1}


def test_search_stops_when_nothing_is_feasible():
    steps = search(make_strategy("tpe", (10, 10), 0), lambda a, i: Outcome(None, 9.0, trained=False), 3,
                   max_proposals=20)
    assert len(steps) == 20 and not any(s.outcome.trained for s in steps)


def test_pareto_front_is_the_suites_one():
    from slimbench.core.pareto import pareto_front
    from slimbench.leaderboard import stats
    assert stats.pareto_front is pareto_front
    assert pareto_front([(0.9, 5.0), (0.8, 1.0), (0.85, 6.0), (0.9, 4.0)]) == [False, True, False, True]


def _ctx(conformance_tasks, name, **kw):
    from slimbench.suite.context import make_context
    task, baseline = conformance_tasks[name]
    return make_context(task, baseline=baseline, seed=0, owner="nas", **kw), baseline


@pytest.mark.parametrize("task_name", ["toy-cnn", "toy-transformer"])
def test_live_search_same_seed_same_trace(conformance_tasks, task_name):
    method = create_method("nas.evolution:population=2,sample=1")
    traces = []
    for _ in range(2):
        ctx, baseline = _ctx(conformance_tasks, task_name)
        out = method.compress(baseline, ctx)
        traces.append([(t["arch"], t["val_accuracy"], t["best"], t["steps"]) for t in out.metrics["trace"]])
        assert ctx.ledger.summary()["search"] == {"used": 4, "budget": 4, "candidates": 2}
    assert traces[0] == traces[1]
    m = out.metrics
    assert m["candidates_trained"] == 2 and m["control"]["method"] == "nas.random"
    assert m["best_mflops"] <= m["constraints"]["mflops"] == pytest.approx(0.8 * m["parent_cost"]["mflops"], abs=1e-3)
    assert json.loads(m["trace"][0]["arch"]) and m["pareto"] and "seconds_per_candidate" in m
    rebuilt = conformance_tasks[task_name][0].build_model(**out.build_overrides)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in out.model.state_dict().items()}


def test_constraints(conformance_tasks):
    ctx, baseline = _ctx(conformance_tasks, "toy-cnn")
    with pytest.raises(Unsupported, match="even the smallest"):
        create_method("nas.random:max_params=10").compress(baseline, ctx)
    assert ctx.ledger.summary()["search"]["used"] == 0  # refused before any training

    from slimbench.methods.nas.procedure import space_for
    space = space_for(create_method("nas.random").config, baseline, "nas.random")
    sizes = sorted(sum(p.numel() for p in conformance_tasks["toy-cnn"][0].build_model(
        **space.overrides(a)).parameters()) for a in [space.smallest(), tuple(len(c) - 1 for c in space.choices)])
    limit = (sizes[0] + sizes[1]) // 2
    ctx, baseline = _ctx(conformance_tasks, "toy-cnn")
    out = create_method(f"nas.random:max_params={limit}").compress(baseline, ctx)
    assert all(t["params"] <= limit for t in out.metrics["trace"] if t["feasible"])
    assert all(t["val_accuracy"] is None for t in out.metrics["trace"] if not t["feasible"])
    assert ctx.ledger.summary()["search"]["used"] == 2 * out.metrics["candidates_trained"]
    assert sum(p.numel() for p in out.model.parameters()) <= limit


def test_budget_smaller_than_one_candidate_is_unsupported(conformance_tasks):
    import dataclasses

    from slimbench.core.recipe import SearchBudget
    task, _ = conformance_tasks["toy-cnn"]
    spec = dataclasses.replace(task.spec(), search=SearchBudget(0, 5))
    assert "no search budget" in create_method("nas.random").supports(spec, "cpu")


def test_killed_search_resumes_from_its_candidates(conformance_tasks):
    logged = []
    ctx, baseline = _ctx(conformance_tasks, "toy-transformer",
                         candidate_logger=lambda name, params, metrics: logged.append(
                             {"params": {k: str(v) for k, v in params.items()}, "metrics": metrics}))
    first = create_method("nas.rl").compress(baseline, ctx)

    class NoTraining:
        def fit(self, model, batches, recipe, seed, **kw):
            assert kw.get("account") != "search", "a resumed candidate was trained again"
            from slimbench.suite.trainer import Trainer
            return Trainer().fit(model, batches, recipe, seed, **kw)

    ctx2, _ = _ctx(conformance_tasks, "toy-transformer", prior_candidates=lambda: logged)
    ctx2.trainer._trainer = NoTraining()
    second = create_method("nas.rl").compress(baseline, ctx2)
    assert second.metrics["resumed"] == 2 and second.metrics["best_arch"] == first.metrics["best_arch"]
    assert ctx2.ledger.summary()["search"]["used"] == 4  # the killed run's steps still count

    from slimbench.core.recipe import SearchBudget
    ctx3, _ = _ctx(conformance_tasks, "toy-transformer", prior_candidates=lambda: logged,
                   search=SearchBudget(2, 3))
    assert create_method("nas.rl").compress(baseline, ctx3).metrics["resumed"] == 0  # another proxy budget


def test_nas_table_builds_resumes_and_compares(conformance_tasks, tmp_path, capsys):
    from slimbench.suite.cli import main

    args = ["nas-table", "--task", "toy-cnn", "--profile", "quick", "--results-dir", str(tmp_path),
            "--seeds", "3", "--candidates", "2", "--no-progress"]
    assert main(args) == 0
    table = json.loads((tmp_path / "nas-table" / "toy-cnn-quick-resnet-table-quick.json").read_text())
    assert len(table["entries"]) == 4 and table["cost_table"]["device"] and table["provenance"]["git_commit"]
    for e in table["entries"].values():
        assert 0 <= e["val_accuracy"] <= 1 and 0 <= e["test_accuracy"] <= 1 and e["latency_ms"] > 0
    report = json.loads((tmp_path / "benchmarks" / "nas-table-toy-cnn-quick-resnet-table-quick-c2.json").read_text())
    assert set(report["strategies"]) == set(STRATEGIES) and report["seeds"] == 3
    assert (tmp_path / "benchmarks" / "nas-table-toy-cnn-quick-resnet-table-quick-c2.svg").read_text().startswith("<svg")
    capsys.readouterr()
    assert main(args + ["--no-compare"]) == 0
    assert "0 to evaluate" in capsys.readouterr().out  # a built table is read, not rebuilt
    bad = [a if a != "3" else "0" for a in args]
    assert main(bad) == 2


def test_leaderboard_draws_traces_and_compares_with_random(tmp_path):
    from slimbench.leaderboard.rows import aggregate
    from slimbench.leaderboard.site import build_site
    import importlib.util

    path = Path(__file__).parent / "fixtures" / "leaderboard" / "synthetic.py"  # tests/ is not a package
    spec = importlib.util.spec_from_file_location("leaderboard_fixture_synthetic", path)
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    fake_run = fixture.fake_run

    shared = {"space": "auto", "latency_batch": 1}
    runs = [fake_run(method="baseline", accuracy=0.9)]
    for name, acc in (("nas.random", 0.80), ("nas.evolution", 0.85)):
        run = fake_run(method=name, family="nas", config=shared, accuracy=acc, size_bytes=1e6)
        run["method_metrics"] = {"trace": [{"steps": 10, "best": 0.5}, {"steps": 20, "best": round(acc - 0.05, 2)},
                                           {"steps": 30, "best": None}]}
        if name != "nas.random":
            run["method_metrics"]["control"] = {"method": "nas.random", "config": shared}
        runs.append(run)
    (sec,) = aggregate(runs).sections
    assert sec.traces == {"nas.random space=auto latency_batch=1 · seed 0": [(10.0, 0.5), (20.0, 0.75)],
                          "nas.evolution space=auto latency_batch=1 · seed 0": [(10.0, 0.5), (20.0, 0.8)]}
    evo = next(r for r in sec.real if r.method == "nas.evolution")
    assert evo.note.startswith("beat") and "the control nas.random" in evo.note and "+5.00 pp" in evo.note
    assert len([r for r in sec.real if r.family == "nas"]) == 2 * len({r.batch_size for r in sec.real})
    html = (build_site(runs, tmp_path)).read_text()
    assert html.count('class="plot trace"') == 1 and 'data-series="2"' in html


def test_harness_records_unsupported_and_resumes_a_killed_search(tmp_path, monkeypatch, conformance_tasks):
    from slimbench.methods.nas.procedure import LiveSearch
    from slimbench.suite.cli import main
    from slimbench.suite.tracking import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = ["run", "--tasks", "toy-cnn", "--profile", "quick", "--results-dir", str(tmp_path), "--no-progress"]
    assert main(base + ["--method", "nas.random:max_latency_ms=0.000001"]) == 0
    tracker = Tracker(None, "slimbench", tmp_path)
    rec = next(r for r in tracker.read_records() if r["method"]["name"] == "nas.random")
    assert rec["status"] == "UNSUPPORTED" and "even the smallest" in rec["error"]
    assert rec["budget"]["search"]["used"] == 0

    real = LiveSearch.__call__
    calls = []

    def dies_on_the_second(self, arch, index):
        calls.append(index)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, arch, index)

    monkeypatch.setattr(LiveSearch, "__call__", dies_on_the_second)
    assert main(base + ["--method", "nas.evolution:max_mflops_ratio=none"]) == 130
    monkeypatch.setattr(LiveSearch, "__call__", real)
    assert main(base + ["--method", "nas.evolution:max_mflops_ratio=none"]) == 0
    recs = {r["method"]["name"]: r for r in tracker.read_records()}
    done = recs["nas.evolution"]
    assert done["status"] == "FINISHED" and done["method_metrics"]["resumed"] == 1
    assert done["budget"]["search"]["used"] == 4 and len(done["method_metrics"]["trace"]) == 2
    assert set(recs) == {"baseline", "nas.random", "nas.evolution"}  # candidates are never rows
    nested = [r for r in tracker.runs() if r.data.tags.get("slimbench.kind") == "candidate"]
    assert len(nested) == 3  # one from the killed run, two from the resumed one
    (table,) = (tmp_path / "cache" / "costs").glob("*.json")
    data = json.loads(table.read_text())
    assert data["provenance"]["threads"] >= 1 and all(e["latency_ms"] > 0 for e in data["entries"].values())


def test_cli_start_up_stays_light_with_nas_table():
    import subprocess
    import sys
    code = ("import sys; from slimbench.suite.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('numpy', 'yaml', 'torch', 'optuna', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
