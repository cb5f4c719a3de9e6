"""Every conformance check can fail: a plugin broken in exactly one way (tests/plugins/broken_plugins.py)
fails exactly that check, after passing every check before it, and `plugin check` names it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimbench.suite.cli import main
from slimbench.suite.conformance import CHECKS, run_checks

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def broken(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    import broken_plugins
    return broken_plugins


@pytest.mark.parametrize("check", CHECKS)
def test_each_check_fails_on_the_plugin_built_to_break_it(check, broken, conformance_tasks, measure_worker, tmp_path):
    task, baseline = conformance_tasks["toy-cnn"]
    report = run_checks(broken.BROKEN[check], task, baseline, tmp_path, measure_worker)
    assert report.failure is not None and report.failure.startswith(f"{check}:"), report.failure
    assert report.passed[check] is False
    assert [c for c in CHECKS[:CHECKS.index(check)] if not report.passed.get(c)] == []  # all before it held


def test_the_well_behaved_plugins_pass_every_check(broken, conformance_tasks, measure_worker, tmp_path):
    """The control: the same tasks and checks pass a plain method (so each failure above is the plugin's)."""
    task, baseline = conformance_tasks["toy-cnn"]
    report = run_checks(broken.Control, task, baseline, tmp_path, measure_worker)
    assert report.failure is None and report.passed == {c: True for c in CHECKS}


def test_a_restore_reading_a_file_written_during_the_run_is_not_self_contained(broken, conformance_tasks,
                                                                                measure_worker, tmp_path):
    task, baseline = conformance_tasks["toy-cnn"]
    report = run_checks(broken.BadSelfContainedFile, task, baseline, tmp_path, measure_worker)
    assert report.passed.get("round trip") and report.passed["self-contained"] is False  # in-process it "works"
    assert "slimbench-broken-stash" in report.failure and "not part of the artifact" in report.failure


def _check(capsys, *argv: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["plugin", "check", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_plugin_check_names_the_failed_check(broken, capsys):
    code, report = _check(capsys, "broken_plugins:BadSelfContained", "--tasks", "toy-cnn")
    (m,) = report["methods"]
    assert code == 1 and m["status"] == "fail" and not report["passed"]
    (t,) = m["tasks"]
    assert t["passed"]["self-contained"] is False and t["failure"].startswith("self-contained:")
    code, report = _check(capsys, "broken_plugins:BadConfig", "--tasks", "toy-cnn")
    assert code == 1 and report["methods"][0]["config"] == "the method needs a one-line `description`"


def test_plugin_check_fails_when_no_check_ran(broken, capsys):
    code, report = _check(capsys, "broken_plugins:DeclinesEverything")
    assert code == 3 and not report["passed"] and not report["checked"]
    assert {t["unsupported"] for t in report["methods"][0]["tasks"]} == {
        "plugin is unsupported on the CPU for toy-cnn: this plugin runs nowhere",
        "plugin is unsupported on the CPU for toy-transformer: this plugin runs nowhere"}
    capsys.readouterr()
    assert main(["plugin", "check", "broken_plugins:DeclinesEverything", "--tasks", "toy-cnn"]) == 3
    assert "NO CHECK RAN" in capsys.readouterr().out
