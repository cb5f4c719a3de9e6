"""Streaming quality metrics: classification accuracy from per-class counts, or a causal LM's
perplexity from summed token log-likelihoods; never all logits at once.

`balanced_accuracy` is the mean per-class recall over the classes that occur in the
labels (classes never seen as a true label are left out, as in scikit-learn), so a model
cannot look good on an imbalanced set by predicting the majority class.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a plain tensor, a Hugging Face output (`.logits`) or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in model output of type {type(output).__name__}")


def evaluate(model: nn.Module,
             batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]],
             device: torch.device | str,
             progress: Callable[[int], Any] | None = None, metric: str = "accuracy") -> dict[str, float | int]:
    """The task's metric of `model(**inputs)` over `batches`: `accuracy` (with balanced accuracy and
    the item count `n`) or `perplexity` (see `perplexity`).

    The model runs in eval mode under `torch.inference_mode` (its training flag is
    restored after). `progress(n)` is called with the number of items in each batch.
    """
    if metric == "perplexity":
        return perplexity(model, batches, device, progress)
    if metric != "accuracy":
        raise ValueError(f"unknown metric {metric!r}; choose accuracy or perplexity")
    correct = torch.zeros(0, dtype=torch.long)  # per true class
    support = torch.zeros(0, dtype=torch.long)
    with _evaluating(model):
        for logits, labels in _outputs(model, batches, device):
            pred = logits.argmax(dim=-1).cpu().reshape(-1)
            labels = labels.cpu().reshape(-1).long()
            if pred.shape != labels.shape:
                raise ValueError(f"{pred.numel()} predictions for {labels.numel()} labels")
            size = max(logits.shape[-1], int(labels.max()) + 1 if labels.numel() else 0, support.numel())
            correct = _grow(correct, size) + torch.bincount(labels[pred == labels], minlength=size)
            support = _grow(support, size) + torch.bincount(labels, minlength=size)
            if progress is not None:
                progress(labels.numel())
    n = int(support.sum())
    if n == 0:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan"), "n": 0}
    seen = support > 0
    recall = correct[seen].double() / support[seen].double()
    return {"accuracy": int(correct.sum()) / n, "balanced_accuracy": float(recall.mean()), "n": n}


def perplexity(model: nn.Module, batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]],
               device: torch.device | str, progress: Callable[[int], Any] | None = None) -> dict[str, float | int]:
    """exp(mean next-token NLL) over every labelled token (labels of -100 are not predicted), with
    the mean NLL (`nll`, nats), top-1 `token_accuracy`, `tokens` and windows `n`.

    The NLL is summed in float64 over all tokens, then divided once: windows of equal length give
    the GPTQ papers' figure (mean of per-window means x length, over windows x length)."""
    import torch.nn.functional as F

    nll, tokens, correct, windows = 0.0, 0, 0, 0
    with _evaluating(model):
        for logits, labels in _outputs(model, batches, device):
            logits = logits.float()
            labels = labels.to(logits.device).long()
            if logits.shape[:-1] != labels.shape:
                raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
            flat, target = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
            keep = target != -100
            nll += float(F.cross_entropy(flat[keep], target[keep], reduction="sum").double())
            correct += int((flat[keep].argmax(-1) == target[keep]).sum())
            tokens += int(keep.sum())
            windows += labels.shape[0]
            if progress is not None:
                progress(labels.shape[0])
    if tokens == 0:
        return {"perplexity": float("nan"), "nll": float("nan"), "token_accuracy": float("nan"), "tokens": 0,
                "n": windows}
    mean = nll / tokens
    return {"perplexity": math.exp(mean), "nll": mean, "token_accuracy": correct / tokens, "tokens": tokens,
            "n": windows}


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode under `torch.inference_mode`; the model's training flag is restored after, error or not."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _outputs(model: nn.Module, batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]],
             device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) of each batch, its inputs moved to `device`."""
    device = torch.device(device)
    for inputs, labels in batches:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        yield logits_of(model(**moved)), labels


def _grow(counts: torch.Tensor, size: int) -> torch.Tensor:
    if counts.numel() >= size:
        return counts
    return torch.cat([counts, counts.new_zeros(size - counts.numel())])
