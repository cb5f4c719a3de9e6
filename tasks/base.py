"""The task contract: a declarative YAML definition plus, at most, a loader function.

A task fixes the model, the data and its train/validation/test split, the metric, the
calibration subset, the baseline training recipe, the fine-tuning and search budgets methods
get, the latency batch sizes and the seed. Profiles (`quick`, `default`, `full`) override parts
of it.

Loader contract (`data.loader: "module:function"` in the YAML):
    loader(cfg: TaskConfig, **data.args) -> TaskData
TaskData's datasets are map-style or iterable torch datasets whose items the `collate`
function turns into `(inputs: dict[str, Tensor], labels: LongTensor)`. Every task has a
validation split, disjoint from train and test and fixed by the task's seed: methods select
(checkpoints, ranks, sparsities, architectures) on it; the test split is for the final
measurement alone. Nothing here loads a whole dataset into memory by design.

Model contract (`model.builder: "module:function"`):
    builder(cfg: TaskConfig, **model.kwargs) -> nn.Module
whose `forward(**inputs)` returns class logits `[batch, num_classes]`. `Task.build_model(**overrides)`
merges overrides into `model.kwargs` (fewer layers, narrower channels...), which is how a
student, a NAS child or a restore skeleton of another shape is built.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from slimbench.core.config import ConfigError
from slimbench.core.metrics import get_metric
from slimbench.core.recipe import SearchBudget, TrainRecipe
from slimbench.core.task import TaskSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn
    from torch.utils.data import Dataset

PROFILES = ("quick", "default", "full")


@dataclass(frozen=True)
class TaskConfig:
    """A task definition after its profile has been applied."""

    name: str
    kind: str  # vision | nlp
    description: str
    model: dict[str, Any]  # {builder: "module:fn", kwargs: {...}}
    data: dict[str, Any]  # {loader: "module:fn", args: {...}}
    metric: str  # accuracy (balanced accuracy reported beside it) or perplexity (core.metrics)
    num_classes: int
    train: TrainRecipe  # baseline recipe
    finetune: TrainRecipe  # budget every method gets for its own training
    search: SearchBudget = SearchBudget()  # budget of search methods (candidates x proxy steps)
    calibration_size: int = 512
    eval_batch_size: int = 256
    eval_limit: int | None = None  # evaluate on the first N of the test split (quick profile)
    val_limit: int | None = None  # methods' validation batches: the first N of the split
    latency_batch_sizes: tuple[int, ...] = (1, 64)
    seed: int = 0
    profile: str = "default"
    min_accuracy: float | None = None  # the profile's documented floor for the baseline
    max_perplexity: float | None = None  # the same, for a perplexity task: its documented ceiling
    checkpoint: str | None = None  # `baseline.checkpoint`: published weights instead of training (tasks.checkpoints)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def baseline_key(self) -> str:
        """Hash of everything that determines the trained baseline (never reuse a stale one)."""
        keyed = {k: self.raw.get(k) for k in ("model", "data", "train", "seed", "num_classes")}
        keyed["baseline_format"] = 1
        if self.checkpoint:  # only when declared, so the keys of trained baselines stay as they were
            keyed["checkpoint"] = self.checkpoint
        blob = json.dumps(keyed, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class TaskData:
    """The splits of a task and how to batch them (`test` is None in a method's view)."""

    train: "Dataset"
    val: "Dataset"
    test: "Dataset | None"
    collate: Callable[[list[Any]], tuple[dict[str, "torch.Tensor"], "torch.Tensor"]]
    info: dict[str, Any] = field(default_factory=dict)  # split sizes, class balance, fingerprint

    def __post_init__(self) -> None:
        """The test split goes behind the seal (`tasks.seal`): whoever reaches it, a read while a
        method compresses fails and is remembered."""
        from slimbench.tasks.seal import guard

        self.test = guard(self.test)

    def without_test(self) -> "TaskData":
        return dataclasses.replace(self, test=None)


def resolve(ref: str) -> Callable:
    """Import `module:attr`."""
    mod, _, attr = ref.partition(":")
    if not attr:
        raise ValueError(f"{ref!r} is not of the form 'module:function'")
    return getattr(importlib.import_module(mod), attr)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def config_from_dict(raw: dict[str, Any], profile: str = "default") -> TaskConfig:
    """Apply `profiles[profile]` to a raw YAML dict and type-check the result."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    merged = deep_merge({k: v for k, v in raw.items() if k != "profiles"},
                        (raw.get("profiles") or {}).get(profile, {}))
    try:
        return TaskConfig(
            name=merged["name"], kind=merged["kind"], description=merged.get("description", ""),
            model=merged["model"], data=merged["data"], metric=get_metric(merged.get("metric")).name,
            num_classes=int(merged["num_classes"]),
            train=TrainRecipe(**merged["train"]), finetune=TrainRecipe(**merged["finetune"]),
            search=SearchBudget(**(merged.get("search") or {})),
            calibration_size=int(merged.get("calibration_size", 512)),
            eval_batch_size=int(merged.get("eval_batch_size", 256)),
            eval_limit=merged.get("eval_limit"), val_limit=merged.get("val_limit"),
            latency_batch_sizes=tuple(merged.get("latency_batch_sizes", (1, 64))),
            seed=int(merged.get("seed", 0)), profile=profile,
            min_accuracy=merged.get("min_accuracy"), max_perplexity=merged.get("max_perplexity"),
            checkpoint=_checkpoint(merged), raw=merged)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"task {raw.get('name', '?')!r}: bad definition ({exc})") from None


BASELINE_KEYS = ("checkpoint",)


def _checkpoint(merged: dict[str, Any]) -> str | None:
    """`baseline: {checkpoint: REF}`: the task's baseline is published weights, not trained here."""
    section = merged.get("baseline")
    if section is None:
        return None
    name = merged.get("name", "?")
    if not isinstance(section, dict) or set(section) - set(BASELINE_KEYS):
        raise ConfigError(f"task {name!r}: baseline must be a mapping with the key(s) {', '.join(BASELINE_KEYS)} "
                          f"(got {section!r})")
    ref = section.get("checkpoint")
    if ref is not None and (not isinstance(ref, str) or not ref.strip()):
        raise ConfigError(f"task {name!r}: baseline.checkpoint={ref!r} must be a non-empty string "
                          "(timm:NAME.TAG, hf:ORG/NAME[@REVISION] or a local path)")
    return ref.strip() if ref else None


def without_data(config: TaskConfig) -> TaskConfig:
    """The config with its data section removed: what a method's view of a task may hold (not even
    the loader's name and arguments, which would lead back to the test split)."""
    return dataclasses.replace(config, data={}, raw={k: v for k, v in config.raw.items() if k != "data"})


def build_model(config: TaskConfig, **overrides: Any) -> "nn.Module":
    """The task's model builder with `model.kwargs` updated by `overrides`."""
    m = config.model
    return resolve(m["builder"])(config, **{**(m.get("kwargs") or {}), **overrides})


class Splits:
    """Batches of a task's splits: shared by the task (all splits) and a method's view (no test)."""

    def __init__(self, config: TaskConfig, data: TaskData):
        self.config, self.data = config, data

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
               limit: int | None = None) -> Iterable:
        """Batches of a split. Sized datasets: `limit` takes the first N of a permutation seeded
        by the task seed. Streaming (iterable) datasets: read in order, cut after `limit` items,
        and reshuffled by the dataset itself (`set_epoch`) if it can."""
        import itertools

        import torch
        from torch.utils.data import DataLoader, IterableDataset, Subset

        data = self.data
        ds = getattr(data, split)
        if ds is None:
            raise ValueError(f"task {self.config.name!r} has no {split!r} split here"
                             + (" (methods never see the test split)" if split == "test" else ""))
        streaming = isinstance(ds, IterableDataset)
        if streaming:
            if shuffle and hasattr(ds, "set_epoch"):
                ds.set_epoch(seed)
            loader = DataLoader(ds, batch_size=batch_size, collate_fn=data.collate, num_workers=0)
            return loader if limit is None else itertools.islice(loader, -(-limit // batch_size))
        if limit is not None and limit < len(ds):
            g = torch.Generator().manual_seed(self.config.seed)
            ds = Subset(ds, torch.randperm(len(ds), generator=g)[:limit].tolist())
        g = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=data.collate,
                          generator=g if shuffle else None, num_workers=0)

    def train_stream(self, batch_size: int, seed: int) -> Iterator:
        """Endless shuffled training batches; epoch e reshuffles with seed + e."""
        epoch = 0
        while True:
            yield from self.loader("train", batch_size, shuffle=True, seed=seed + epoch)
            epoch += 1

    def calibration_batches(self, batch_size: int = 64) -> Iterator:
        """The task's fixed calibration subset: the first N of a seeded train permutation.

        Drawn under a forked RNG seeded with the task seed, so training-time augmentation
        (random flips...) gives the same calibration tensors on every call.
        """
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            batches = list(self.loader("train", batch_size, limit=self.config.calibration_size))
        return iter(batches)

    def val_batches(self, batch_size: int | None = None, limit: int | None = None) -> Iterator:
        """The validation split (the profile's `val_limit` unless `limit` is given), in order."""
        return iter(self.loader("val", batch_size or self.config.eval_batch_size,
                                limit=self.config.val_limit if limit is None else limit))

    def example_inputs(self, batch_size: int, split: str = "test") -> dict[str, "torch.Tensor"]:
        """A real batch of exactly `batch_size` items of `split` (repeated if the split is smaller)."""
        from torch.utils.data import IterableDataset

        ds = getattr(self.data, split)
        if ds is None:
            raise ValueError(f"task {self.config.name!r} has no {split!r} split here")
        if isinstance(ds, IterableDataset):
            items = []
            while len(items) < batch_size:
                before = len(items)
                items += list(islice(ds, batch_size - len(items)))
                if len(items) == before:
                    raise ValueError(f"task {self.config.name!r}: the {split} split is empty")
        else:
            n = len(ds)
            if n == 0:
                raise ValueError(f"task {self.config.name!r}: the {split} split is empty")
            items = [ds[i % n] for i in range(batch_size)]
        inputs, _ = self.data.collate(items)
        return inputs


class MethodData:
    """A method's view of a task's data: train, validation and calibration, never test.

    It holds the splits without the test set and the config without its data section, so
    nothing reachable from a method's context leads to test batches."""

    def __init__(self, config: TaskConfig, data: TaskData):
        self._splits = Splits(without_data(config), data.without_test())

    def train_stream(self, batch_size: int, seed: int) -> Iterator:
        return self._splits.train_stream(batch_size, seed)

    def calibration_batches(self) -> Iterator:
        return self._splits.calibration_batches()

    def val_batches(self, batch_size: int | None = None, limit: int | None = None) -> Iterator:
        return self._splits.val_batches(batch_size, limit)

    def example_inputs(self, batch_size: int) -> dict[str, "torch.Tensor"]:
        """A validation batch of exactly `batch_size` items (for tracing, latency tables)."""
        return self._splits.example_inputs(batch_size, "val")


class Task:
    """A task definition bound to a profile; builds its model and data on demand."""

    def __init__(self, config: TaskConfig):
        self.config = config
        self._data: TaskData | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def build_model(self, **overrides: Any) -> "nn.Module":
        """A freshly initialised model; `overrides` update the builder's `model.kwargs`."""
        return build_model(self.config, **overrides)

    def spec(self) -> TaskSpec:
        """What a method may know about this task: no data, and a model builder bound to the config
        without its data section, so not even the loader's name and arguments are reachable."""
        c = self.config
        return TaskSpec(name=c.name, kind=c.kind, num_classes=c.num_classes, metric=c.metric, profile=c.profile,
                        key=c.baseline_key(), finetune=c.finetune, search=c.search,
                        latency_batch_sizes=tuple(c.latency_batch_sizes),
                        build_model=functools.partial(build_model, without_data(c)))

    def data(self) -> TaskData:
        if self._data is None:
            d = self.config.data
            data = resolve(d["loader"])(self.config, **(d.get("args") or {}))
            if getattr(data, "val", None) is None:
                raise ValueError(f"task {self.name!r}: its loader {d['loader']} returned no validation split")
            self._data = data
        return self._data

    def splits(self) -> Splits:
        return Splits(self.config, self.data())

    def method_data(self) -> MethodData:
        return MethodData(self.config, self.data())

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
               limit: int | None = None) -> Iterable:
        return self.splits().loader(split, batch_size, shuffle, seed, limit)

    def train_stream(self, batch_size: int, seed: int) -> Iterator:
        return self.splits().train_stream(batch_size, seed)

    def val_batches(self, batch_size: int | None = None, limit: int | None = None) -> Iterator:
        return self.splits().val_batches(batch_size, limit)

    def test_batches(self) -> Iterator:
        """The test split, for the harness's final measurement only."""
        return iter(self.loader("test", self.config.eval_batch_size, limit=self.config.eval_limit))

    def example_inputs(self, batch_size: int) -> dict[str, "torch.Tensor"]:
        """A real test batch of exactly `batch_size` items (what latency and FLOPs are measured on)."""
        return self.splits().example_inputs(batch_size, "test")


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml
    with open(path) as fh:
        return yaml.safe_load(fh)
