"""The task contract: a declarative YAML definition plus, at most, a loader function.

A task fixes the model, the data and its split, the metric, the calibration subset, the
baseline training recipe, the fine-tuning budget methods get, the latency batch sizes and
the seed. Profiles (`quick`, `default`, `full`) override parts of it.

Loader contract (`data.loader: "module:function"` in the YAML):
    loader(cfg: TaskConfig, **data.args) -> TaskData
TaskData's datasets are map-style or iterable torch datasets whose items the `collate`
function turns into `(inputs: dict[str, Tensor], labels: LongTensor)`. Nothing here loads a
whole dataset into memory by design: evaluation streams batches.

Model contract (`model.builder: "module:function"`):
    builder(cfg: TaskConfig, **model.kwargs) -> nn.Module
whose `forward(**inputs)` returns class logits `[batch, num_classes]`.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from itertools import islice as itertools_islice
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn
    from torch.utils.data import Dataset

PROFILES = ("quick", "default", "full")


@dataclass(frozen=True)
class TrainRecipe:
    """An optimizer recipe with its budget in optimizer steps."""

    steps: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.1  # fraction of steps
    schedule: str = "cosine"  # cosine | linear | constant
    grad_clip: float | None = 1.0

    def __post_init__(self):
        from slimbench.suite.config import check
        check(self.steps >= 0, f"steps={self.steps} must be >= 0")
        check(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        check(self.lr > 0, f"lr={self.lr} must be > 0")
        check(0 <= self.warmup < 1, f"warmup={self.warmup} must be in [0, 1)")
        check(self.schedule in ("cosine", "linear", "constant"),
              f"schedule={self.schedule!r}; choose cosine, linear or constant")


@dataclass(frozen=True)
class TaskConfig:
    """A task definition after its profile has been applied."""

    name: str
    kind: str  # vision | nlp
    description: str
    model: dict[str, Any]  # {builder: "module:fn", kwargs: {...}}
    data: dict[str, Any]  # {loader: "module:fn", args: {...}}
    metric: str  # accuracy (balanced accuracy is always reported beside it)
    num_classes: int
    train: TrainRecipe  # baseline recipe
    finetune: TrainRecipe  # budget every method gets for its own training
    calibration_size: int = 512
    eval_batch_size: int = 256
    eval_limit: int | None = None  # evaluate on the first N of the test split (quick profile)
    latency_batch_sizes: tuple[int, ...] = (1, 64)
    seed: int = 0
    profile: str = "default"
    min_accuracy: float | None = None  # the profile's documented floor for the baseline
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def baseline_key(self) -> str:
        """Hash of everything that determines the trained baseline (never reuse a stale one)."""
        keyed = {k: self.raw.get(k) for k in ("model", "data", "train", "seed", "num_classes")}
        keyed["baseline_format"] = 1
        blob = json.dumps(keyed, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class TaskData:
    """The splits of a task and how to batch them."""

    train: "Dataset"
    test: "Dataset"
    collate: Callable[[list[Any]], tuple[dict[str, "torch.Tensor"], "torch.Tensor"]]
    info: dict[str, Any] = field(default_factory=dict)  # split sizes, class balance, fingerprint
    val: "Dataset | None" = None


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
    from slimbench.suite.config import ConfigError

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    merged = deep_merge({k: v for k, v in raw.items() if k != "profiles"},
                        (raw.get("profiles") or {}).get(profile, {}))
    try:
        return TaskConfig(
            name=merged["name"], kind=merged["kind"], description=merged.get("description", ""),
            model=merged["model"], data=merged["data"], metric=merged.get("metric", "accuracy"),
            num_classes=int(merged["num_classes"]),
            train=TrainRecipe(**merged["train"]), finetune=TrainRecipe(**merged["finetune"]),
            calibration_size=int(merged.get("calibration_size", 512)),
            eval_batch_size=int(merged.get("eval_batch_size", 256)),
            eval_limit=merged.get("eval_limit"),
            latency_batch_sizes=tuple(merged.get("latency_batch_sizes", (1, 64))),
            seed=int(merged.get("seed", 0)), profile=profile,
            min_accuracy=merged.get("min_accuracy"), raw=merged)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"task {raw.get('name', '?')!r}: bad definition ({exc})") from None


class Task:
    """A task definition bound to a profile; builds its model and data on demand."""

    def __init__(self, config: TaskConfig):
        self.config = config
        self._data: TaskData | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def build_model(self) -> "nn.Module":
        m = self.config.model
        return resolve(m["builder"])(self.config, **(m.get("kwargs") or {}))

    def data(self) -> TaskData:
        if self._data is None:
            d = self.config.data
            self._data = resolve(d["loader"])(self.config, **(d.get("args") or {}))
        return self._data

    def loader(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
               limit: int | None = None) -> Iterable:
        """Batches of a split. Sized datasets: `limit` takes the first N of a permutation seeded
        by the task seed. Streaming (iterable) datasets: read in order, cut after `limit` items,
        and reshuffled by the dataset itself (`set_epoch`) if it can."""
        import itertools

        import torch
        from torch.utils.data import DataLoader, IterableDataset, Subset

        data = self.data()
        ds = getattr(data, split)
        if ds is None:
            raise ValueError(f"task {self.name!r} has no {split!r} split")
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

    def test_batches(self) -> Iterator:
        return iter(self.loader("test", self.config.eval_batch_size, limit=self.config.eval_limit))

    def example_inputs(self, batch_size: int) -> dict[str, "torch.Tensor"]:
        """A real test batch of exactly `batch_size` items (repeated if the split is smaller)."""
        from torch.utils.data import IterableDataset

        data = self.data()
        if isinstance(data.test, IterableDataset):
            items = []
            while len(items) < batch_size:
                before = len(items)
                items += list(itertools_islice(data.test, batch_size - len(items)))
                if len(items) == before:
                    raise ValueError(f"task {self.name!r}: the test split is empty")
        else:
            n = len(data.test)
            if n == 0:
                raise ValueError(f"task {self.name!r}: the test split is empty")
            items = [data.test[i % n] for i in range(batch_size)]
        inputs, _ = data.collate(items)
        return inputs


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml
    with open(path) as fh:
        return yaml.safe_load(fh)
