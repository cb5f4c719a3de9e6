"""Micro-benchmarks (pytest-benchmark): writing and reading a compressed artifact of MiniLM's size,
and building the leaderboard site from synthetic run records."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """rotten-tomatoes' model (as built) through quant.w8a8, saved once."""
    from slimbench.methods import create_method
    from slimbench.suite.artifact import save_artifact
    from slimbench.suite.context import make_context
    from slimbench.tasks import get_task

    task = get_task("rotten-tomatoes", "quick")
    method = create_method("quant.w8a8")
    result = method.compress(copy.deepcopy(task.build_model().eval()), make_context(seed=0))
    out = tmp_path_factory.mktemp("artifact")
    save_artifact(result, method, out)
    return task, method, result, out


def test_artifact_save(benchmark, artifact, tmp_path):
    from slimbench.suite.artifact import save_artifact

    _, method, result, _ = artifact
    info = benchmark(save_artifact, result, method, tmp_path)
    assert info.size_bytes > 0


def test_artifact_load(benchmark, artifact):
    from slimbench.suite.artifact import load_artifact

    task, method, _, out = artifact
    model = benchmark(load_artifact, out, task.build_model, method)
    assert model is not None


def test_leaderboard_build(benchmark, tmp_path):
    from slimbench.leaderboard.site import build_site

    spec = importlib.util.spec_from_file_location("synthetic_runs", ROOT / "tests" / "fixtures" / "leaderboard"
                                                  / "synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    runs = mod.synthetic_runs(200)
    index = benchmark(build_site, runs, tmp_path / "site", "micro-benchmark")
    assert Path(index).exists()
