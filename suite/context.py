"""`make_context`: the one way a `CompressionContext` is built (runner, tests, benchmarks).

It is where the context's promises are kept: the data callables come from the task's
train/validation view (which holds no test split), the trainer charges every optimizer step
to the run's ledger, and the teacher is a private, frozen, eval-mode copy of the baseline on
the run's device (the context holds no reference to the baseline itself), so nothing a method
does to it reaches other runs.
"""
from __future__ import annotations

import copy
import functools
import itertools
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from slimbench.core.recipe import FINETUNE, SEARCH, SearchBudget, StepLedger, TrainRecipe
from slimbench.core.task import TaskSpec
from slimbench.methods.base import CompressionContext
from slimbench.suite.progress import ProgressConfig, track
from slimbench.suite.trainer import BudgetedTrainer, Trainer

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from slimbench.tasks.base import Task

Batch = tuple[dict, "torch.Tensor"]


def frozen_copy(model: "nn.Module", device: Any) -> "nn.Module":
    """A deep copy in eval mode with every parameter frozen, on `device`."""
    teacher = copy.deepcopy(model).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def make_context(task: "Task | None" = None, *, baseline: "nn.Module | None" = None, device: Any = "cpu",
                 seed: int = 0, trainer: Trainer | None = None, owner: str = "method",
                 progress: ProgressConfig | None = None, candidate_logger: Callable[..., Any] | None = None,
                 calibration: Sequence[Batch] | None = None, train: Sequence[Batch] | None = None,
                 val: Sequence[Batch] | None = None, finetune: TrainRecipe | None = None,
                 search: SearchBudget | None = None, build_model: Callable[..., "nn.Module"] | None = None,
                 costs: Callable[..., dict] | None = None,
                 prior_candidates: Callable[[], list[dict]] | None = None, metric: str = "accuracy"
                 ) -> CompressionContext:
    """A method's context for one run.

    With a `task`, the data, budgets and model builder are the task's. Without one (unit tests,
    kernel benchmarks on a bare model), give the batches directly: `calibration`, `train`
    (cycled), `val`; `finetune` defaults to zero steps; `metric` scores `val` (a task brings its own).

    Args:
        baseline: the trained model the teacher is copied from (no teacher without it).
        owner: the method name, for budget errors.
        candidate_logger: `(name, params, metrics) -> run id`, nests search candidates under the run.
        costs: the cost table (`suite.costs.CostTable`; default: one in memory on `device`).
        prior_candidates: `() -> [candidate]` tracked by an earlier, unfinished run of the same key.
    """
    import torch

    from slimbench.suite.measure.accuracy import evaluate

    device = torch.device(device)
    progress = progress or ProgressConfig(False)
    if task is not None:
        spec = task.spec()
        view = task.method_data()
        size = task.config.calibration_size
        calib = functools.partial(_tracked, view.calibration_batches, f"{task.name} calibration",
                                  -(-size // 64), progress)
        stream, val_fn, example = view.train_stream, view.val_batches, view.example_inputs
    else:
        spec = TaskSpec(name="inline", kind="inline", num_classes=0, metric=metric, profile="",
                        key="inline", finetune=finetune or TrainRecipe(steps=0), search=search or SearchBudget(),
                        build_model=build_model or _no_builder)
        calib = functools.partial(iter, list(calibration or ()))
        stream = functools.partial(_endless, list(train or ()))
        val_fn = functools.partial(_batches, list(val or ()))
        example = functools.partial(_example, list(val or calibration or ()))
    if finetune is not None or search is not None:
        import dataclasses
        spec = dataclasses.replace(spec, finetune=finetune or spec.finetune, search=search or spec.search)
    ledger = StepLedger(owner, {FINETUNE: spec.finetune.steps, SEARCH: spec.search.steps})
    base_trainer = trainer or Trainer(device, progress)
    teacher = frozen_copy(baseline, device) if baseline is not None else None
    if costs is None:
        from slimbench.suite.costs import CostTable
        costs = CostTable(str(device), spec.key)
    return CompressionContext(task=spec, trainer=BudgetedTrainer(base_trainer, ledger), device=device, seed=seed,
                              ledger=ledger, calibration=calib, train_stream=stream, val=val_fn, example=example,
                              frozen_teacher=teacher, candidate_logger=candidate_logger, evaluator=evaluate,
                              cost_table=costs, prior_candidates=prior_candidates)


def _tracked(make: Callable[[], Iterable], desc: str, total: int, progress: ProgressConfig) -> Iterator:
    return track(make(), desc, total, progress)


def _no_builder(**_: Any) -> "nn.Module":
    raise RuntimeError("this context was made without a task or build_model: it cannot build models")


def _endless(batches: list[Batch], batch_size: int, seed: int) -> Iterator[Batch]:
    if not batches:
        return iter(())
    return itertools.cycle(batches)


def _batches(batches: list[Batch], batch_size: int | None = None, limit: int | None = None) -> Iterator[Batch]:
    return iter(batches)


def _example(batches: list[Batch], batch_size: int) -> dict[str, "torch.Tensor"]:
    if not batches:
        raise RuntimeError("this context was made without validation or calibration batches")
    import torch
    inputs = batches[0][0]
    n = next(iter(inputs.values())).shape[0]
    idx = torch.arange(batch_size) % n
    return {k: v[idx] for k, v in inputs.items()}
