"""Shared fixtures: the synthetic test tasks registered for tests, a trained toy baseline."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))  # fixture builders importable by name (`import standard_tasks as fx`)


def _register_toy() -> None:
    """The synthetic test tasks: `toy` (MLP) here, and the conformance suite's `toy-cnn` (timm
    ResNet) and `toy-transformer` (BERT), which ship with slimbench for `slimbench plugin check`."""
    from slimbench.suite.conformance import register_tasks
    from slimbench.tasks import TASKS
    if "toy" not in TASKS:
        TASKS.register("toy")(str(FIXTURES / "toy.yaml"))
    register_tasks()


_register_toy()


@pytest.fixture
def toy_task():
    from slimbench.tasks import get_task
    return get_task("toy", "default")


@pytest.fixture(scope="session")
def toy_baseline():
    """A trained toy baseline (session-wide; tests must deep-copy before changing it)."""
    from slimbench.suite.trainer import Trainer
    from slimbench.tasks import get_task

    task = get_task("toy", "default")
    model = task.build_model()
    Trainer().fit(model, task.train_stream(task.config.train.batch_size, 0), task.config.train, 0)
    return model.eval()


def _triton_interprets() -> bool:
    """Whether this process's triton was first imported with TRITON_INTERPRET=1. Triton decorates
    its own tl.* helpers at that first import, so a later setting gives kernels that fail inside
    the interpreter; the kernel test files set the variable before importing anything."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction)


@pytest.fixture(scope="module")
def interpreted_kernels():
    """`load(package, names, probe) -> {name: module}`: kernel modules (re)imported so that their
    kernels are interpreter functions (`probe`, "module.kernel", names one of them). Skips the
    test when triton was imported without the interpreter here; `interpreter_rerun` then checks
    the same file in a fresh process."""
    import importlib

    if not _triton_interprets():
        pytest.skip("triton was imported without TRITON_INTERPRET in this process; the file's subprocess "
                    "test runs these")
    from triton.runtime.interpreter import InterpretedFunction

    def load(package: str, names: list[str], probe: str) -> dict:
        mods = {n: importlib.import_module(f"{package}.{n}") for n in names}
        module, kernel = probe.split(".")
        if not isinstance(getattr(mods[module], kernel), InterpretedFunction):  # imported before the env was set
            mods = {n: importlib.reload(mods[n]) for n in names}
        return mods
    return load


@pytest.fixture
def interpreter_rerun(request):
    """`run() -> CompletedProcess`: the calling test file rerun by pytest in a fresh Python with
    TRITON_INTERPRET=1. Skips when this process interprets already (the file's tests ran here)."""
    import subprocess
    import sys

    if _triton_interprets():
        pytest.skip("the interpreter is active in this process: the kernel tests run here")
    path = Path(str(request.node.fspath)).resolve()

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", str(path)], cwd=path.parents[1],
                              env=dict(os.environ, TRITON_INTERPRET="1"), capture_output=True, text=True,
                              timeout=600)
    return run


CONFORMANCE_TASKS = ("toy-cnn", "toy-transformer")


@pytest.fixture(scope="session")
def conformance_tasks():
    """The conformance tasks with their trained baselines: {name: (task, baseline)} (trained once)."""
    from slimbench.suite.conformance import trained_baseline
    from slimbench.tasks import get_task

    return {name: (task, trained_baseline(task)) for name in CONFORMANCE_TASKS
            for task in [get_task(name, "default")]}


@pytest.fixture
def guarded_compress():
    """`compress(method, task, baseline, seed=0) -> (Compressed, ctx)` as the harness does, test splits sealed."""
    return compress_guarded


@pytest.fixture
def hook_method(monkeypatch):
    """`Hook` (tests/plugins/harness_doubles.py), registered as `test.hook` for this test only: a method
    whose compress the test sets with `monkeypatch.setattr(hook_method, "on_compress", fn)`."""
    from slimbench.methods import METHODS

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    from harness_doubles import Hook

    METHODS.names()  # load the built-ins first: the entry is added beside them
    monkeypatch.setitem(METHODS._entries, Hook.name, Hook)
    monkeypatch.setitem(METHODS._origin, Hook.name, "harness_doubles:Hook")
    return Hook


@pytest.fixture(scope="session")
def measure_worker():
    """One measurement process for the session (it reloads artifacts where no compress ran)."""
    from slimbench.suite.measure.isolated import MeasureWorker

    with MeasureWorker() as worker:
        yield worker


@pytest.fixture
def method_contract(measure_worker):
    """`check(method_factory, task, baseline, tmp_path) -> reloaded model`: the conformance checks."""
    def check(method_factory, task, baseline, tmp_path):
        return check_method(method_factory, task, baseline, tmp_path, measure_worker)
    return check


def compress_guarded(method, task, baseline, seed=0, trainer=None):
    """Compress as the harness does (one context factory), test splits sealed."""
    from slimbench.suite.conformance import compress_guarded as guarded
    return guarded(method, task, baseline, seed, trainer)


def check_method(method_factory, task, baseline, tmp_path, worker=None):
    """The whole method contract on one task (`slimbench.suite.conformance`, which `slimbench plugin
    check` runs too); returns the model reloaded from the artifact."""
    from slimbench.suite.conformance import Unsupported, check_method as check

    try:
        return check(method_factory, task, baseline, tmp_path, worker)
    except Unsupported as exc:
        pytest.skip(str(exc))


@pytest.fixture
def effective_flops():
    """`expected_effective_flops` (below), for tests that check the FLOP counter's effective figure."""
    return expected_effective_flops


def expected_effective_flops(dense_model, compressed, inputs) -> int:
    """Effective FLOPs as the suite defines them, computed independently: the dense model's per-layer
    FLOPs (torch's own counter) with each weight layer's share scaled by the density of the weight
    the compressed model's same-named layer computes with."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from slimbench.suite.measure.sparsity import density, weight_layers

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        dense_model(**inputs)
    root = type(dense_model).__name__
    per = {k.removeprefix(root).lstrip("."): sum(v.values()) for k, v in counter.get_flop_counts().items()}
    total = per.pop("Global")
    layers = {n: density(m) for n, m in weight_layers(compressed)}
    return total - sum(per[n] for n in layers if n in per) + sum(round(per[n] * d) for n, d in layers.items() if n in per)
