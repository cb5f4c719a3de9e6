"""The method contract every registered method must keep, as named checks a plugin author can run.

Two tiny tasks carry the layer kinds real models have: `toy-cnn` (timm's test_resnet: Conv2d,
BatchNorm, residual additions) and `toy-transformer` (a 2-layer BERT: embeddings, attention with
padding masks, LayerNorm, GELU). On each, a method compresses the trained baseline through the
suite's one context factory, with the test split replaced by a tripwire, and then:

- `budget`: every optimizer step it trained is on its budget ledger, within each budget;
- `test split`: it never touched the test split;
- `size`: the reported artifact size is the bytes on disk;
- `params`: the recorded parameter counts are the reloaded model's;
- `round trip`: the artifact reloads onto a freshly built model from its bytes alone and gives
  the compressed model's outputs (finite, the right shape);
- `determinism`: the same seed gives the same bytes.

The test-suite runs these over the whole registry (tests/test_conformance.py); `slimbench plugin
check` runs them on a third-party method in a subprocess (`worker`), so a plugin that hangs or
crashes the interpreter fails the check instead of taking it down.
"""
from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).parent
TASK_FILES = {"toy-cnn": HERE / "toy_cnn.yaml", "toy-transformer": HERE / "toy_transformer.yaml"}
CHECKS = ("supports", "budget", "test split", "size", "params", "round trip", "determinism")


class ContractError(AssertionError):
    """One named check failed: `check` says which, the message why."""

    def __init__(self, check: str, message: str):
        super().__init__(f"{check}: {message}")
        self.check, self.message = check, message


class Unsupported(Exception):
    """The method says it cannot run here (on the CPU, on this task): reported, not a failure."""


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


TEST_READ = "the method read the test split (methods get train and validation data only)"


class Tripwire:
    """Stands in for a test split during compression: any access fails the check (also when the
    method catches the error: `tripped` remembers)."""

    tripped = False

    def _trip(self, *args: Any) -> Any:
        self.tripped = True
        raise ContractError("test split", TEST_READ)

    __len__ = __getitem__ = __iter__ = _trip


def compress_guarded(method, task, baseline, seed: int = 0, trainer=None):
    """Compress as the harness does (one context factory), the test split swapped for a tripwire."""
    import torch

    from slimbench.methods import as_compressed
    from slimbench.suite.context import make_context

    data = task.data()
    wire = Tripwire()
    test, data.test = data.test, wire
    try:
        ctx = make_context(task, baseline=baseline, seed=seed, owner=method.name, trainer=trainer)
        torch.manual_seed(seed)
        result = as_compressed(method.compress(copy.deepcopy(baseline), ctx))
    finally:
        data.test = test
    if wire.tripped:
        raise ContractError("test split", TEST_READ)
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


def check_method(method_factory: Callable[[], Any], task, baseline, workdir: Path):
    """The whole contract on one task; returns the model reloaded from the artifact. Raises
    `ContractError` naming the first check that failed, `Unsupported` if the method declines the
    CPU for this task (`run_checks` reports instead of raising)."""
    return _checks(method_factory, task, baseline, Path(workdir), Report(task.name))


def run_checks(method_factory: Callable[[], Any], task, baseline, workdir: Path) -> Report:
    """`check_method`, reported instead of raised: one `Report` per task for `plugin check`."""
    report = Report(task.name)
    try:
        _checks(method_factory, task, baseline, Path(workdir), report)
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


def _checks(method_factory, task, baseline, workdir: Path, report: Report):
    import torch

    from slimbench.suite.artifact import count_params, load_artifact, read_artifact, save_artifact
    from slimbench.suite.trainer import Trainer

    def need(check: str, ok: bool, message: str) -> None:
        if not ok:
            raise ContractError(check, message)
        report.passed[check] = True

    class StepCounter(Trainer):
        """The real trainer, counting the optimizer steps it runs, whoever calls it."""
        steps = 0

        def fit(self, model, batches, recipe, seed, **kw):
            StepCounter.steps += recipe.steps
            return super().fit(model, batches, recipe, seed, **kw)

    method = method_factory()
    reason = method.supports(task.spec(), "cpu")
    if reason:
        raise Unsupported(f"{method.name} is unsupported on the CPU for {task.name}: {reason}")
    report.passed["supports"] = True
    result, ctx = compress_guarded(method, task, baseline, seed=3, trainer=StepCounter())
    budget = ctx.ledger.summary()
    used = sum(b["used"] for b in budget.values())
    need("budget", StepCounter.steps == used,
         f"{StepCounter.steps} optimizer steps trained, {used} charged to the ledger (train through ctx.train / "
         "ctx.trainer so the budget sees every step)")
    for account, b in budget.items():
        need("budget", 0 <= b["used"] <= b["budget"], f"account {account!r} used {b['used']} of {b['budget']} steps")
    report.passed["test split"] = True  # compress_guarded returned: the tripwire never fired
    compressed = result.model.eval()

    info = save_artifact(result, method, workdir / "a")
    on_disk = sum(os.path.getsize(workdir / "a" / f) for f in os.listdir(workdir / "a"))
    need("size", info.size_bytes == on_disk, f"reported {info.size_bytes} bytes, the artifact holds {on_disk}")
    reloaded = load_artifact(workdir / "a", task.build_model, method).eval()  # from the bytes alone
    _, doc = read_artifact(workdir / "a")
    counted = count_params(reloaded, doc["meta"])
    need("params", (info.params_total, info.params_nonzero) == counted
         and doc["params"] == {"total": info.params_total, "nonzero": info.params_nonzero},
         f"recorded (total, nonzero) = {(info.params_total, info.params_nonzero)}, the reloaded model has {counted}")
    inputs = task.example_inputs(4)
    with torch.no_grad():
        out, ref = reloaded(**inputs), compressed(**inputs)
    try:
        torch.testing.assert_close(out, ref)
    except AssertionError as exc:
        raise ContractError("round trip", "the model reloaded from the artifact computes other outputs than the "
                                          f"compressed model: {str(exc).splitlines()[0]}") from None
    need("round trip", out.shape == (4, task.config.num_classes) and bool(torch.isfinite(out).all()),
         f"outputs of shape {tuple(out.shape)} (want (4, {task.config.num_classes})), finite: "
         f"{bool(torch.isfinite(out).all())}")

    again, _ = compress_guarded(method_factory(), task, baseline, seed=3)
    save_artifact(again, method, workdir / "b")
    need("determinism", _digest(workdir / "a" / "model.safetensors") == _digest(workdir / "b" / "model.safetensors"),
         "two compressions with the same seed stored different bytes")
    return reloaded


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
