"""A generic Hugging Face `datasets` loader for large real tasks (ImageNet-style, GLUE-style).

Everything is per item and lazy: images are decoded and transformed, and texts tokenized
(in the collate), only when a batch is drawn. `streaming: true` wraps the hub's IterableDataset
for sets too large to download whole. The task's `limit` (eval_limit, calibration_size) only
applies to sized datasets, so for streaming splits the loader takes the first `eval_limit` test
items and the first `train_size` train items itself.

YAML example (ImageNet-1k):
    data:
      loader: slimbench.tasks.hub:hf_dataset
      args: {path: imagenet-1k, train_split: train, test_split: validation, image_size: 224}
"""
from __future__ import annotations

import importlib.util
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset, IterableDataset

from slimbench.tasks.base import TaskConfig, TaskData
from slimbench.tasks.text import TokenizeCollate, load_tokenizer, tokenizer_source

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Item = tuple[Any, int]


def _require_datasets() -> Any:
    if importlib.util.find_spec("datasets") is None:
        raise ImportError("this task loads data with the optional `datasets` package: "
                          "pip install 'slimbench[datasets]'")
    import datasets
    return datasets


# --------------------------------------------------------------------------- per-item transforms

class ImageTransform:
    """PIL -> normalized float [C,H,W]; train: random resized crop + flip, test: resize + center crop.

    torchvision draws from torch's global RNG, which `Trainer.fit` seeds, so training is repeatable.
    """

    def __init__(self, train: bool, image_size: int, resize_size: int | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, mode: str = "RGB"):
        from torchvision.transforms import v2

        geo = ([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()] if train else
               [v2.Resize(resize_size or round(image_size / 0.875), antialias=True), v2.CenterCrop(image_size)])
        self.mode = mode
        self.pipe = v2.Compose([v2.ToImage(), *geo, v2.ToDtype(torch.float32, scale=True),
                                v2.Normalize(list(mean), list(std))])

    def __call__(self, image: Any) -> torch.Tensor:
        if hasattr(image, "convert"):
            image = image.convert(self.mode)
        return self.pipe(image)


class LabelMap:
    """Row label -> class index: ints pass through (range-checked); strings need `label_names`."""

    def __init__(self, num_classes: int, names: Sequence[str] | None, column: str):
        self.num_classes, self.column = num_classes, column
        self.index = {str(n): i for i, n in enumerate(names)} if names else None

    def __call__(self, value: Any) -> int:
        if isinstance(value, str):
            if self.index is None:
                raise ValueError(f"label column {self.column!r} holds strings ({value!r}); "
                                 "give data.args.label_names to map them to class indices")
            if value not in self.index:
                raise ValueError(f"label {value!r} is not in label_names {list(self.index)}")
            return self.index[value]
        y = int(value)
        if not 0 <= y < self.num_classes:
            raise ValueError(f"label {y} in column {self.column!r} is outside [0, {self.num_classes})")
        return y


class ImageInput:
    """row -> transformed image tensor (a class, not a lambda, so DataLoader workers can pickle it)."""

    def __init__(self, column: str, transform: Callable[[Any], torch.Tensor]):
        self.column, self.transform = column, transform

    def __call__(self, row: dict[str, Any]) -> torch.Tensor:
        return self.transform(row[self.column])


class TextInput:
    """row -> text, or (first, second) for sentence-pair tasks."""

    def __init__(self, columns: Sequence[str]):
        if not 1 <= len(columns) <= 2:
            raise ValueError(f"text_columns={list(columns)}: give one column or a sentence pair")
        self.columns = list(columns)

    def __call__(self, row: dict[str, Any]) -> str | tuple[str, str]:
        if len(self.columns) == 1:
            return row[self.columns[0]]
        return row[self.columns[0]], row[self.columns[1]]


class RowTransform:
    """One dataset row -> (pixel tensor or text / text pair, label)."""

    def __init__(self, inputs: Callable[[dict[str, Any]], Any], label: LabelMap):
        self.inputs, self.label = inputs, label

    def __call__(self, row: dict[str, Any]) -> Item:
        return self.inputs(row), self.label(row[self.label.column])


class HFItems(Dataset):
    """Map-style view of a `datasets.Dataset`; rows are fetched and transformed per item."""

    def __init__(self, ds: Any, transform: RowTransform):
        self.ds, self.transform = ds, transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Item:
        return self.transform(self.ds[int(i)])


class HFStream(IterableDataset):
    """A streamed `datasets.IterableDataset`; `set_epoch` reshuffles its buffer per epoch."""

    def __init__(self, ds: Any, transform: RowTransform):
        self.ds, self.transform = ds, transform

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)

    def __iter__(self) -> Iterator[Item]:
        for row in self.ds:
            yield self.transform(row)


class StackCollate:
    """Stacks per-item image tensors -> ({pixel_values}, labels)."""

    def __call__(self, items: list[Item]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return ({"pixel_values": torch.stack([x for x, _ in items])},
                torch.tensor([y for _, y in items], dtype=torch.long))


# --------------------------------------------------------------------------- loader

def hf_dataset(cfg: TaskConfig, path: str, name: str | None = None, data_dir: str | None = None,
               data_files: str | list[str] | dict[str, Any] | None = None, revision: str | None = None,
               train_split: str = "train", test_split: str = "test", val_split: str | None = None,
               val_size: int = 1000, streaming: bool = False,
               label_column: str = "label", label_names: Sequence[str] | None = None,
               image_column: str = "image", image_size: int = 224, resize_size: int | None = None,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
               image_mode: str = "RGB", text_columns: Sequence[str] = ("text",), max_length: int = 128,
               tokenizer: dict[str, Any] | None = None, train_size: int | None = None,
               shuffle_buffer: int = 10_000, cache_dir: str | None = None) -> TaskData:
    """`datasets.load_dataset(path, name, ...)` split into the task's train, validation and test datasets.

    The validation split is `val_split` when the dataset has one, else `val_size` items held out
    of the training split (a seeded split for map-style data; the first items of a stream).

    cfg.kind picks the item type: `vision` rows give `pixel_values` from `image_column`; `nlp`
    rows give one text or a sentence pair from `text_columns`, tokenized in the collate with
    dynamic padding (tokenizer defaults to the model's source).
    Local data works with path `imagefolder` + data_dir, or `csv`/`parquet`/`json` + data_files.
    """
    datasets = _require_datasets()
    kwargs: dict[str, Any] = {k: v for k, v in (("name", name), ("data_dir", data_dir), ("data_files", data_files),
                                                 ("revision", revision), ("cache_dir", cache_dir)) if v is not None}
    try:
        train = datasets.load_dataset(path, split=train_split, streaming=streaming, **kwargs)
        test = datasets.load_dataset(path, split=test_split, streaming=streaming, **kwargs)
        val = datasets.load_dataset(path, split=val_split, streaming=streaming, **kwargs) if val_split else None
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        raise FileNotFoundError(f"task {cfg.name!r}: could not load {path!r} splits "
                                f"{train_split!r}/{val_split!r}/{test_split!r} ({type(exc).__name__}: {exc})") from exc

    label_names = list(label_names) if label_names else _class_names(train, label_column)
    if label_names and len(label_names) != cfg.num_classes:
        raise ValueError(f"task {cfg.name!r}: {len(label_names)} classes in the data "
                         f"({label_names[:5]}...) but num_classes={cfg.num_classes}")
    labels = LabelMap(cfg.num_classes, label_names, label_column)
    info: dict[str, Any] = {"source": "datasets", "path": path, "name": name, "data_dir": data_dir,
                            "splits": {"train": train_split, "val": val_split or f"{val_size} held out of {train_split}",
                                       "test": test_split}, "streaming": streaming,
                            "classes": label_names, "train_size": train_size, "seed": cfg.seed}

    if cfg.kind == "vision":
        tf_train, tf_test = (RowTransform(ImageInput(image_column, ImageTransform(
            is_train, image_size, resize_size, mean, std, image_mode)), labels) for is_train in (True, False))
        collate: Callable = StackCollate()
    elif cfg.kind == "nlp":
        tf_train = tf_test = RowTransform(TextInput(text_columns), labels)
        collate = TokenizeCollate(load_tokenizer(tokenizer_source(cfg, tokenizer)), max_length)
        info["max_length"] = max_length
    else:
        raise ValueError(f"task {cfg.name!r}: kind={cfg.kind!r}; hf_dataset handles vision or nlp")

    if streaming:
        if val is None:
            train, val = train.skip(val_size), train.take(val_size)
        if train_size is not None:
            train = train.take(train_size)
        train = train.shuffle(seed=cfg.seed, buffer_size=shuffle_buffer)
        if cfg.eval_limit is not None:
            test = test.take(cfg.eval_limit)
        return TaskData(train=HFStream(train, tf_train), val=HFStream(val, tf_test), test=HFStream(test, tf_test),
                        collate=collate, info=info)

    if val is None:
        if not 0 < val_size < len(train):
            raise ValueError(f"task {cfg.name!r}: val_size={val_size} must be between 1 and {len(train) - 1} "
                             f"(the {train_split!r} split has {len(train)} items); or name the dataset's own "
                             "validation split with data.args.val_split")
        held = train.train_test_split(test_size=val_size, seed=cfg.seed)
        train, val = held["train"], held["test"]
    if train_size is not None and train_size < len(train):
        train = train.shuffle(seed=cfg.seed).select(range(train_size))
    info["sizes"] = {"train": len(train), "val": len(val), "test": len(test)}
    # what a cached baseline is checked against: `datasets`' own fingerprints of the three splits
    info["fingerprint"] = "-".join(str(getattr(d, "_fingerprint", "?")) for d in (train, val, test))
    return TaskData(train=HFItems(train, tf_train), val=HFItems(val, tf_test), test=HFItems(test, tf_test),
                    collate=collate, info=info)


def _class_names(ds: Any, column: str) -> list[str] | None:
    """Names from a ClassLabel feature (imagefolder, GLUE), else None (ints or strings as given)."""
    feature = (getattr(ds, "features", None) or {}).get(column)
    return list(feature.names) if feature is not None and hasattr(feature, "names") else None
