"""`slimbench plugin new` writes a package that passes `slimbench plugin check`; the check survives
plugins that hang, crash the interpreter, print garbage or fail to import, and says which check
failed and why."""
from __future__ import annotations

import json
import textwrap

import pytest

from slimbench.suite.cli import main


def _check(capsys, *argv: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["plugin", "check", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path (the checker hands its sys.path to the worker) for throwaway plugins."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _write(where, module: str, body: str) -> str:
    (where / f"{module}.py").write_text(textwrap.dedent(body))
    return module


GOOD = """
    from dataclasses import dataclass
    from slimbench.methods import Method, MethodConfig

    @dataclass(frozen=True)
    class Cfg(MethodConfig):
        pass

    class Good(Method):
        description = "does nothing, correctly"
        config_cls = Cfg

        def compress(self, model, ctx):
            {action}
            return model
"""


def test_new_plugin_passes_the_check_as_written(tmp_path, capsys, monkeypatch):
    assert main(["plugin", "new", "mylab.zeroing", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "slimbench-mylab-zeroing"
    assert {p.name for p in root.iterdir()} == {"pyproject.toml", "README.md", "slimbench_mylab_zeroing", "tests"}
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points."slimbench.methods"]' in pyproject
    assert '"mylab.zeroing" = "slimbench_mylab_zeroing:MylabZeroingMethod"' in pyproject
    assert "plugin\", \"check\"" in (root / "tests" / "test_conformance.py").read_text()
    monkeypatch.syspath_prepend(str(root))
    code, report = _check(capsys, "slimbench_mylab_zeroing:MylabZeroingMethod")
    assert code == 0 and report["passed"], report
    (m,) = report["methods"]
    assert m["status"] == "pass" and m["config"] == "pass" and [t["task"] for t in m["tasks"]] == [
        "toy-cnn", "toy-transformer"]
    assert all(all(t["passed"].values()) and len(t["passed"]) == 7 for t in m["tasks"])
    # the name is checked, and nothing is overwritten
    assert main(["plugin", "new", "mylab.zeroing", "--dir", str(tmp_path)]) == 2
    assert main(["plugin", "new", "My-Q", "--dir", str(tmp_path)]) == 2
    assert main(["plugin", "new", "quant.minmax", "--dir", str(tmp_path)]) == 2
    assert "already a method" in capsys.readouterr().err


def test_an_installed_plugin_is_checked_by_its_method_name(capsys):
    code, report = _check(capsys, "demo.round", "--tasks", "toy-cnn")
    assert code == 0 and report["methods"][0]["status"] == "pass"


def test_a_hanging_plugin_is_killed_and_failed(plugin_dir, capsys):
    mod = _write(plugin_dir, "hangs_at_import", "import time\ntime.sleep(3600)\n")
    code, report = _check(capsys, f"{mod}:Anything", "--tasks", "toy-cnn", "--timeout", "6")
    (m,) = report["methods"]
    assert code == 1 and m["status"] == "fail" and "timed out after 6 s" in m["error"]
    assert m["seconds"] < 30


def test_a_plugin_that_kills_the_interpreter_fails_with_the_cause(plugin_dir, capsys):
    mod = _write(plugin_dir, "aborts", GOOD.format(action="import os; os.abort()"))
    code, report = _check(capsys, f"{mod}:Good", "--tasks", "toy-cnn")
    (m,) = report["methods"]
    assert code == 1 and m["status"] == "fail" and "killed by SIGABRT" in m["error"]
    assert m["config"] == "pass"  # what it reported before dying is kept


def test_garbage_on_stdout_does_not_confuse_the_check(plugin_dir, capsys):
    noisy = "import sys; sys.stdout.write('{\\\\x00 not json \\\\n' * 500); print(b'\\\\xff\\\\xfe')"
    mod = _write(plugin_dir, "noisy", GOOD.format(action=noisy))
    code, report = _check(capsys, f"{mod}:Good", "--tasks", "toy-cnn")
    assert code == 0 and report["methods"][0]["status"] == "pass", report


def test_failures_name_the_check_and_the_reason(plugin_dir, capsys):
    drift = ("import time, torch\n            with torch.no_grad():\n                for p in model.parameters(): "
             "p.add_(time.perf_counter_ns() % 997 * 1e-7)")  # not a function of the seed
    mod = _write(plugin_dir, "random_weights", GOOD.format(action=drift))
    code, report = _check(capsys, f"{mod}:Good", "--tasks", "toy-cnn")
    (m,) = report["methods"]
    (task,) = m["tasks"]
    assert code == 1 and m["status"] == "fail"
    assert task["passed"]["determinism"] is False and "same seed stored different bytes" in task["failure"]
    mod = _write(plugin_dir, "broken_import", "import no_such_module_anywhere\n")
    code, report = _check(capsys, f"{mod}:Good", "--tasks", "toy-cnn")
    assert code == 1 and "No module named 'no_such_module_anywhere'" in report["methods"][0]["error"]


@pytest.mark.parametrize("argv,message", [
    (["nope.nothing"], "no method, slimbench.methods entry point or installed distribution named 'nope.nothing'"),
    (["demo.round", "--tasks", "imagenet"], "unknown task(s) 'imagenet'; choose from toy-cnn, toy-transformer"),
    (["demo.round", "--timeout", "0"], "--timeout 0.0 must be > 0"),
    (["mlflow"], "the distribution 'mlflow' declares no 'slimbench.methods' entry point"),
])
def test_bad_targets_fail_before_any_work(capsys, argv, message):
    assert main(["plugin", "check", *argv]) == 2
    assert message in capsys.readouterr().err


def test_human_report_says_pass_or_fail(capsys):
    assert main(["plugin", "check", "demo.round", "--tasks", "toy-transformer"]) == 0
    out = capsys.readouterr().out
    assert "demo.round: PASS" in out and "toy-transformer: supports ok" in out and "1 of 1 method(s) passed" in out
