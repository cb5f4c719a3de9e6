"""Tiny synthetic tasks: seconds to train, no data files, real layer types.

They are the harness's own test doubles (like a dummy model in an evaluation harness):
conformance tests run every registered method on them, and plugin authors can smoke-test
against them. Three of them cover the layer kinds methods must handle:
- `load_blobs` + `mlp`: Gaussian blobs and an MLP (Linear + ReLU);
- `load_images` + a timm CNN (`vision.timm_classifier`): Conv2d, BatchNorm, residual additions;
- `load_tokens` + `hf_tiny`: a small BERT from `transformers` (embeddings, attention, LayerNorm),
  built from a config, so nothing is downloaded.
Every loader returns train, validation and test splits drawn independently from the task seed.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from slimbench.tasks.base import TaskConfig, TaskData


class _Pairs(Dataset):
    """(x, y) pairs held as two tensors."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def _blobs(centers: torch.Tensor, n: int, noise: float, seed: int) -> _Pairs:
    g = torch.Generator().manual_seed(seed)
    k = centers.shape[0]
    y = torch.randint(0, k, (n,), generator=g)
    return _Pairs(centers[y] + noise * torch.randn(n, *centers.shape[1:], generator=g), y)


class _Collate:
    """Stacks items under one input name -> ({name: x}, labels)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        xs, ys = zip(*items)
        return {self.name: torch.stack(xs)}, torch.tensor(ys, dtype=torch.long)


def _three_splits(make, train_size: int, val_size: int, test_size: int, seed: int) -> dict[str, Dataset]:
    return {"train": make(train_size, seed + 1), "val": make(val_size, seed + 3), "test": make(test_size, seed + 2)}


def load_blobs(cfg: TaskConfig, features: int = 32, train_size: int = 2048, val_size: int = 256,
               test_size: int = 512, noise: float = 1.0) -> TaskData:
    """Class centers from the task seed; train, validation and test drawn independently."""
    g = torch.Generator().manual_seed(cfg.seed)
    centers = 2.0 * torch.randn(cfg.num_classes, features, generator=g)
    splits = _three_splits(lambda n, s: _blobs(centers, n, noise, s), train_size, val_size, test_size, cfg.seed)
    return TaskData(**splits, collate=_Collate("features"),
                    info={"sizes": {k: len(v) for k, v in splits.items()}, "features": features})


def load_images(cfg: TaskConfig, channels: int = 1, size: int = 16, train_size: int = 512, val_size: int = 128,
                test_size: int = 128, noise: float = 1.0) -> TaskData:
    """One smooth random pattern per class (from the task seed) plus pixel noise, `[C, size, size]`."""
    g = torch.Generator().manual_seed(cfg.seed)
    coarse = torch.randn(cfg.num_classes, channels, 4, 4, generator=g)
    patterns = nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    splits = _three_splits(lambda n, s: _blobs(patterns, n, noise, s), train_size, val_size, test_size, cfg.seed)
    return TaskData(**splits, collate=_Collate("pixel_values"),
                    info={"sizes": {k: len(v) for k, v in splits.items()}, "shape": [channels, size, size]})


class _Tokens(Dataset):
    """Token sequences of random length; the label is the class whose marker token occurs most.

    Tokens 0 and 1 are padding and [CLS]; markers are tokens 2..2+classes; the rest is filler."""

    def __init__(self, n: int, classes: int, vocab: int, min_len: int, max_len: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            length = int(torch.randint(min_len, max_len + 1, (), generator=g))
            y = int(torch.randint(0, classes, (), generator=g))
            seq = torch.randint(2 + classes, vocab, (length,), generator=g)
            marks = torch.randperm(length - 1, generator=g)[:3] + 1
            seq[marks] = 2 + y
            seq[0] = 1
            self.items.append((seq, y))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.items[i]


def _pad_collate(items: list[tuple[torch.Tensor, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Right-pads to the longest sequence -> ({input_ids, attention_mask}, labels)."""
    longest = max(len(s) for s, _ in items)
    ids = torch.zeros(len(items), longest, dtype=torch.long)
    mask = torch.zeros(len(items), longest, dtype=torch.long)
    for i, (s, _) in enumerate(items):
        ids[i, :len(s)], mask[i, :len(s)] = s, 1
    return {"input_ids": ids, "attention_mask": mask}, torch.tensor([y for _, y in items], dtype=torch.long)


def load_tokens(cfg: TaskConfig, vocab_size: int = 64, min_len: int = 6, max_len: int = 16,
                train_size: int = 512, val_size: int = 128, test_size: int = 128) -> TaskData:
    """Synthetic token classification with dynamic padding (exercises attention masks)."""
    splits = _three_splits(lambda n, s: _Tokens(n, cfg.num_classes, vocab_size, min_len, max_len, s),
                           train_size, val_size, test_size, cfg.seed)
    return TaskData(**splits, collate=_pad_collate,
                    info={"sizes": {k: len(v) for k, v in splits.items()}, "vocab_size": vocab_size})


class MLP(nn.Module):
    """`forward(features) -> logits`; hidden layers are Linear + ReLU."""

    def __init__(self, features: int, hidden: tuple[int, ...], num_classes: int):
        super().__init__()
        dims = (features, *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def mlp(cfg: TaskConfig, features: int = 32, hidden: Any = (64, 64)) -> nn.Module:
    """An MLP initialised from the task seed (in a forked RNG: the caller's stream is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return MLP(features, tuple(hidden), cfg.num_classes)


def hf_tiny(cfg: TaskConfig, model_type: str = "bert", **config: Any) -> nn.Module:
    """A small transformers sequence classifier built from a config (no download), seeded.

    `config` holds the `transformers` config fields (hidden_size, num_hidden_layers, ...), which
    is also how a student or search child of another shape is built."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from slimbench.tasks.text import HFClassifier

    hf_cfg = AutoConfig.for_model(model_type, num_labels=cfg.num_classes, **config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = AutoModelForSequenceClassification.from_config(hf_cfg, attn_implementation="eager")
    return HFClassifier(model.eval())
