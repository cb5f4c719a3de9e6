"""Shared fixtures: the synthetic test tasks registered for tests, a trained toy baseline."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FIXTURES = Path(__file__).parent / "fixtures"


def _register_toy() -> None:
    """The synthetic test tasks: `toy` (MLP), `toy-cnn` (timm ResNet), `toy-transformer` (BERT)."""
    from slimbench.tasks import TASKS
    for name, file in (("toy", "toy.yaml"), ("toy-cnn", "toy_cnn.yaml"), ("toy-transformer", "toy_transformer.yaml")):
        if name not in TASKS:
            TASKS.register(name)(str(FIXTURES / file))


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
    from slimbench.suite.trainer import Trainer
    from slimbench.tasks import get_task

    out = {}
    for name in CONFORMANCE_TASKS:
        task = get_task(name, "default")
        model = task.build_model()
        cfg = task.config
        Trainer().fit(model, task.train_stream(cfg.train.batch_size, 0), cfg.train, cfg.seed)
        out[name] = (task, model.eval())
    return out


@pytest.fixture
def guarded_compress():
    """`compress(method, task, baseline, seed=0) -> (Compressed, ctx)` as the harness does, test split tripwired."""
    return compress_guarded


@pytest.fixture
def method_contract():
    """`check(method_factory, task, baseline, tmp_path) -> reloaded model`: the conformance checks."""
    return check_method


class Tripwire:
    """Stands in for a test split during compression: any access fails the test."""

    def __len__(self):
        raise AssertionError("a method reached the test split")

    def __getitem__(self, i):
        raise AssertionError("a method reached the test split")

    def __iter__(self):
        raise AssertionError("a method reached the test split")


def compress_guarded(method, task, baseline, seed=0, trainer=None):
    """Compress as the harness does (one context factory), the test split swapped for a tripwire."""
    import copy

    import torch

    from slimbench.methods import as_compressed
    from slimbench.suite.context import make_context

    data = task.data()
    test, data.test = data.test, Tripwire()
    try:
        ctx = make_context(task, baseline=baseline, seed=seed, owner=method.name, trainer=trainer)
        torch.manual_seed(seed)
        result = as_compressed(method.compress(copy.deepcopy(baseline), ctx))
    finally:
        data.test = test
    return result, ctx


def check_method(method_factory, task, baseline, tmp_path):
    """The whole method contract on one task; returns the model reloaded from the artifact.

    Steps within budget, the test split untouched, reported size == bytes on disk, parameter
    counts those of the reloaded model, reload onto a freshly built model from the bytes alone
    with the same outputs, and the same bytes for the same seed."""
    import hashlib

    import torch

    from slimbench.suite.artifact import count_params, load_artifact, read_artifact, save_artifact

    def digest(path) -> str:
        return hashlib.sha256(open(path, "rb").read()).hexdigest()

    from slimbench.suite.trainer import Trainer

    class StepCounter(Trainer):
        """The real trainer, counting the optimizer steps it runs, whoever calls it."""
        steps = 0

        def fit(self, model, batches, recipe, seed, **kw):
            StepCounter.steps += recipe.steps
            return super().fit(model, batches, recipe, seed, **kw)

    method = method_factory()
    reason = method.supports(task.spec(), "cpu")
    if reason:
        pytest.skip(f"{method.name} unsupported on CPU: {reason}")
    result, ctx = compress_guarded(method, task, baseline, seed=3, trainer=StepCounter())
    budget = ctx.ledger.summary()
    assert StepCounter.steps == sum(b["used"] for b in budget.values()), "steps trained outside the budget"
    for account, b in budget.items():
        assert 0 <= b["used"] <= b["budget"], (account, b)
    compressed = result.model.eval()

    info = save_artifact(result, method, tmp_path / "a")
    on_disk = sum(os.path.getsize(tmp_path / "a" / f) for f in os.listdir(tmp_path / "a"))
    assert info.size_bytes == on_disk
    reloaded = load_artifact(tmp_path / "a", task.build_model, method).eval()  # from the bytes alone
    _, doc = read_artifact(tmp_path / "a")
    assert (info.params_total, info.params_nonzero) == count_params(reloaded, doc["meta"])
    assert doc["params"] == {"total": info.params_total, "nonzero": info.params_nonzero}
    inputs = task.example_inputs(4)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs), compressed(**inputs))
        out = reloaded(**inputs)
    assert out.shape == (4, task.config.num_classes) and torch.isfinite(out).all()

    again, _ = compress_guarded(method_factory(), task, baseline, seed=3)
    save_artifact(again, method, tmp_path / "b")
    assert digest(tmp_path / "a" / "model.safetensors") == digest(tmp_path / "b" / "model.safetensors")
    return reloaded
