"""What a method may know about a task: `TaskSpec`.

Methods get this, never the task object itself: it names the task, carries the budgets it
grants, and builds fresh models of its architecture (`build_model(**overrides)`: fewer layers,
narrower channels...), but holds no data. The training, validation and calibration data reach a
method only through its `CompressionContext`, which has no path to the test split.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from slimbench.core.recipe import SearchBudget, TrainRecipe


@dataclass(frozen=True)
class TaskSpec:
    """A task's identity, budgets and model builder.

    Attributes:
        name, kind, num_classes, metric, profile: from the task definition.
        key: hash of the task's model, data and baseline recipe (changes when any does).
        finetune: the fine-tuning recipe and budget every method gets.
        search: the search budget of this profile (candidates x proxy steps).
        latency_batch_sizes: the batch sizes the suite times (methods that pick kernels by timing use them).
        build_model: `build_model(**overrides) -> nn.Module`, a freshly initialised model of the
            task's architecture, the builder's keyword arguments overridden.
    """

    name: str
    kind: str
    num_classes: int
    metric: str
    profile: str
    key: str
    finetune: TrainRecipe
    search: SearchBudget = field(default_factory=SearchBudget)
    latency_batch_sizes: tuple[int, ...] = (1,)
    build_model: Callable[..., Any] = field(default=lambda **_: None, compare=False, repr=False)
