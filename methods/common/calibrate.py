"""Calibration passes shared by every family: one forward sweep over the task's calibration
set (for hooks that observe activations), and BatchNorm statistics re-estimation."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext


def calibration_pass(model: nn.Module, ctx: "CompressionContext", owner: str, purpose: str,
                     reached: Callable[[], list[str]] = lambda: [], train_modules: Iterable[nn.Module] = ()) -> int:
    """Run the calibration batches through `model` once (eval, no grad) so hooks the caller
    installed can observe activations; `train_modules` run in train mode meanwhile. Raises if
    there was no data, or if `reached()` lists layers the calibration never reached. Returns the
    batch count."""
    was_training, batches = model.training, 0
    model.eval()
    for m in train_modules:
        m.train()
    try:
        with torch.no_grad():
            for inputs, _ in ctx.calibration():
                model(**{k: v.to(ctx.device) for k, v in inputs.items()})
                batches += 1
    finally:
        model.train(was_training)
    if batches == 0:
        raise ValueError(f"{owner}: {purpose} needs calibration data, but the calibration set yielded no batches")
    unseen = reached()
    if unseen:
        raise ValueError(f"{owner}: calibration never reached layer(s) {', '.join(unseen)}; "
                         "skip them or check the model's forward")
    return batches


def recalibrate_batchnorm(model: nn.Module, ctx: "CompressionContext", owner: str) -> int:
    """Re-estimate every BatchNorm's running mean/variance on the calibration set.

    Why: compressed weights shift each conv's output distribution, and the BatchNorm after it
    keeps normalizing with the fp32 model's statistics. A forward pass over calibration data
    with fresh cumulative statistics (momentum None) fixes that without training a single
    weight. Only BatchNorm layers run in train mode (dropout stays off). Returns the number
    of layers re-estimated (0 for a model without BatchNorm: nothing to do)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all calibration batches
    try:
        calibration_pass(model, ctx, owner, "recalibrate_bn", train_modules=bns)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
    return len(bns)
