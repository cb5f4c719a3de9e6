"""Progressive quantization (torch side of `quant.progressive`): bit-widths descend in stages.

Chosen over layer-group staging because every stage keeps the whole network under the same
quantizer, so the only thing a stage changes is the bit-width, and the layers, checks,
conversion and restore are exactly those of `quant.qat`. Lowering the bits gradually lets the
weights adapt to a coarse grid in steps rather than all at once.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from torch import nn

from slimbench.methods.quant.qat import convert, endless, fake_layers, prepare, train

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.quant.configs import MinMaxConfig


def stage_steps(budget: int, stages: int) -> list[int]:
    """budget // stages per stage, the remainder going to the last (lowest-bit) stage."""
    base = budget // stages
    return [base] * (stages - 1) + [budget - base * (stages - 1)]


def compress_progressive(model: nn.Module, ctx: "CompressionContext", cfg: "MinMaxConfig",
                         schedule: tuple[int, ...], owner: str) -> nn.Module:
    """quant.progressive: fake-quant at schedule[0], then lower the bits stage by stage.

    Each stage trains on its share of the budget; between stages each layer's steps are
    rescaled so its learned clipping range (step * qmax) carries over to the lower bit-width.
    The batch stream continues across stages rather than restarting."""
    prepare(model, dataclasses.replace(cfg, bits=schedule[0]), owner)
    stream = endless(ctx.train_batches)
    for k, (bits, steps) in enumerate(zip(schedule, stage_steps(ctx.budget_steps, len(schedule)))):
        if k:
            for layer in fake_layers(model):
                layer.set_bits(bits)
        train(model, ctx, steps, stream, desc=f"{owner} stage {k + 1}/{len(schedule)} {bits}-bit")
    return convert(model)
