"""The one trainer: baseline training, fine-tuning after compression, QAT, distillation, NAS proxies.

Every method that trains calls `fit` with a budget in optimizer steps, so the fine-tuning budget
a task grants is the same for every method, and there is a single training loop to trust. The
loss, the optimizer's parameter groups and two hooks are the extension points: a distillation
loss, per-group learning rates, gradient masking or a sparsity penalty between backward and
step, re-applying masks after it. The trainer a method gets from its context is a `BudgetedTrainer`:
it books every `fit`'s steps on the run's `StepLedger` before training, so no method can train
longer than its budget, and the run records what was used.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from slimbench.core.recipe import FINETUNE, StepLedger, TrainRecipe
from slimbench.suite.progress import ProgressConfig, bar

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

Batch = tuple[dict, "torch.Tensor"]
# loss(model, inputs, logits, labels) -> scalar tensor
LossFn = Callable[["nn.Module", dict, "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
# hook(model, step): before_step runs after backward (gradients present), after_step after the update
Hook = Callable[["nn.Module", int], None]


@dataclass
class FitResult:
    steps: int
    seconds: float
    final_loss: float | None
    losses: list[float] = field(default_factory=list, repr=False)


def cross_entropy(model: "nn.Module", inputs: dict, logits: "torch.Tensor", labels: "torch.Tensor") -> "torch.Tensor":
    """The default loss: cross-entropy of the logits against the labels. Per-token logits
    `[batch, tokens, vocab]` (a causal LM) are flattened; labels of -100 are ignored."""
    import torch.nn.functional as F
    if logits.dim() > 2:
        logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    return F.cross_entropy(logits, labels, ignore_index=-100)


def lr_lambda(recipe: TrainRecipe) -> Callable[[int], float]:
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


def make_optimizer(recipe: TrainRecipe, groups: list[dict[str, Any]]):
    """`recipe.optimizer` over parameter groups; a group's own lr / weight_decay override the recipe's."""
    import torch

    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=recipe.lr, weight_decay=recipe.weight_decay)


@dataclass
class Trainer:
    """Trains `model(**inputs) -> logits` for exactly `recipe.steps` optimizer steps."""

    device: "torch.device | str" = "cpu"
    progress: ProgressConfig = field(default_factory=ProgressConfig)

    def fit(self, model: "nn.Module", batches: Iterable[Batch], recipe: TrainRecipe, seed: int, *,
            loss: LossFn | None = None, params: Iterable["torch.nn.Parameter"] | None = None,
            param_groups: list[dict[str, Any]] | None = None, before_step: Hook | None = None,
            after_step: Hook | None = None, desc: str = "train", account: str = FINETUNE) -> FitResult:
        """Train in place.

        Args:
            batches: a (possibly endless) stream of `(inputs, labels)`; it is cycled if it ends.
            recipe: steps, schedule, optimizer (`adamw`, `adam`, `sgd`), lr, weight decay, clipping.
            loss: `loss(model, inputs, logits, labels) -> scalar` (default: cross-entropy).
            params: what to optimize (default: every parameter that requires grad).
            param_groups: optimizer groups (`{"params": [...], "lr": ..., ...}`), instead of `params`.
            before_step: called after backward, before the update (mask gradients, add penalties' subgradients).
            after_step: called after each update, under no_grad (re-apply masks, progressive stages).
            account: the budget these steps are charged to (`finetune`, or `search` for proxies).
        """
        import torch

        if recipe.steps == 0:
            return FitResult(0, 0.0, None)
        torch.manual_seed(seed)
        device = torch.device(self.device)
        model.to(device).train()
        if param_groups is not None and params is not None:
            raise ValueError("give params or param_groups, not both")
        if param_groups is None:
            param_groups = [{"params": list(params if params is not None else model.parameters())}]
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in param_groups]
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("nothing to train: no parameter requires grad")
        trainable = [p for g in groups for p in g["params"]]
        opt = make_optimizer(recipe, groups)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(recipe))
        loss_fn = loss or cross_entropy
        stream = _cycle(batches)
        losses: list[float] = []
        start = time.perf_counter()
        with bar(desc, recipe.steps, self.progress, unit="step") as update:
            for step in range(recipe.steps):
                inputs, labels = to_device(*next(stream), device)
                logits = model(**inputs)
                value = loss_fn(model, inputs, logits, labels)
                opt.zero_grad(set_to_none=True)
                value.backward()
                if before_step is not None:
                    before_step(model, step)
                if recipe.grad_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, recipe.grad_clip)
                opt.step()
                sched.step()
                if after_step is not None:
                    with torch.no_grad():
                        after_step(model, step)
                losses.append(float(value.detach()))
                update(1)
        model.eval()
        return FitResult(recipe.steps, time.perf_counter() - start, losses[-1], losses)


class BudgetedTrainer:
    """The trainer a method gets: each `fit` is charged to the run's ledger before it trains."""

    def __init__(self, trainer: Trainer, ledger: StepLedger):
        self._trainer, self._ledger = trainer, ledger

    def with_ledger(self, ledger: StepLedger) -> "BudgetedTrainer":
        """The same trainer charging another ledger (a pipeline stage's share of the budget)."""
        return BudgetedTrainer(self._trainer, ledger)

    def fit(self, model: "nn.Module", batches: Iterable[Batch], recipe: TrainRecipe, seed: int,
            **kwargs: Any) -> FitResult:
        self._ledger.charge(recipe.steps, kwargs.get("account", FINETUNE))
        return self._trainer.fit(model, batches, recipe, seed, **kwargs)


def _cycle(batches: Iterable[Batch]) -> Iterator[Batch]:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("the training data is empty")
