"""The embedded default set (`suite/default.yaml`): valid, complete, and what `slimbench run` runs."""
from __future__ import annotations

import json

import pytest

from slimbench.core.config import ConfigError
from slimbench.core.registry import UnknownNameError
from slimbench.methods import create_method
from slimbench.suite import defaults
from slimbench.suite.cli import main
from slimbench.suite.runner import plan
from slimbench.tasks import list_tasks

FAMILIES = {"quantization", "pruning", "distillation", "low-rank", "nas"}


def test_every_default_spec_is_a_valid_method_config():
    defaults.validate()  # raises on an unknown method, key or value


def test_the_default_names_only_known_tasks_and_every_family_on_the_cheap_task():
    table = defaults.entries()
    assert {e.task for e in table} - {defaults.OTHER} <= set(list_tasks())
    cheap = [e for e in table if e.task == "fashion-mnist"]
    assert {e.family for e in cheap} >= FAMILIES
    for family in FAMILIES - {"low-rank"}:  # every family but low-rank has a named control
        assert {e.role for e in cheap if e.family == family} == {"main", "control"}, family
    for e in table:  # an entry's family is the family of the method it names
        assert create_method(e.spec).family in (e.family, "reference"), e


def test_the_cheap_task_sweeps_operating_points():
    specs = defaults.specs_for("fashion-mnist")
    for name in ("prune.magnitude", "prune.random", "quant.gptq", "quant.minmax", "lowrank.tucker"):
        configs = {repr(create_method(s).config) for s in specs if s.split(":")[0] == name}
        assert len(configs) >= 3, name


def test_a_task_not_named_runs_the_other_tasks_entry():
    assert defaults.specs_for("my-own-task") == [e.spec for e in defaults.entries() if e.task == defaults.OTHER]


@pytest.mark.parametrize("raw, needle", [
    ({"t": {"pruning": {"main": ["prune.random"]}}}, "'other tasks' entry"),
    ({"other tasks": {"pruning": {"mian": ["prune.random"]}}}, "unknown role(s) ['mian']"),
    ({"other tasks": {"pruning": {"main": "prune.random"}}}, "must be a list of method specs"),
    ({"other tasks": {"pruning": []}}, "unknown role"),
    ({"other tasks": []}, "must map family names"),
])
def test_a_malformed_default_file_is_rejected_naming_the_fault(raw, needle):
    with pytest.raises(ConfigError, match=None) as err:
        defaults.parse(raw, "default.yaml")
    assert needle in str(err.value)


def test_validate_fails_on_an_unknown_method_or_key():
    with pytest.raises(UnknownNameError):
        defaults.validate(defaults.parse({"other tasks": {"x": {"main": ["prune.nope"]}}}, "f"))
    with pytest.raises(ConfigError):
        defaults.validate(defaults.parse({"other tasks": {"x": {"main": ["prune.random:spars=0.5"]}}}, "f"))


def test_plan_gives_each_task_its_own_specs_and_distillation_three_seeds():
    per_task = {t: defaults.specs_for(t) for t in ("fashion-mnist", "rotten-tomatoes")}
    specs = plan(list(per_task), per_task, None, "quick")
    fm = [s for s in specs if s.task == "fashion-mnist"]
    assert [s.seed for s in fm if s.method == "distill.kd"] == [0, 1, 2]
    assert {s.method for s in specs if s.task == "rotten-tomatoes"} == set(per_task["rotten-tomatoes"])
    assert len(fm) == len(per_task["fashion-mnist"]) + 2 * 2  # kd and scratch: two extra seeds each


def test_list_default_shows_the_set(capsys):
    assert main(["list", "default", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["default"]
    assert [(e["task"], e["spec"]) for e in shown] == [(e.task, e.spec) for e in defaults.entries()]


def test_run_without_a_method_plans_the_default_and_all_expands_to_every_builtin(monkeypatch, tmp_path):
    """What `slimbench run` would run, captured at `plan` (no work is done)."""
    import slimbench.suite.runner as runner

    seen = []

    def fake_plan(tasks, methods, seeds, profile):
        seen.append(methods)
        raise KeyboardInterrupt  # stop before the harness starts

    monkeypatch.setattr(runner, "plan", fake_plan)
    args = ["run", "--profile", "quick", "--results-dir", str(tmp_path), "--tasks", "fashion-mnist"]
    assert main(args) == 130
    assert seen[-1] == {"fashion-mnist": defaults.specs_for("fashion-mnist")}
    assert main(args + ["--method", "all", "--method", "prune.random:sparsity=0.9"]) == 130
    from slimbench.methods import METHODS
    builtins = [n for n in METHODS.names() if METHODS.origin(n).startswith("slimbench.")]
    assert seen[-1] == builtins + ["prune.random:sparsity=0.9"]
