"""ImageNet-1k (ILSVRC-2012): train on the 1.28M training images, test on the official 50,000.

The data comes from a local folder (`root` or $IMAGENET_ROOT, holding `train/` and `val/` with
one folder per class, named by WordNet id) or from the hub's gated `ILSVRC/imagenet-1k`
(formerly `imagenet-1k`). Both number the classes in sorted-wnid order, the order published
ImageNet weights use. The validation split is held out of the training images, a fixed number
per class chosen by the task seed, so methods never select on the test images.

Images are preprocessed as each model's own timm data config says (resize, crop fraction,
interpolation, mean/std), taken from the checkpoint's pretrained config: one hard-coded
transform would cost every model but the one it was written for accuracy.
"""
from __future__ import annotations

import functools
import hashlib
import os
import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from slimbench.tasks.base import TaskConfig, TaskData
from slimbench.tasks.hub import HFItems, ImageInput, LabelMap, RowTransform, StackCollate

IMAGENET_HUB = "ILSVRC/imagenet-1k"
IMAGENET_ENV = "IMAGENET_ROOT"
SOURCES = ("auto", "folder", "hub")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
FLAT_VAL_HINT = ("the official validation tarball unpacks flat; sort its 50,000 images into one folder per "
                 "class (the devkit's ground truth, or the widely used valprep.sh does it)")


# --------------------------------------------------------------------------- where the data is

def image_root(root: str | None) -> tuple[Path | None, str]:
    """(the folder to read, where that came from): the task's `root`, else $IMAGENET_ROOT, else None."""
    if root:
        return Path(root).expanduser(), "data.args.root"
    env = os.environ.get(IMAGENET_ENV)
    return (Path(env).expanduser(), f"${IMAGENET_ENV}") if env else (None, f"${IMAGENET_ENV} unset")


@functools.lru_cache(maxsize=8)
def scan_folder(path: str) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(class names, image paths relative to `path`, labels) of a class-folder tree, sorted.

    Cached: listing ImageNet's 1.28M files takes seconds and every profile shares it."""
    classes = tuple(sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")))
    files: list[str] = []
    labels: list[int] = []
    for i, name in enumerate(classes):
        found = sorted(e.name for e in os.scandir(os.path.join(path, name))
                       if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
        files += [f"{name}/{f}" for f in found]
        labels += [i] * len(found)
    return classes, tuple(files), np.asarray(labels, dtype=np.int64)


def holdout_per_class(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), both sorted: `per_class` items of every class held out, chosen
    by a permutation seeded with `seed` (stratified, so every class is in the validation split)."""
    counts = np.bincount(labels)
    fewest = int(counts.min()) if len(counts) else 0
    if per_class < 1 or fewest <= per_class:
        raise ValueError(f"val_per_class={per_class}: must be >= 1 and leave training images in every class "
                         f"(class {int(np.argmin(counts)) if len(counts) else '-'} has {fewest})")
    order = np.lexsort((np.random.default_rng(seed).random(len(labels)), labels))  # by class, shuffled within
    rank = np.arange(len(labels)) - np.repeat(np.cumsum(counts) - counts, counts)  # position within its class
    held = np.zeros(len(labels), dtype=bool)
    held[order[rank < per_class]] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


# --------------------------------------------------------------------------- preprocessing

def timm_model_name(cfg: TaskConfig, timm_model: str | None = None) -> str:
    """The timm name whose pretrained config sets the preprocessing: `timm_model`, else the
    checkpoint's (`timm:resnet50.tv_in1k` keeps its tag: weights differ in crop and interpolation),
    else `model.kwargs.name`."""
    if timm_model:
        return timm_model
    if cfg.checkpoint and cfg.checkpoint.startswith("timm:"):
        return cfg.checkpoint.partition(":")[2].strip()
    name = ((cfg.model or {}).get("kwargs") or {}).get("name")
    if not name:
        raise ValueError(f"task {cfg.name!r}: no timm model to take the preprocessing from; set "
                         "data.args.timm_model, a timm: checkpoint or model.kwargs.name")
    return str(name)


def timm_data_config(name: str, input_size: int | None = None, crop_pct: float | None = None,
                     interpolation: str | None = None) -> dict[str, Any]:
    """`timm.data.resolve_data_config` of the model's pretrained config, with the given overrides."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    try:
        pcfg = get_pretrained_cfg(name)
    except RuntimeError:  # a known architecture with an unknown tag
        pcfg = None
    if pcfg is None:
        raise ValueError(f"timm has no pretrained config for {name!r} to take the preprocessing from; "
                         "name one with data.args.timm_model (see timm.list_pretrained())")
    args = {k: v for k, v in (("img_size", input_size), ("crop_pct", crop_pct),
                              ("interpolation", interpolation)) if v is not None}
    return dict(resolve_data_config(args, pretrained_cfg=pcfg.to_dict()))


class RGB:
    """Any PIL mode (ImageNet has grayscale and CMYK JPEGs) -> RGB, then the transform."""

    def __init__(self, transform: Callable[[Any], torch.Tensor]):
        self.transform = transform

    def __call__(self, image: Any) -> torch.Tensor:
        return self.transform(image.convert("RGB") if image.mode != "RGB" else image)


class TorchSeeded:
    """Runs a transform that draws from Python's `random` (timm's random-resized crop) under a state
    seeded from torch's RNG, which `Trainer.fit` and `calibration_batches` seed: augmentation is then
    repeatable for a seed, and the caller's Python random stream is left as it was."""

    def __init__(self, transform: Callable[[Any], torch.Tensor]):
        self.transform = transform

    def __call__(self, image: Any) -> torch.Tensor:
        state = random.getstate()
        random.seed(int(torch.randint(0, 2**62, ())))
        try:
            return self.transform(image)
        finally:
            random.setstate(state)


def transforms(data_config: dict[str, Any], augment: bool) -> tuple[Callable, Callable]:
    """(train, eval) transforms from timm's `create_transform`; train augments unless `augment` is off."""
    from timm.data import create_transform

    test = RGB(create_transform(**data_config, is_training=False))
    train = RGB(TorchSeeded(create_transform(**data_config, is_training=True))) if augment else test
    return train, test


# --------------------------------------------------------------------------- datasets

class ImageFiles(Dataset):
    """Map-style image files under `root` with their labels; decoded and transformed per item."""

    def __init__(self, root: Path, files: list[str], labels: np.ndarray, transform: Callable[[Any], torch.Tensor]):
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.root, self.files, self.labels, self.transform = root, files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.root / self.files[i]) as img:
            return self.transform(img), int(self.labels[i])


def _subset(idx: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    if size is None or size >= len(idx):
        return idx
    return np.sort(np.random.default_rng(seed).permutation(idx)[:size])


def _listing_fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode() if not isinstance(p, np.ndarray) else p.tobytes())
    return h.hexdigest()[:16]


def imagenet(cfg: TaskConfig, root: str | None = None, source: str = "auto", val_per_class: int = 10,
             train_size: int | None = None, hub_id: str = IMAGENET_HUB, timm_model: str | None = None,
             input_size: int | None = None, crop_pct: float | None = None, interpolation: str | None = None,
             augment: bool = True, cache_dir: str | None = None) -> TaskData:
    """ImageNet-1k: train = the training images minus `val_per_class` per class (seeded by cfg.seed),
    val = those, test = the official 50,000 validation images.

    Args:
        root: folder with `train/` and `val/` class folders; default $IMAGENET_ROOT.
        source: `folder`, `hub` (`datasets.load_dataset(hub_id)`, gated: needs HF_TOKEN), or `auto`
            (the folder when a root is configured, else the hub).
        train_size: train on a seeded subset of this many of the remaining training images.
        timm_model, input_size, crop_pct, interpolation: preprocessing from this timm name's
            pretrained config (default: the checkpoint's or the model's), with overrides.
        augment: timm's training augmentation (random-resized crop, flip, colour jitter) on train.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r}; choose one of {', '.join(SOURCES)}")
    folder, origin = image_root(root)
    data_config = timm_data_config(timm_model_name(cfg, timm_model), input_size, crop_pct, interpolation)
    tf_train, tf_test = transforms(data_config, augment)
    if source == "folder" or (source == "auto" and folder is not None):
        splits, info = _from_folder(cfg, folder, origin, val_per_class, train_size, tf_train, tf_test)
    else:
        splits, info = _from_hub(cfg, hub_id, val_per_class, train_size, tf_train, tf_test, cache_dir)
    info.update(split=f"train: the 1,281,167 training images minus {val_per_class} per class held out as val "
                      f"(seed {cfg.seed}); test: the official 50,000-image validation set",
                sizes={k: len(v) for k, v in splits.items()}, val_per_class=val_per_class, train_size=train_size,
                seed=cfg.seed, preprocess={k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
                augment="timm create_transform(is_training=True)" if augment else "none")
    return TaskData(**splits, collate=StackCollate(), info=info)


def _from_folder(cfg: TaskConfig, folder: Path | None, origin: str, val_per_class: int, train_size: int | None,
                 tf_train: Callable, tf_test: Callable) -> tuple[dict[str, Dataset], dict[str, Any]]:
    if folder is None:
        raise FileNotFoundError(f"task {cfg.name!r}: no ImageNet folder: set data.args.root or ${IMAGENET_ENV} "
                                "to a folder holding train/ and val/ class folders (or use source: hub)")
    for split in ("train", "val"):
        if not (folder / split).is_dir():
            raise FileNotFoundError(f"task {cfg.name!r}: {folder / split} does not exist (root from {origin}); "
                                    f"{IMAGENET_ENV} must hold train/ and val/ with one folder per class")
    classes, files, labels = scan_folder(str(folder / "train"))
    val_classes, val_files, val_labels = scan_folder(str(folder / "val"))
    if len(classes) != cfg.num_classes:
        raise ValueError(f"task {cfg.name!r}: {folder / 'train'} holds {len(classes)} class folders but "
                         f"num_classes={cfg.num_classes}")
    if val_classes != classes:
        why = FLAT_VAL_HINT if not val_classes else f"{len(set(val_classes) ^ set(classes))} class folder(s) differ"
        raise ValueError(f"task {cfg.name!r}: {folder / 'val'} must hold the same class folders as train/: {why}")
    keep, held = holdout_per_class(labels, val_per_class, cfg.seed)
    keep = _subset(keep, train_size, cfg.seed)
    splits = {"train": ImageFiles(folder / "train", [files[i] for i in keep], labels[keep], tf_train),
              "val": ImageFiles(folder / "train", [files[i] for i in held], labels[held], tf_test),
              "test": ImageFiles(folder / "val", list(val_files), val_labels, tf_test)}
    info = {"source": "folder", "path": str(folder), "root_from": origin, "num_classes": len(classes),
            "classes": [classes[0], "...", classes[-1]],
            "fingerprint": _listing_fingerprint(classes, files, labels, val_files, val_labels)}
    return splits, info


def _from_hub(cfg: TaskConfig, hub_id: str, val_per_class: int, train_size: int | None, tf_train: Callable,
              tf_test: Callable, cache_dir: str | None) -> tuple[dict[str, Dataset], dict[str, Any]]:
    from slimbench.tasks.hub import _require_datasets

    datasets = _require_datasets()
    try:
        train = datasets.load_dataset(hub_id, split="train", cache_dir=cache_dir)
        test = datasets.load_dataset(hub_id, split="validation", cache_dir=cache_dir)
    except Exception as exc:  # offline, gated without a token, not prepared yet
        raise FileNotFoundError(
            f"task {cfg.name!r}: ImageNet is not available: no folder configured (data.args.root or "
            f"${IMAGENET_ENV}) and loading {hub_id!r} from the hub failed ({type(exc).__name__}: {exc}). It is "
            "gated: accept its terms on the hub and set HF_TOKEN, or give a local folder.") from exc
    labels = np.asarray(train["label"], dtype=np.int64)
    n_classes = len(np.unique(labels))
    if n_classes != cfg.num_classes:
        raise ValueError(f"task {cfg.name!r}: {hub_id} train has {n_classes} classes but num_classes={cfg.num_classes}")
    keep, held = holdout_per_class(labels, val_per_class, cfg.seed)
    keep = _subset(keep, train_size, cfg.seed)
    label = LabelMap(cfg.num_classes, None, "label")
    splits = {"train": HFItems(train.select(keep.tolist()), RowTransform(ImageInput("image", tf_train), label)),
              "val": HFItems(train.select(held.tolist()), RowTransform(ImageInput("image", tf_test), label)),
              "test": HFItems(test, RowTransform(ImageInput("image", tf_test), label))}
    info = {"source": "hub", "path": hub_id, "num_classes": n_classes,
            "fingerprint": "-".join(getattr(d, "_fingerprint", "?") for d in (train, test))}
    return splits, info
