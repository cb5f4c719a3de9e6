"""Structured pruning: remove whole conv channels, attention heads and FFN neurons, leaving a
smaller dense model.

CNNs go through Torch-Pruning's dependency graph, which keeps every coupled layer consistent:
the channels of a residual sum are removed from every branch that feeds it, BatchNorm follows
its conv, and grouped/depthwise convs keep their groups whole. Transformers (BERT-style
encoders, as `transformers` builds them) are pruned here: whole heads out of query/key/value
and the attention output, whole neurons out of the FFN; the attention module infers its head
count from the projection shapes, so resizing those layers is all a reload needs
(`sync_attention` updates the module's own head-count attributes to match).

Either way the result reloads through the task's builder plus `fit_to_tensors`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimbench.methods.base import Compressed
from slimbench.methods.common.layers import matches
from slimbench.methods.common.losses import task_loss

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.prune.configs import StructuredConfig


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """BERT-style encoder layers: `attention.self.{query,key,value}`, `attention.output.dense`,
    `intermediate.dense`, `output.dense`."""
    out = []
    for m in model.modules():
        att = getattr(getattr(m, "attention", None), "self", None)
        if att is not None and all(isinstance(getattr(att, p, None), nn.Linear) for p in ("query", "key", "value")) \
                and hasattr(att, "attention_head_size") and isinstance(getattr(getattr(m, "intermediate", None),
                                                                              "dense", None), nn.Linear):
            out.append(m)
    return out


def sync_attention(model: nn.Module) -> nn.Module:
    """Set each attention module's head-count attributes from its (possibly pruned) projections."""
    for block in attention_blocks(model):
        att = block.attention.self
        att.num_attention_heads = att.query.out_features // att.attention_head_size
        att.all_head_size = att.query.out_features
    return model


def _keep_rows(lin: nn.Linear, keep: torch.Tensor) -> None:
    lin.weight = nn.Parameter(lin.weight.detach()[keep].clone())
    if lin.bias is not None:
        lin.bias = nn.Parameter(lin.bias.detach()[keep].clone())
    lin.out_features = len(keep)


def _keep_cols(lin: nn.Linear, keep: torch.Tensor) -> None:
    lin.weight = nn.Parameter(lin.weight.detach()[:, keep].clone())
    lin.in_features = len(keep)


def _score(w: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    return (w * g).abs() if g is not None else w.abs()


def prune_transformer(blocks: list[nn.Module], ratio: float, grads: dict[int, torch.Tensor] | None,
                      round_to: int = 1) -> dict[str, Any]:
    """Remove the lowest-scoring floor(ratio * heads) heads (at least one kept) and about ratio of the
    FFN neurons (the count kept rounded up to a multiple of `round_to`) of every encoder layer.
    Scores: L1 of a unit's weights, or |w * g| with `grads`."""
    removed_heads, removed_neurons, heads_before = 0, 0, 0
    with torch.no_grad():
        for block in blocks:
            att, out = block.attention.self, block.attention.output.dense
            d = att.attention_head_size
            h = att.query.out_features // d
            g = (lambda p: grads.get(id(p)) if grads else None)
            score = sum(_score(lin.weight, g(lin.weight)).reshape(h, d, -1).sum((1, 2))
                        for lin in (att.query, att.key, att.value))
            score = score + _score(out.weight, g(out.weight)).reshape(out.weight.shape[0], h, d).sum((0, 2))
            drop = min(int(ratio * h), h - 1)
            keep_h = torch.argsort(score, descending=True, stable=True)[:h - drop].sort().values
            keep = (keep_h[:, None] * d + torch.arange(d, device=keep_h.device)).reshape(-1)
            for lin in (att.query, att.key, att.value):
                _keep_rows(lin, keep)
            _keep_cols(out, keep)
            up, down = block.intermediate.dense, block.output.dense
            width = up.out_features
            score = _score(up.weight, g(up.weight)).sum(1) + _score(down.weight, g(down.weight)).sum(0)
            kept = min(width, -(-(width - int(ratio * width)) // round_to) * round_to)
            keep_n = torch.argsort(score, descending=True, stable=True)[:kept].sort().values
            _keep_rows(up, keep_n)
            _keep_cols(down, keep_n)
            removed_heads, removed_neurons, heads_before = removed_heads + drop, removed_neurons + width - len(keep_n), \
                heads_before + h
    return {"heads_removed": removed_heads, "heads_before": heads_before, "ffn_neurons_removed": removed_neurons}


def prune_cnn(model: nn.Module, ratio: float, criterion: str, skip: tuple[str, ...], ctx: "CompressionContext",
              batches: int, round_to: int = 1) -> dict[str, Any]:
    """Torch-Pruning's dependency graph removes about `ratio` of the channels of every prunable group
    (counts kept multiples of `round_to`). Convs stored channels-last stay so: the new, smaller
    weights are created contiguous, and a channels-last model fed NCHW weights reorders at every
    layer, which alone can make the pruned model slower than the dense one."""
    import torch_pruning as tp

    example = {k: v.to(ctx.device) for k, v in ctx.example_inputs(2).items()}
    ignored = [m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and matches(n, skip)]
    if criterion == "taylor":
        importance = tp.importance.TaylorImportance()
        _accumulate_grads(model, ctx, batches)
    else:
        importance = tp.importance.MagnitudeImportance(p=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    channels_last = any(m.weight.dim() == 4 and not m.weight.is_contiguous()
                        and m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    channels_before = sum(m.out_channels for m in convs)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio,
                                  ignored_layers=ignored, round_to=round_to if round_to > 1 else None)
    pruner.step()
    model.zero_grad(set_to_none=True)
    if channels_last:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.to(memory_format=torch.channels_last)
    return {"channels_before": channels_before,
            "channels_after": sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))}


def _accumulate_grads(model: nn.Module, ctx: "CompressionContext", batches: int) -> None:

    model.eval()
    model.zero_grad(set_to_none=True)
    stream = ctx.train_batches()
    for _ in range(batches):
        inputs, labels = next(stream)
        task_loss(model(**{k: v.to(ctx.device) for k, v in inputs.items()}), labels.to(ctx.device)).backward()


def structure_of(model: nn.Module, blocks: list | None = None) -> str | None:
    """'transformer' (BERT-style encoder layers), 'cnn' (conv layers) or None (neither); `blocks`:
    the model's `attention_blocks`, when the caller has them already."""
    if attention_blocks(model) if blocks is None else blocks:
        return "transformer"
    return "cnn" if any(isinstance(m, nn.Conv2d) for m in model.modules()) else None


def prune_structured(model: nn.Module, cfg: "StructuredConfig", ctx: "CompressionContext", owner: str) -> Compressed:
    """Prune, then fine-tune the smaller model for the whole budget."""
    params_before = sum(p.numel() for p in model.parameters())
    found = attention_blocks(model)
    kind = structure_of(model, found)
    names = {id(m): n for n, m in model.named_modules()}
    blocks = [b for b in found if not matches(names[id(b)], cfg.skip)]
    if kind == "transformer":
        grads = None
        if cfg.criterion == "taylor":
            _accumulate_grads(model, ctx, cfg.grad_batches)
            grads = {id(p): p.grad.detach().clone() for p in model.parameters() if p.grad is not None}
            model.zero_grad(set_to_none=True)
        metrics = prune_transformer(blocks, cfg.ratio, grads, cfg.round_to)
        sync_attention(model)
    elif kind == "cnn":
        metrics = prune_cnn(model, cfg.ratio, cfg.criterion, cfg.skip, ctx, cfg.grad_batches, cfg.round_to)
    else:
        raise ValueError(f"{owner} handles CNNs (conv channels) and BERT-style transformers (heads, FFN neurons); "
                         "this model has neither")
    model.eval()
    if cfg.finetune and ctx.budget_steps > 0:
        ctx.trainer.fit(model, ctx.train_batches(), ctx.recipe(), ctx.seed, desc=f"{owner} fine-tune")
    params_after = sum(p.numel() for p in model.parameters())
    metrics.update(params_before=params_before, params_after=params_after,
                   params_removed=round(1 - params_after / params_before, 4))
    return Compressed(model.eval(), metrics=metrics)
