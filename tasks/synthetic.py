"""A tiny synthetic task: Gaussian blobs and an MLP. Seconds to train, no data files.

It is the harness's own test double (like a dummy model in an evaluation harness): conformance
tests run every registered method on it, and plugin authors can smoke-test against it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from slimbench.tasks.base import TaskConfig, TaskData


class _Blobs(Dataset):
    def __init__(self, centers: torch.Tensor, n: int, noise: float, seed: int):
        g = torch.Generator().manual_seed(seed)
        k, d = centers.shape
        self.y = torch.randint(0, k, (n,), generator=g)
        self.x = centers[self.y] + noise * torch.randn(n, d, generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def _collate(items: list[tuple[torch.Tensor, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    xs, ys = zip(*items)
    return {"features": torch.stack(xs)}, torch.tensor(ys, dtype=torch.long)


def load_blobs(cfg: TaskConfig, features: int = 32, train_size: int = 2048, test_size: int = 512,
               noise: float = 1.0) -> TaskData:
    """Class centers from the task seed; train and test drawn independently."""
    g = torch.Generator().manual_seed(cfg.seed)
    centers = 2.0 * torch.randn(cfg.num_classes, features, generator=g)
    return TaskData(train=_Blobs(centers, train_size, noise, cfg.seed + 1),
                    test=_Blobs(centers, test_size, noise, cfg.seed + 2), collate=_collate,
                    info={"train": train_size, "test": test_size, "features": features})


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
    torch.manual_seed(cfg.seed)
    return MLP(features, tuple(hidden), cfg.num_classes)
