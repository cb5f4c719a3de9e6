"""The method contract every registered method must keep, as named checks a plugin author can run.

Two tiny tasks carry the layer kinds real models have: `toy-cnn` (timm's test_resnet: Conv2d,
BatchNorm, residual additions) and `toy-transformer` (a 2-layer BERT: embeddings, attention with
padding masks, LayerNorm, GELU). On each, a method compresses the trained baseline through the
suite's one context factory, with every test split sealed (`tasks.seal`), and then:

- `config`: a frozen, versioned dataclass that builds back from its fields and its spec and
  rejects an unknown key, and a one-line description (`config_checks`, once per method);
- `supports`: `supports()` answers None (it runs) or a reason (a str), and raises nothing;
- `test split`: it never read a test split, by any route, even if it swallowed the error;
- `budget`: every optimizer step taken during `compress` (counted by PyTorch's global optimizer
  step hook, whoever built the optimizer) is charged to its budget ledger, within each budget;
- `round trip`: the artifact reloads onto a freshly built model and gives the compressed
  model's outputs (finite, the right shape);
- `self-contained`: reloaded and run in a fresh interpreter that has only the artifact folder
  and the task's builder (no state left in the method object, module globals or files written
  elsewhere during the run: `measure.audit`), it gives the same outputs;
- `params`: the reloaded model holds exactly the weights the artifact stores (counted by the
  suite from the file; a method's own figure is recorded beside, never instead);
- `determinism`: the same seed gives the same bytes.

The test-suite runs these over the whole registry (tests/test_conformance.py); `slimbench plugin
check` runs them on a third-party method in a subprocess (`worker`), so a plugin that hangs or
crashes the interpreter fails the check instead of taking it down. Every check has a plugin that
fails exactly it (tests/plugins/broken_plugins.py).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).parent
TASK_FILES = {"toy-cnn": HERE / "toy_cnn.yaml", "toy-transformer": HERE / "toy_transformer.yaml"}
CHECKS = ("supports", "test split", "budget", "round trip", "self-contained", "params", "determinism")


class ContractError(AssertionError):
    """One named check failed: `check` says which, the message why."""

    def __init__(self, check: str, message: str):
        super().__init__(f"{check}: {message}")
        self.check, self.message = check, message


class Unsupported(Exception):
    """The method says it cannot run here (on the CPU, on this task): reported, not a failure."""


def config_checks(name: str) -> str | None:
    """The `config` check of a registered method: None when it holds, else what is wrong."""
    from slimbench.core.config import ConfigError, build, to_dict
    from slimbench.methods import METHODS, Method, create_method

    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        return f"{name} is {cls!r}, not a subclass of slimbench.methods.Method"
    cfg = cls.config_cls()
    if not dataclasses.is_dataclass(cfg) or not getattr(cfg, "version", 0) >= 1:
        return "config_cls must be a MethodConfig dataclass (it has a version >= 1)"
    if not isinstance(cls.version, int) or cls.version < 1:
        return f"the method's version must be an int >= 1, got {cls.version!r}"
    try:
        cfg.version = 99  # type: ignore[misc]
        return "the config is mutable: declare it @dataclass(frozen=True)"
    except dataclasses.FrozenInstanceError:
        pass
    data = {k: v for k, v in to_dict(cfg).items() if k != "version"}
    if build(cls.config_cls, data, name) != cfg:
        return "the config does not build back from its own fields (to_dict -> build)"
    if create_method(create_method(name).spec).config != cfg:
        return "the method's spec does not build back the same config"
    try:
        create_method(f"{name}:no_such_field=1")
        return "an unknown config key was accepted (no_such_field=1)"
    except ConfigError as exc:
        if "no_such_field" not in str(exc):
            return f"an unknown config key was rejected without naming it: {exc}"
    if not getattr(cls, "description", ""):
        return "the method needs a one-line `description`"
    return None


def register_tasks() -> None:
    """Make the conformance tasks available by name (not part of the standard suite: they are
    registered only where checks run, never by `slimbench list` or a default `slimbench run`)."""
    from slimbench.tasks import TASKS
    for name, path in TASK_FILES.items():
        if name not in TASKS:
            TASKS.register(name)(str(path))


def trained_baseline(task):
    """The task's baseline trained with its own recipe (seconds on the toy tasks)."""
    from slimbench.suite.trainer import Trainer

    model = task.build_model()
    cfg = task.config
    Trainer().fit(model, task.train_stream(cfg.train.batch_size, 0), cfg.train, cfg.seed)
    return model.eval()


class StepCount:
    """Every optimizer step taken in this process while active (PyTorch's global step hook), so a
    method running its own optimizer loop is counted as much as one training through the trainer."""

    def __init__(self) -> None:
        self.steps = 0

    def __enter__(self) -> "StepCount":
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handle = register_optimizer_step_post_hook(self._count)
        return self

    def _count(self, optimizer, args, kwargs) -> None:
        self.steps += 1

    def __exit__(self, *exc: Any) -> None:
        self._handle.remove()


def compress_guarded(method, task, baseline, seed: int = 0, trainer=None, steps: StepCount | None = None):
    """Compress as the harness does (one context factory), every test split sealed; a read of one
    fails the `test split` check even if the method caught the error."""
    import contextlib

    import torch

    from slimbench.methods import as_compressed
    from slimbench.suite.context import make_context
    from slimbench.tasks.seal import TEST_READ, TestSplitRead, sealed

    ctx = make_context(task, baseline=baseline, seed=seed, owner=method.name, trainer=trainer)
    torch.manual_seed(seed)
    try:
        with sealed() as wire, (steps if steps is not None else contextlib.nullcontext()):
            result = as_compressed(method.compress(copy.deepcopy(baseline), ctx))
    except TestSplitRead:
        raise ContractError("test split", f"{TEST_READ} ({'; '.join(wire.reads[:3])})") from None
    if wire.tripped:
        raise ContractError("test split", f"{TEST_READ} ({'; '.join(wire.reads[:3])}) and caught the error")
    return result, ctx


@dataclass
class Report:
    """What `check_method` found on one task: each check passed (True), failed (its reason) or was
    not reached (absent)."""

    task: str
    passed: dict[str, bool] = field(default_factory=dict)
    failure: str | None = None
    unsupported: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "passed": self.passed, "failure": self.failure, "unsupported": self.unsupported}


def check_method(method_factory: Callable[[], Any], task, baseline, workdir: Path, worker=None):
    """The whole contract on one task; returns the model reloaded from the artifact. Raises
    `ContractError` naming the first check that failed, `Unsupported` if the method declines the
    CPU for this task (`run_checks` reports instead of raising). `worker`: the
    `measure.isolated.MeasureWorker` that reloads the artifact afresh (one is started if None)."""
    return _with_worker(worker, lambda w: _checks(method_factory, task, baseline, Path(workdir), Report(task.name), w))


def run_checks(method_factory: Callable[[], Any], task, baseline, workdir: Path, worker=None) -> Report:
    """`check_method`, reported instead of raised: one `Report` per task for `plugin check`."""
    report = Report(task.name)
    try:
        _with_worker(worker, lambda w: _checks(method_factory, task, baseline, Path(workdir), report, w))
    except Unsupported as exc:
        report.unsupported = str(exc)
    except ContractError as exc:
        report.passed[exc.check] = False
        report.failure = str(exc)
    except Exception as exc:  # the method itself raised: which check was running says where
        import traceback

        running = next((c for c in CHECKS if c not in report.passed), "supports")
        report.passed[running] = False
        report.failure = f"{running}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"
    return report


def _with_worker(worker, body: Callable[[Any], Any]) -> Any:
    if worker is not None:
        return body(worker)
    from slimbench.suite.measure.isolated import MeasureWorker
    with MeasureWorker() as fresh:
        return body(fresh)


def _checks(method_factory, task, baseline, workdir: Path, report: Report, worker):
    import torch

    from slimbench.suite.artifact import count_params, load_artifact, save_artifact, stored_params
    from slimbench.suite.measure.isolated import MeasureFailed

    def need(check: str, ok: bool, message: str) -> None:
        if not ok:
            raise ContractError(check, message)
        report.passed[check] = True

    method = method_factory()
    try:
        reason = method.supports(task.spec(), "cpu")
    except Exception as exc:
        raise ContractError("supports", f"supports() raised {type(exc).__name__}: {exc}; return a reason "
                                        "(a str) instead, or None when the method can run") from None
    need("supports", reason is None or isinstance(reason, str),
         f"supports() returned {reason!r}; return None when the method can run here, else the reason (a str)")
    if reason:
        raise Unsupported(f"{method.name} is unsupported on the CPU for {task.name}: {reason}")
    since = time.time()
    with StepCount() as steps:
        result, ctx = compress_guarded(method, task, baseline, seed=3)
    report.passed["test split"] = True  # compress_guarded returned: the seal never tripped
    budget = ctx.ledger.summary()
    used = sum(b["used"] for b in budget.values())
    need("budget", steps.steps == used,
         f"{steps.steps} optimizer steps taken during compress, {used} charged to the ledger (train through "
         "ctx.trainer so the budget sees every step)")
    for account, b in budget.items():
        need("budget", 0 <= b["used"] <= b["budget"], f"account {account!r} used {b['used']} of {b['budget']} steps")
    compressed = result.model.eval()

    save_artifact(result, method, workdir / "a")
    inputs = task.example_inputs(4)
    with torch.no_grad():
        ref = compressed(**inputs)
    reloaded = load_artifact(workdir / "a", task.build_model, method).eval()  # from the bytes alone
    with torch.no_grad():
        out = reloaded(**inputs)
    try:
        torch.testing.assert_close(out, ref)
    except AssertionError as exc:
        raise ContractError("round trip", "the model reloaded from the artifact computes other outputs than the "
                                          f"compressed model: {str(exc).splitlines()[0]}") from None
    need("round trip", out.shape == (4, task.config.num_classes) and bool(torch.isfinite(out).all()),
         f"outputs of shape {tuple(out.shape)} (want (4, {task.config.num_classes})), finite: "
         f"{bool(torch.isfinite(out).all())}")

    torch.save(inputs, workdir / "inputs.pt")
    try:
        worker.outputs(task, method, workdir / "a", workdir / "inputs.pt", workdir / "fresh.pt", since=since)
    except MeasureFailed as exc:
        raise ContractError("self-contained", f"reloading the artifact in a fresh interpreter failed: {exc}") from None
    fresh = torch.load(workdir / "fresh.pt")
    try:
        torch.testing.assert_close(fresh, ref)
    except (AssertionError, TypeError) as exc:
        raise ContractError("self-contained", "reloaded in a fresh interpreter, with only the artifact and the task's "
                                              "builder, the model computes other outputs than the compressed model "
                                              f"(state kept outside the artifact?): {str(exc).splitlines()[0]}") from None
    report.passed["self-contained"] = True

    held, stored = count_params(reloaded), stored_params(workdir / "a", reloaded)
    need("params", held == stored,
         f"the reloaded model holds (total, nonzero) = {held} weights, the artifact stores {stored}: its restore "
         "made weights the bytes do not hold (a weight regenerated at load is not in the size)")

    again, _ = compress_guarded(method_factory(), task, baseline, seed=3)
    save_artifact(again, method, workdir / "b")
    need("determinism", _digest(workdir / "a" / "model.safetensors") == _digest(workdir / "b" / "model.safetensors"),
         "two compressions with the same seed stored different bytes")
    return reloaded


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
