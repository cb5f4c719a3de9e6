"""Quantization-aware training: the torch side of `quant.qat` (and the pieces `progressive` reuses).

The flow is: swap eligible layers for fake-quant wrappers (`fakequant`), train with the one
shared trainer (`ctx.trainer.fit`), then convert every wrapper to the packed `QuantLinear` /
`QuantConv2d` that `quant.minmax` uses. Restore is therefore minmax's (empty twins plus
`load_state_dict`), driven by an equivalent `MinMaxConfig` (symmetric, the final bit-width).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from torch import nn

from slimbench.methods.common.layers import WEIGHT_LAYERS, fan_in, fan_in_name, swap_named, targets
from slimbench.methods.common.options import require_divides
from slimbench.methods.quant.fakequant import FakeQuantLinear, to_packed, wrap
from slimbench.methods.quant.linear import granularity_for

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.quant.configs import MinMaxConfig


def prepare(model: nn.Module, cfg: "MinMaxConfig", owner: str) -> list[str]:
    """Swap eligible Linear / Conv2d layers for fake-quant wrappers at `cfg.bits`.

    Group sizes are checked first with the same errors quant.minmax raises, so a bad config
    fails before any training time is spent."""
    layers = targets(model, cfg.skip, owner, WEIGHT_LAYERS)
    for name, layer in layers:
        if granularity_for(layer, cfg) == "group" and cfg.group_size < fan_in(layer):
            hint = " (or use conv_granularity=channel)" if isinstance(layer, nn.Conv2d) else \
                " (or use granularity=channel)"
            require_divides(owner, name, "group_size", cfg.group_size, fan_in(layer), fan_in_name(layer), hint)
    names = [n for n, _ in layers]
    swap_named(model, names, lambda _, layer: wrap(layer, cfg.bits, granularity_for(layer, cfg), cfg.group_size))
    return names


def fake_layers(model: nn.Module) -> list[FakeQuantLinear]:
    return [m for m in model.modules() if isinstance(m, FakeQuantLinear)]


def endless(make: Callable[[], Iterable]) -> Iterator:
    """One stream over `make()`, restarted when it ends, so consecutive stages see fresh batches."""
    while True:
        empty = True
        for batch in make():
            empty = False
            yield batch
        if empty:
            raise ValueError("the training data is empty")


def train(model: nn.Module, ctx: "CompressionContext", steps: int, batches: Iterable, desc: str,
          loss: Callable | None = None) -> None:
    """Fine-tune the fake-quant model (weights, biases, step sizes) with the shared trainer
    (`loss`: the trainer's loss function; default cross-entropy)."""
    if steps <= 0:
        return
    ctx.trainer.fit(model, batches, ctx.recipe(steps), ctx.seed, desc=desc, loss=loss)


def teacher_kd(ctx: "CompressionContext", temperature: float, alpha: float) -> Callable:
    """The trainer loss of quantization-aware distillation: KD against the context's frozen teacher."""
    from slimbench.methods.common import losses

    teacher = ctx.teacher
    return losses.teacher_kd(lambda inputs: teacher(**inputs), temperature, alpha)


def convert(model: nn.Module) -> nn.Module:
    """Replace every fake-quant wrapper by its packed twin (the stored, restorable form)."""
    names = [n for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)]
    swap_named(model, names, lambda _, fq: to_packed(fq))
    return model.eval()


def compress_qat(model: nn.Module, ctx: "CompressionContext", cfg: "MinMaxConfig", owner: str,
                 loss: Callable | None = None) -> nn.Module:
    """quant.qat: fake-quant at cfg.bits, train for the whole budget (with `loss`), convert."""
    prepare(model, cfg, owner)
    train(model, ctx, ctx.budget_steps, endless(ctx.train_batches), desc=f"{owner} {cfg.bits}-bit", loss=loss)
    return convert(model)
