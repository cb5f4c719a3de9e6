"""The one trainer: baseline training, fine-tuning after pruning, QAT, distillation, NAS proxies.

Every method that trains calls `Trainer.fit` with a budget in optimizer steps, so the fine-tuning
budget a task grants is the same for every method, and there is a single training loop to trust.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from slimbench.suite.progress import ProgressConfig, bar

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn
    from slimbench.tasks.base import TrainRecipe

Batch = tuple[dict, "torch.Tensor"]
# extra_loss(model, inputs, logits, labels) -> scalar added to (task_weight * cross-entropy)
ExtraLoss = Callable[["nn.Module", dict, "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass
class FitResult:
    steps: int
    seconds: float
    final_loss: float | None
    losses: list[float] = field(default_factory=list, repr=False)


def lr_lambda(recipe: "TrainRecipe") -> Callable[[int], float]:
    """Warm-up then cosine / linear decay / constant, as a multiplier of the peak lr."""
    warm = int(recipe.warmup * recipe.steps)
    total = max(recipe.steps, 1)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if recipe.schedule == "constant":
            return 1.0
        t = (step - warm) / max(total - warm, 1)
        return 0.5 * (1 + math.cos(math.pi * t)) if recipe.schedule == "cosine" else max(0.0, 1 - t)
    return f


def to_device(inputs: dict, labels: "torch.Tensor", device: "torch.device") -> tuple[dict, "torch.Tensor"]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}, labels.to(device, non_blocking=True)


@dataclass
class Trainer:
    """Trains `model(**inputs) -> logits` with AdamW for exactly `recipe.steps` steps."""

    device: "torch.device | str" = "cpu"
    progress: ProgressConfig = field(default_factory=ProgressConfig)

    def fit(self, model: "nn.Module", batches: Iterable[Batch], recipe: "TrainRecipe", seed: int, *,
            extra_loss: ExtraLoss | None = None, task_weight: float = 1.0,
            params: Iterable["torch.nn.Parameter"] | None = None,
            after_step: Callable[["nn.Module", int], None] | None = None,
            desc: str = "train") -> FitResult:
        """Train in place.

        Args:
            batches: a (possibly endless) stream of `(inputs, labels)`; it is cycled if it ends.
            extra_loss: added to the task loss (distillation KL, L1 sparsity, ...).
            task_weight: weight of the cross-entropy label loss (0 disables it).
            params: what to optimize (default: every parameter that requires grad).
            after_step: called after each optimizer step (re-apply masks, progressive stages).
        """
        import torch
        import torch.nn.functional as F

        if recipe.steps == 0:
            return FitResult(0, 0.0, None)
        torch.manual_seed(seed)
        device = torch.device(self.device)
        model.to(device).train()
        trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
        if not trainable:
            raise ValueError("nothing to train: no parameter requires grad")
        opt = torch.optim.AdamW(trainable, lr=recipe.lr, weight_decay=recipe.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(recipe))
        stream = _cycle(batches)
        losses: list[float] = []
        start = time.perf_counter()
        with bar(desc, recipe.steps, self.progress, unit="step") as update:
            for step in range(recipe.steps):
                inputs, labels = to_device(*next(stream), device)
                logits = model(**inputs)
                loss = task_weight * F.cross_entropy(logits, labels) if task_weight else logits.new_zeros(())
                if extra_loss is not None:
                    loss = loss + extra_loss(model, inputs, logits, labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.grad_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, recipe.grad_clip)
                opt.step()
                sched.step()
                if after_step is not None:
                    with torch.no_grad():
                        after_step(model, step)
                losses.append(float(loss.detach()))
                update(1)
        model.eval()
        return FitResult(recipe.steps, time.perf_counter() - start, losses[-1], losses)


def _cycle(batches: Iterable[Batch]) -> Iterator[Batch]:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("the training data is empty")
