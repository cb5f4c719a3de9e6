"""Vision tasks: Fashion-MNIST read from its IDX files (or the HF hub copy) and a generic timm classifier.

The IDX files ship in the Debian package `dataset-fashion-mnist`, so the standard 60k/10k split
works offline; users without it fall back to the `datasets` copy on the hub (same split, same data).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import math
import struct
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from slimbench.tasks.base import TaskConfig, TaskData

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HUB = "zalando-datasets/fashion_mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530  # train-split pixel statistics in [0, 1]
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------- data

def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (raw or gzip): two zero bytes, a dtype code, ndim, big-endian uint32 dims."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        buf = bytearray(fh.read())  # writable, so torch.from_numpy shares it without a warning
    if len(buf) < 4 or buf[0] or buf[1] or buf[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {bytes(buf[:4]).hex()})")
    ndim = buf[3]
    dims = struct.unpack(f">{ndim}I", bytes(buf[4:4 + 4 * ndim]))
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    count = math.prod(dims)
    offset = 4 + 4 * ndim
    if len(buf) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {dims} but holds {len(buf) - offset} bytes of data")
    return np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(dims)


def _idx_path(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


@functools.lru_cache(maxsize=4)
def _idx_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N,28,28], labels int64 [N]); cached so every profile shares one parse."""
    img_stem, lbl_stem = _IDX_FILES[split]
    images = read_idx(_idx_path(Path(root), img_stem))  # type: ignore[arg-type]
    labels = read_idx(_idx_path(Path(root), lbl_stem)).astype(np.int64)  # type: ignore[arg-type]
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{root}: {split} images {images.shape} do not match labels {labels.shape}")
    return images, labels


def _has_idx(root: Path) -> bool:
    return all(_idx_path(root, stem) is not None for files in _IDX_FILES.values() for stem in files)


class _ImageSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> torch.Tensor: ...


class _HubImages:
    """Lazy view of a hub split's PIL images as uint8 [H,W] tensors (decoded per item)."""

    def __init__(self, ds: Any, column: str = "image"):
        self.ds, self.column = ds, column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.ds[int(i)][self.column].convert("L"), dtype=np.uint8))


class GrayImages(Dataset):
    """Map-style grayscale images as uint8 [1,H,W]; normalization is batched in the collate.

    The random horizontal flip draws from torch's global RNG, which `Trainer.fit` seeds, so a
    baseline trains identically for a given seed (the DataLoader runs in-process).
    """

    def __init__(self, images: _ImageSource | torch.Tensor, labels: torch.Tensor, flip: bool = False):
        self.images, self.labels, self.flip = images, labels, flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img.unsqueeze(0), int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Batched fetch (the DataLoader prefers it): one gather and one flip per batch, not per item."""
        if not isinstance(self.images, torch.Tensor):
            return [self[i] for i in indices]
        idx = torch.as_tensor(indices, dtype=torch.long)
        imgs = self.images[idx]
        if self.flip:
            flip = torch.rand(len(indices)) < 0.5
            imgs = torch.where(flip[:, None, None], imgs.flip(-1), imgs)
        return list(zip(imgs.unsqueeze(1).unbind(0), self.labels[idx].tolist()))


class NormalizeCollate:
    """Stacks uint8 images and normalizes them in one batched op -> ({pixel_values}, labels)."""

    def __init__(self, mean: float, std: float):
        self.mean, self.std = mean, std

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x = torch.stack([img for img, _ in items]).float().div_(255.0).sub_(self.mean).div_(self.std)
        return {"pixel_values": x}, torch.tensor([y for _, y in items], dtype=torch.long)


def _subset_indices(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """A seeded, sorted subset of range(n), so the reduced training set is fixed by the YAML."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def _fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def split_train_val(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of range(n): `val_size` held out by a seeded permutation, both sorted."""
    if not 0 < val_size < n:
        raise ValueError(f"val_size={val_size} must be between 1 and {n - 1} (the training split has {n} items)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def fashion_mnist(cfg: TaskConfig, root: str = FASHION_MNIST_DIR, source: str = "auto",
                  train_size: int | None = None, val_size: int = 5000, flip: bool = True,
                  hub_id: str = FASHION_MNIST_HUB) -> TaskData:
    """Fashion-MNIST: the standard 60k/10k split, with a validation split held out of the 60k.

    Args:
        source: `idx` (the IDX gzip files in `root`), `hub` (`datasets.load_dataset(hub_id)`),
            or `auto` (idx when the files exist, else hub).
        train_size: train on a seeded (cfg.seed) subset of this many of the remaining training images.
        val_size: training images held out (seeded by cfg.seed) as the validation split.
        flip: random horizontal flip (p=0.5) on the train split only.
    """
    rootp = Path(root)
    if source not in ("auto", "idx", "hub"):
        raise ValueError(f"source={source!r}; choose auto, idx or hub")
    use_idx = source == "idx" or (source == "auto" and _has_idx(rootp))
    if use_idx:
        if not _has_idx(rootp):
            raise FileNotFoundError(f"Fashion-MNIST IDX files not found in {rootp} "
                                    "(apt-get install dataset-fashion-mnist)")
        splits: dict[str, tuple[Any, torch.Tensor]] = {}
        fp = []
        for split in ("train", "test"):
            images, labels = _idx_split(str(rootp), split)
            fp.append(_fingerprint(images, labels))
            if split == "train":
                keep, held = split_train_val(len(labels), val_size, cfg.seed)
                splits["val"] = (torch.from_numpy(images[held]), torch.from_numpy(labels[held]))
                images, labels = images[keep], labels[keep]
                idx = _subset_indices(len(labels), train_size, cfg.seed)
                if idx is not None:
                    images, labels = images[idx], labels[idx]
            splits[split] = (torch.from_numpy(images), torch.from_numpy(labels))
        provenance = {"source": "idx", "path": str(rootp), "fingerprint": "-".join(fp)}
    else:
        splits, provenance = _fashion_from_hub(cfg, rootp, hub_id, train_size, val_size)
    train_imgs, train_lbl = splits["train"]
    val_imgs, val_lbl = splits["val"]
    test_imgs, test_lbl = splits["test"]
    info = {
        **provenance,
        "split": f"standard Fashion-MNIST train/test (60k/10k); val: {val_size} of the 60k held out (seed {cfg.seed})",
        "sizes": {"train": len(train_lbl), "val": len(val_lbl), "test": len(test_lbl)},
        "train_size": train_size, "val_size": val_size, "seed": cfg.seed,
        "class_balance": {s: torch.bincount(lbl, minlength=cfg.num_classes).tolist()
                          for s, (_, lbl) in splits.items()},
        "classes": list(FASHION_MNIST_CLASSES),
        "normalize": {"mean": FASHION_MNIST_MEAN, "std": FASHION_MNIST_STD},
        "augment": "random horizontal flip p=0.5 (train only)" if flip else "none",
    }
    return TaskData(train=GrayImages(train_imgs, train_lbl, flip=flip),
                    val=GrayImages(val_imgs, val_lbl, flip=False),
                    test=GrayImages(test_imgs, test_lbl, flip=False),
                    collate=NormalizeCollate(FASHION_MNIST_MEAN, FASHION_MNIST_STD), info=info)


def _fashion_from_hub(cfg: TaskConfig, root: Path, hub_id: str, train_size: int | None, val_size: int
                      ) -> tuple[dict[str, tuple[Any, torch.Tensor]], dict[str, Any]]:
    if importlib.util.find_spec("datasets") is None:
        raise FileNotFoundError(
            f"Fashion-MNIST is not available: no IDX files in {root} (apt-get install "
            f"dataset-fashion-mnist) and the optional `datasets` package for the hub copy {hub_id!r} "
            "is not installed (pip install 'slimbench[datasets]').")
    import datasets

    try:
        dd = datasets.load_dataset(hub_id)
    except Exception as exc:  # offline, missing repo, ...
        raise FileNotFoundError(
            f"Fashion-MNIST is not available: no IDX files in {root} and loading {hub_id!r} "
            f"from the Hugging Face hub failed ({type(exc).__name__}: {exc})") from exc
    splits: dict[str, tuple[Any, torch.Tensor]] = {}
    for split in ("train", "test"):
        ds = dd[split]
        if split == "train":
            keep, held = split_train_val(len(ds), val_size, cfg.seed)
            val = ds.select(held.tolist())
            splits["val"] = (_HubImages(val), torch.tensor(val["label"], dtype=torch.long))
            ds = ds.select(keep.tolist())
            idx = _subset_indices(len(ds), train_size, cfg.seed)
            if idx is not None:
                ds = ds.select(idx.tolist())
        splits[split] = (_HubImages(ds), torch.tensor(ds["label"], dtype=torch.long))
    return splits, {"source": "hub", "path": hub_id,
                    "fingerprint": "-".join(getattr(dd[s], "_fingerprint", "?") for s in ("train", "test"))}


# --------------------------------------------------------------------------- model

def _contiguous_state(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """channels_last weights are not `is_contiguous()`; artifacts (safetensors) need them packed."""
    for k, v in state_dict.items():
        if k.startswith(prefix) and isinstance(v, torch.Tensor) and not v.is_contiguous():
            state_dict[k] = v.contiguous()


class TimmClassifier(nn.Module):
    """A timm model behind the suite's `forward(pixel_values) -> logits` contract.

    With `channels_last` the conv weights and inputs use NHWC, 15-25% faster for ResNets on CPU;
    `state_dict()` still returns contiguous tensors. Code that reshapes conv weights should use
    `.reshape`/`.flatten`, not `.view`.
    """

    def __init__(self, net: nn.Module, channels_last: bool = False):
        super().__init__()
        self.net = net
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
            self.register_state_dict_post_hook(_contiguous_state)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.channels_last and pixel_values.dim() == 4:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        return self.net(pixel_values)


def timm_classifier(cfg: TaskConfig, name: str, pretrained: bool = False, channels_last: bool = False,
                    **kwargs: Any) -> TimmClassifier:
    """`timm.create_model(name, num_classes=cfg.num_classes, **kwargs)`, initialized from cfg.seed.

    The init is seeded inside a forked RNG so building twice gives the same weights without
    disturbing the caller's random state. `pretrained=True` needs hub access.
    """
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        try:
            net = timm.create_model(name, pretrained=pretrained, num_classes=cfg.num_classes, **kwargs)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise ValueError(f"task {cfg.name!r}: timm {timm.__version__} has no model {name!r}") from exc
            raise
        except OSError as exc:
            raise OSError(f"task {cfg.name!r}: could not fetch pretrained weights for {name!r} "
                          f"(offline? set pretrained: false): {exc}") from exc
    return TimmClassifier(net, channels_last=channels_last)
