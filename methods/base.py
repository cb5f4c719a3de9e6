"""The method plugin contract.

A method is a `Method` subclass with a typed, versioned config (`MethodConfig`) and one job:
`compress(model, ctx) -> Compressed`. The suite, not the method, serializes the result,
reloads it, measures it and tracks it, so every method is measured the same way.

What a method gets (`CompressionContext`, built by the suite's one `make_context` factory):
- `task`: a `TaskSpec`: the task's name and kind, its budgets, and `build_model(**overrides)`
  for fresh models of its architecture (a student, a search child); no data;
- data: `calibration()`, `train_batches()` (endless, at the fine-tuning batch size, seeded by the
  run), `val_batches()` and `example_inputs(n)` (validation), and `val_metric(model)` /
  `val_score(model)` (higher is better whatever the task's metric), the suite's own evaluator on
  validation batches. Nothing in the context leads to the test split:
  selection (checkpoints, ranks, sparsities, architectures) uses validation data;
- `trainer`: the one trainer (`fit(model, batches, recipe, seed, loss=, param_groups=, before_step=,
  after_step=, account=)`); every optimizer step is charged to the run's `StepLedger`, and a
  method asking for more than its budget (`ctx.finetune.steps`, or `ctx.search.steps` on the
  `search` account) fails with `BudgetExceeded`. The run records steps used vs granted;
- `teacher`: a frozen eval-mode copy of the baseline on the run's device, private to the run:
  nothing done to it reaches other runs or the restore skeleton;
- `device`, `seed`, `log_candidate(...)` (one nested MLflow run per search candidate),
  `resumed_candidates()` (those of an earlier, killed run of the same key) and `costs(key, model)`
  (latency on the run's device and FLOPs of an architecture, from the suite's cached cost table).

What a method returns (`Compressed`):
- `model`: its `state_dict()` holds only plain tensors (any dtype: packed uint8, int8, fp16...),
  exactly what is written to the safetensors artifact and weighed;
- `meta`: only what `restore` needs, written to `model.json` (which is weighed too);
- `metrics`: what the run should record (achieved sparsity, ranks, teacher accuracy, search
  cost...), kept in the run record and MLflow, never in the artifact;
- `build_overrides`: the `task.build_model(**overrides)` arguments of the restore skeleton when the
  architecture changed (fewer layers, narrower...). A bare `nn.Module` return means `Compressed(model)`.

What it starts from (`Method.starts_from`): "input", the `model` it is given (a private copy of
the trained baseline, or in a pipeline the previous stage's result), or "teacher": it builds its
result from `ctx.teacher` and ignores its input (a distillation student derived from the teacher, an
architecture search's children). A "teacher" stage may only come first in a pipeline, where nothing
earlier would be discarded.

How it is reloaded: the suite builds a fresh model with `task.build_model(**build_overrides)` and
calls `restore(model, tensors, meta)`, which must rebuild the compressed model from that and the
saved tensors alone. The default restore resizes Linear/Conv/Norm/Embedding layers to the saved
tensors (`methods.common.resize`) and loads them strictly; methods that swap layers record which
in `meta` and swap exactly those back (`methods.common.swap.LayerSwapMethod`).

A module whose real cost differs from its dense ops (sparse, low-bit, factorised) may define
`slim_cost(inputs, output) -> {"dense", "effective", "bops"}`, and a module storing index
tensors (sparse masks, CSR indices, N:M metadata) lists their buffer names in `slim_index`, so
parameter counts count values and index bytes are reported apart. Bump a method's `version`
when its algorithm changes: it is part of the run key, so fixed methods are re-run.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Protocol

from slimbench.core.config import MethodConfig, build, is_inline, ordered_fields, parse_spec, to_dict
from slimbench.core.families import FAMILIES
from slimbench.core.recipe import FINETUNE, SEARCH, SearchBudget, StepLedger, TrainRecipe
from slimbench.core.registry import Registry
from slimbench.core.task import TaskSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

Batch = tuple[dict, "torch.Tensor"]
STARTS_FROM = ("input", "teacher")  # what a method's compress starts from (`Method.starts_from`)


@dataclass
class Compressed:
    """A method's result: the model, what restore needs, what the run records, how to rebuild."""

    model: "nn.Module"
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    build_overrides: dict[str, Any] = field(default_factory=dict)


class Unsupported(Exception):
    """Raised from `compress` when the method finds, after looking, that it has nothing to offer
    here (a search where no candidate met the constraints): the run is UNSUPPORTED with this
    reason, not FAILED, and keeps `metrics` (what the method found on the way)."""

    def __init__(self, reason: str, metrics: dict[str, Any] | None = None):
        super().__init__(reason)
        self.metrics = metrics or {}


def as_compressed(result: Any) -> Compressed:
    """Normalise what `compress` returned (a `Compressed` or a bare model)."""
    if isinstance(result, Compressed):
        return result
    if callable(getattr(result, "state_dict", None)):
        return Compressed(result)
    raise TypeError(f"compress must return a Compressed or an nn.Module, got {type(result).__name__}")


class TrainerLike(Protocol):
    """The trainer interface methods use (implemented by the suite's `Trainer`)."""

    def fit(self, model: "nn.Module", batches: Iterable[Batch], recipe: TrainRecipe, seed: int, **kwargs: Any
            ) -> Any: ...


@dataclass
class CompressionContext:
    """What a method may use while compressing (see the module docstring). Build it with
    `slimbench.suite.context.make_context`, never by hand."""

    task: TaskSpec
    trainer: TrainerLike
    device: "torch.device"
    seed: int
    ledger: StepLedger
    calibration: Callable[[], Iterable[Batch]]
    train_stream: Callable[[int, int], Iterator[Batch]]  # (batch_size, seed) -> endless batches
    val: Callable[..., Iterator[Batch]]  # (batch_size=None, limit=None) -> validation batches
    example: Callable[[int], dict[str, "torch.Tensor"]]  # a validation batch of n items
    frozen_teacher: "nn.Module | None" = field(default=None, repr=False)
    candidate_logger: Callable[..., Any] | None = field(default=None, repr=False)
    evaluator: Callable[..., dict[str, Any]] | None = field(default=None, repr=False)  # (model, batches, device)
    cost_table: Callable[..., dict[str, Any]] | None = field(default=None, repr=False)  # (key, model, inputs)
    prior_candidates: Callable[[], list[dict[str, Any]]] | None = field(default=None, repr=False)

    @property
    def finetune(self) -> TrainRecipe:
        return self.task.finetune

    @property
    def search(self) -> SearchBudget:
        return self.task.search

    @property
    def budget_steps(self) -> int:
        return self.task.finetune.steps

    @property
    def lr(self) -> float:
        return self.task.finetune.lr

    def recipe(self, steps: int | None = None, **changes: Any) -> TrainRecipe:
        """The task's fine-tuning recipe, optionally for a share of the budget (`steps`) or with
        other fields changed (`optimizer="sgd"`), so every method trains under the same rules."""
        return dataclasses.replace(self.task.finetune, steps=self.budget_steps if steps is None else steps,
                                   **changes)

    def train_batches(self, batch_size: int | None = None) -> Iterator[Batch]:
        """Endless shuffled training batches, seeded by the run."""
        return self.train_stream(batch_size or self.task.finetune.batch_size, self.seed)

    def val_batches(self, batch_size: int | None = None, limit: int | None = None) -> Iterator[Batch]:
        """The validation split in order (the profile's `val_limit` unless `limit` is given)."""
        return self.val(batch_size, limit)

    def val_metric(self, model: "nn.Module", batches: Iterable[Batch] | None = None) -> float:
        """The task's metric (`ctx.task.metric`: accuracy, perplexity...) of `model` on validation
        `batches` (default: `val_batches()`), by the suite's evaluator, so what a method selects on
        is measured the way its test row will be."""
        if self.evaluator is None:
            raise RuntimeError("this context has no evaluator (build it with make_context)")
        metric = self.task.metric or "accuracy"
        extra = {} if metric == "accuracy" else {"metric": metric}
        batches = self.val_batches() if batches is None else batches
        return float(self.evaluator(model, batches, self.device, **extra)[metric])

    def val_score(self, model: "nn.Module", batches: Iterable[Batch] | None = None) -> float:
        """`val_metric` made higher-is-better (accuracy as is, perplexity negated): what selection
        (ranks, checkpoints, architectures) compares, whatever the task's metric."""
        from slimbench.core.metrics import get_metric
        return get_metric(self.task.metric).score(self.val_metric(model, batches))

    def val_accuracy(self, model: "nn.Module", batches: Iterable[Batch] | None = None) -> float:
        """Validation accuracy, on a classification task; elsewhere use `val_score` / `val_metric`."""
        if (self.task.metric or "accuracy") != "accuracy":
            raise ValueError(f"task {self.task.name!r} is scored by {self.task.metric}, not accuracy: "
                             "select with ctx.val_score(model) (higher is better) or ctx.val_metric(model)")
        return self.val_metric(model, batches)

    def example_inputs(self, batch_size: int) -> dict[str, "torch.Tensor"]:
        """A validation batch of exactly `batch_size` items (tracing, latency tables)."""
        return self.example(batch_size)

    def build_model(self, **overrides: Any) -> "nn.Module":
        """A freshly initialised model of the task's architecture, builder arguments overridden."""
        return self.task.build_model(**overrides)

    def stage(self, owner: str, share: float) -> "CompressionContext":
        """The context of one stage of a pipeline: the same data, teacher, device and seed, and `share`
        of each budget. The task's recipes are scaled too, so a method that reads them asks for what
        its stage may use; its steps go to its own ledger and to this one."""
        def part(n: int) -> int:  # floor, forgiving the rounding of even splits (3 x 0.333333 of 3 is 1 each)
            return int(n * share + 1e-6)

        finetune = dataclasses.replace(self.task.finetune, steps=part(self.task.finetune.steps))
        search = dataclasses.replace(self.task.search, candidates=part(self.task.search.candidates))
        ledger = self.ledger.child(owner, {FINETUNE: finetune.steps, SEARCH: search.steps})
        rebudget = getattr(self.trainer, "with_ledger", None)
        if rebudget is None:
            raise RuntimeError("this context's trainer cannot be split into stages (build it with make_context)")
        # a stage's search starts afresh: an earlier run's candidates are the whole pipeline's, not this stage's
        return dataclasses.replace(self, task=dataclasses.replace(self.task, finetune=finetune, search=search),
                                   ledger=ledger, trainer=rebudget(ledger), prior_candidates=None)

    @property
    def teacher(self) -> "nn.Module":
        """The trained baseline, frozen (eval mode, no grad) on the run's device; a private copy."""
        if self.frozen_teacher is None:
            raise RuntimeError("this context has no teacher (make_context was given no baseline)")
        return self.frozen_teacher

    def costs(self, key: str, model: "nn.Module", batch_size: int = 1) -> dict[str, Any]:
        """Hardware cost of an architecture: `latency_ms` on the run's device at `batch_size` and
        `mflops` per example, from the suite's cost table (measured once per architecture `key`,
        task and device with the suite's own latency harness, cached with provenance)."""
        if self.cost_table is None:
            raise RuntimeError("this context has no cost table (build it with make_context)")
        return self.cost_table(key, model, self.example_inputs(batch_size))

    def resumed_candidates(self) -> list[dict[str, Any]]:
        """Candidates an earlier, unfinished run of the same run key tracked (a killed search
        resumes from them): `[{"params": {...}, "metrics": {...}}]`, [] when there are none."""
        return list(self.prior_candidates()) if self.prior_candidates is not None else []

    def log_candidate(self, name: str, params: dict[str, Any], metrics: dict[str, float],
                      evaluated: bool = True) -> str | None:
        """Track one search candidate as a nested run of this run (None when untracked, e.g. in tests);
        the run records how many candidates were evaluated (`evaluated=False`: one rejected untrained,
        e.g. by a constraint, is tracked but not counted)."""
        self.ledger.count_candidates(int(evaluated))
        if self.candidate_logger is None:
            return None
        return self.candidate_logger(name, params, metrics)


class Method:
    """Base class of every compression method plugin.

    Subclasses set `family`, `config_cls` and a one-line `description`, and implement
    `compress`; methods whose artifact is not a plain state dict of the task's model implement
    `restore`. `name` is set by `register_method`. Set `simulated = True` for methods whose
    result is numerically simulated (fake-quant): their runs are labelled as simulated and never
    presented as real compression. A method with nothing to do on some models (no layer of its
    kind) says why in `model_unsupported`; the run is then UNSUPPORTED, not FAILED. Bump `version`
    when the algorithm changes. `default_seeds`:
    how many seeds a run that names none gives this method (3 where gains are within seed noise).
    `starts_from`: "input" (the default) if `compress` starts from the model it is given, "teacher"
    if it starts from `ctx.teacher` and ignores that model; a property where the config decides.
    Pipelines read it: a stage that starts from the teacher would discard the earlier stages' work.
    """

    name: ClassVar[str]
    family: ClassVar[str] = "reference"
    description: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    simulated: ClassVar[bool] = False
    version: ClassVar[int] = 1
    default_seeds: ClassVar[int] = 1  # seeds a run without --seeds/--seed gives this method

    starts_from: str = "input"  # one of STARTS_FROM; see the class docstring

    def __init__(self, config: MethodConfig | None = None):
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(f"{self.name} expects {self.config_cls.__name__}, got {type(self.config).__name__}")

    def supports(self, task: TaskSpec, device: Any) -> str | None:
        """Return None if the method can run here, else a reason (recorded as 'unsupported').
        Default: what `model_unsupported` says of the task's model."""
        return self.model_reason(task)

    def model_unsupported(self, model: "nn.Module") -> str | None:
        """Why this method has nothing to do on `model` (no layer of its kind...), else None; asked
        once per task definition by `model_reason`."""
        return None

    def model_reason(self, task: TaskSpec) -> str | None:
        """`model_unsupported` of a freshly built model of the task, cached per task definition on
        this instance; None when it cannot tell (the build fails: compress reports the real problem)."""
        key = getattr(task, "key", None)
        if key is None or type(self).model_unsupported is Method.model_unsupported:
            return None
        cache = self.__dict__.setdefault("_model_reasons", {})
        if key not in cache:
            try:
                model = task.build_model()
            except Exception:
                return None
            cache[key] = self.model_unsupported(model)
        return cache[key]

    def compress(self, model: "nn.Module", ctx: CompressionContext) -> "Compressed | nn.Module":
        raise NotImplementedError

    # Whether another method can take this one's compressed model (a pipeline stage after it):
    # true when `densify` gives plain float layers computing the same function.
    followable: ClassVar[bool] = False

    def densify(self, model: "nn.Module") -> "nn.Module":
        """The compressed model as plain float layers of the task's kinds (default: as it is)."""
        return model

    def after_resize(self, model: "nn.Module") -> "nn.Module":
        """What a freshly built model needs once its layers were resized to this method's result (a
        pipeline's restore runs it for every earlier stage; e.g. attention head counts)."""
        return model

    def restore(self, model: "nn.Module", tensors: dict[str, "torch.Tensor"], meta: dict[str, Any]) -> "nn.Module":
        """Rebuild the compressed model from a freshly built model and its saved tensors.

        Default: layers whose saved weights have another shape are resized (channel pruning),
        then the tensors are loaded strictly."""
        from slimbench.methods.common.resize import fit_to_tensors
        fit_to_tensors(model, tensors)
        model.load_state_dict(tensors, strict=True)
        return model

    def _non_default(self) -> list[tuple[str, Any]]:
        default = self.config_cls()
        return [(f.name, getattr(self.config, f.name)) for f in ordered_fields(type(self.config))
                if f.name != "version" and getattr(self.config, f.name) != getattr(default, f.name)]

    @property
    def spec(self) -> str:
        """The canonical `--method` spec that recreates this config: `name:key=value,...`, or
        `name:{json}` when a value cannot be written inline (mappings, nested settings)."""
        changed = self._non_default()
        if not changed:
            return self.name
        if all(is_inline(v) for _, v in changed):
            parts = [f"{k}={';'.join(map(str, v)) if isinstance(v, (tuple, list)) else v}" for k, v in changed]
            return f"{self.name}:{','.join(parts)}"
        data = to_dict(self.config)
        return f"{self.name}:" + json.dumps({k: data[k] for k, _ in changed}, separators=(",", ":"))

    @property
    def label(self) -> str:
        """Short human label: name plus non-default settings, e.g. `quant.minmax bits=4`."""
        return " ".join([self.name, *(f"{k}={v if is_inline(v) else json.dumps(to_dict(self.config)[k])}"
                                      for k, v in self._non_default())])


def _adopt(name: str, cls: type[Method]) -> None:
    """Validate a method class on registration and give it its registry name."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method {name!r} must be a subclass of slimbench.methods.Method, got {cls!r}")
    if cls.family not in FAMILIES:
        raise ValueError(f"method {name!r} has family {cls.family!r}; choose one of {', '.join(FAMILIES)}")
    if not (dataclasses.is_dataclass(cls.config_cls) and issubclass(cls.config_cls, MethodConfig)):
        raise TypeError(f"method {name!r}: config_cls must be a MethodConfig dataclass")
    if not isinstance(cls.version, int) or cls.version < 1:
        raise TypeError(f"method {name!r}: version must be an int >= 1, got {cls.version!r}")
    if not isinstance(cls.starts_from, property) and cls.starts_from not in STARTS_FROM:
        raise TypeError(f"method {name!r}: starts_from must be one of {', '.join(STARTS_FROM)}, "
                        f"got {cls.starts_from!r}")
    cls.name = name


SHARED_PACKAGES = ("common",)  # subpackages of slimbench.methods that are tools, not families


def family_packages() -> list[str]:
    """Every family folder under `methods/` (a subpackage that is not shared tools): a new family
    registers its methods by existing, with no list to edit."""
    import pkgutil
    from pathlib import Path

    package = __name__.rpartition(".")[0]  # this module's package, found without importing it
    found = pkgutil.iter_modules([str(Path(__file__).resolve().parent)])
    return [f"{package}.{m.name}" for m in sorted(found, key=lambda m: m.name)
            if m.ispkg and m.name not in SHARED_PACKAGES]


METHODS: Registry[type[Method]] = Registry("method", group="slimbench.methods", builtins=family_packages,
                                           on_register=_adopt)


def register_method(name: str):
    """Class decorator: register a Method subclass under `name` (also set as `cls.name`)."""
    return METHODS.register(name)


def create_single(spec: str) -> Method:
    """One configured method from its spec: `create_single("quant.minmax:bits=4")`. Pipelines
    (`a+b`) are built by the front door, `slimbench.methods.create_method`, which calls this."""
    name, overrides = parse_spec(spec)
    cls = METHODS.get(name)
    return cls(build(cls.config_cls, overrides, owner=name))


__all__ = ["FAMILIES", "FINETUNE", "METHODS", "Compressed", "CompressionContext", "Method", "MethodConfig",
           "STARTS_FROM", "TaskSpec", "Unsupported", "as_compressed", "create_single", "register_method"]
