"""The method plugin contract.

A method is a `Method` subclass with a typed, versioned config dataclass and one job:
`compress(model, ctx) -> compressed model`. The suite (not the method) serializes the
result, measures it and tracks it, so every method is measured the same way.

Contract for the compressed model:
- its `state_dict()` holds only plain tensors (any dtype: packed uint8, int8, fp16...),
  because that is exactly what is written to the safetensors artifact and weighed;
- `restore(model, tensors, meta)` rebuilds it from an *uncompressed* model of the task's
  architecture plus those tensors, so a saved artifact loads back and gives the same outputs;
- a module whose real cost differs from its dense ops (sparse, low-bit, custom kernels)
  may define `slim_cost(inputs, output) -> {"dense": flops, "effective": flops}`; the FLOP
  counter then uses it instead of what it traced inside that module.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable

from slimbench.suite.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn
    from slimbench.suite.trainer import Trainer
    from slimbench.tasks.base import Task, TrainRecipe

FAMILIES = ("reference", "quantization", "pruning", "distillation", "low-rank", "nas")


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method config: frozen, typed, versioned, recorded verbatim per run."""

    version: int = field(default=1, metadata={"help": "config schema version"})


@dataclass
class CompressionContext:
    """What a method may use while compressing.

    Attributes:
        task: the task (its definition, data and metric).
        calibration: a callable yielding calibration batches `(inputs: dict, labels)`.
        train_batches: a callable yielding an endless stream of training batches.
        trainer: the one shared trainer (fine-tuning, QAT, distillation, NAS proxies).
        teacher: the baseline model, untouched (for distillation).
        device: torch device the method should compress on.
        seed: the run's seed.
        budget_steps: the task's fine-tuning budget in optimizer steps for this profile.
        lr: the task's fine-tuning learning rate for this profile.
        finetune: the task's whole fine-tuning recipe (schedule, warm-up, weight decay); use
            `recipe()` so every method trains under the same rules.
    """

    task: "Task"
    calibration: Callable[[], Iterable[tuple[dict, "torch.Tensor"]]]
    train_batches: Callable[[], Iterable[tuple[dict, "torch.Tensor"]]]
    trainer: "Trainer"
    teacher: "nn.Module"
    device: "torch.device"
    seed: int
    budget_steps: int
    lr: float
    finetune: "TrainRecipe | None" = None

    def recipe(self, steps: int | None = None) -> "TrainRecipe":
        """The task's fine-tuning recipe, optionally with a share of the budget (`steps`)."""
        import dataclasses as dc

        from slimbench.tasks.base import TrainRecipe
        base = self.finetune or TrainRecipe(steps=self.budget_steps, lr=self.lr)
        return dc.replace(base, steps=self.budget_steps if steps is None else steps, lr=self.lr)


class Method:
    """Base class of every compression method plugin.

    Subclasses set `name`, `family`, `config_cls` and a one-line `description`, and
    implement `compress`. Methods that change module structure implement `restore`.
    Set `simulated = True` for methods whose result is numerically simulated (fake-quant):
    their runs are labelled as simulated and never presented as real compression.
    """

    name: ClassVar[str]
    family: ClassVar[str] = "reference"
    description: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    simulated: ClassVar[bool] = False

    def __init__(self, config: MethodConfig | None = None):
        self.config = config if config is not None else self.config_cls()
        if not isinstance(self.config, self.config_cls):
            raise TypeError(f"{self.name} expects {self.config_cls.__name__}, got {type(self.config).__name__}")

    def supports(self, task: "Task", device: "torch.device") -> str | None:
        """Return None if the method can run here, else a reason (recorded as 'unsupported')."""
        return None

    def compress(self, model: "nn.Module", ctx: CompressionContext) -> "nn.Module":
        raise NotImplementedError

    def restore(self, model: "nn.Module", tensors: dict[str, "torch.Tensor"], meta: dict[str, Any]) -> "nn.Module":
        """Rebuild the compressed model from an uncompressed skeleton and its saved tensors."""
        model.load_state_dict(tensors, strict=True)
        return model

    def artifact_meta(self, model: "nn.Module") -> dict[str, Any]:
        """Extra JSON written beside the tensors (e.g. storage format per layer)."""
        return {}

    def _non_default(self) -> list[tuple[str, Any]]:
        default = self.config_cls()
        return [(f.name, getattr(self.config, f.name)) for f in dataclasses.fields(self.config)
                if f.name != "version" and getattr(self.config, f.name) != getattr(default, f.name)]

    @property
    def spec(self) -> str:
        """The canonical `--method` spec that recreates this config (`name:key=value,...`)."""
        parts = [f"{k}={';'.join(map(str, v)) if isinstance(v, (tuple, list)) else v}"
                 for k, v in self._non_default()]
        return self.name + (":" + ",".join(parts) if parts else "")

    @property
    def label(self) -> str:
        """Short human label: name plus non-default settings, e.g. `quant.minmax bits=4`."""
        return " ".join([self.name, *(f"{k}={v}" for k, v in self._non_default())])


def _adopt(name: str, cls: type[Method]) -> None:
    """Validate a method class on registration and give it its registry name."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method {name!r} must be a subclass of slimbench.methods.Method, got {cls!r}")
    if cls.family not in FAMILIES:
        raise ValueError(f"method {name!r} has family {cls.family!r}; choose one of {', '.join(FAMILIES)}")
    if not (dataclasses.is_dataclass(cls.config_cls) and issubclass(cls.config_cls, MethodConfig)):
        raise TypeError(f"method {name!r}: config_cls must be a MethodConfig dataclass")
    cls.name = name


METHODS: Registry[type[Method]] = Registry(
    "method", group="slimbench.methods", builtins=("slimbench.methods.reference", "slimbench.methods.quant"), on_register=_adopt)


def register_method(name: str):
    """Class decorator: register a Method subclass under `name` (also set as `cls.name`)."""
    return METHODS.register(name)


def create_method(spec: str) -> Method:
    """The front door: `create_method("quant.minmax:bits=4")` -> a configured Method."""
    from slimbench.suite.config import build, parse_spec

    name, overrides = parse_spec(spec)
    cls = METHODS.get(name)
    return cls(build(cls.config_cls, overrides, owner=name))
