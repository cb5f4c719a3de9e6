"""Sensitivity-based allocation: scan each layer alone at a few sparsities on the validation
split, then give every layer the most sparsity it tolerates under one shared accuracy-drop
tolerance, the tolerance chosen so the overall sparsity meets the target.

Why a shared tolerance: it equalises the marginal damage across layers (the idea behind
per-layer sensitivity tables), and searching it turns per-layer curves into one global
allocation with a single knob. The scan sees validation batches only; its cost (evaluations,
examples, seconds) is returned for the run record.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimbench.methods.prune import masks as mk

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext


def scan(model: nn.Module, layers: dict[str, nn.Module], scores: dict[str, torch.Tensor], levels: tuple[float, ...],
         ctx: "CompressionContext", examples: int) -> tuple[dict[str, dict[float, float]], float, dict[str, Any]]:
    """{layer: {sparsity: validation score with only that layer pruned}}, the unpruned score, and the cost.
    Scores are `ctx.val_score` (higher is better: accuracy, or minus perplexity on a language model)."""
    start = time.perf_counter()
    batches = list(ctx.val_batches(limit=examples))
    base = ctx.val_score(model, batches)
    curves: dict[str, dict[float, float]] = {}
    for name, layer in layers.items():
        original = layer.weight.detach().clone()
        curves[name] = {}
        for s in levels:
            with torch.no_grad():
                layer.weight.mul_(mk.keep_top(scores[name], s).to(layer.weight.dtype))
            curves[name][s] = ctx.val_score(model, batches)
            with torch.no_grad():
                layer.weight.copy_(original)
    cost = {"scan_evaluations": len(layers) * len(levels) + 1, "scan_examples": sum(len(y) for _, y in batches),
            "scan_seconds": round(time.perf_counter() - start, 2)}
    return curves, base, cost


def allocate(curves: dict[str, dict[float, float]], base: float, sizes: dict[str, int], target: float,
             fixed: dict[str, float]) -> tuple[dict[str, float], float]:
    """Per-layer sparsities meeting `target` overall, and the tolerance that gave them.

    For a tolerance t, each layer takes its highest scanned sparsity whose accuracy drop is <= t
    (0 if none). The smallest scanned drop t at which the size-weighted total reaches the target
    is found, and the allocation is interpolated between the one just below it and it, so the
    overall sparsity is the target exactly (levels between scanned points are allowed). A target
    beyond every layer's highest scanned level scales the allocation up (capped at 0.999)."""
    free = {n: c for n, c in curves.items() if n not in fixed}
    need = mk.rest_target(sizes, target, fixed, "prune.sensitivity") * sum(sizes[n] for n in free)

    def pick(t: float) -> dict[str, float]:
        return {n: max([s for s, acc in curve.items() if base - acc <= t], default=0.0) for n, curve in free.items()}

    def reached(chosen: dict[str, float]) -> float:
        return sum(chosen[n] * sizes[n] for n in chosen)

    if not free:
        return dict(fixed), 0.0
    prev = {n: 0.0 for n in free}
    tolerance = 0.0
    for t in sorted({base - acc for curve in free.values() for acc in curve.values()}):
        cur, tolerance = pick(t), t
        if reached(cur) >= need:
            got_prev, got_cur = reached(prev), reached(cur)
            w = 1.0 if got_cur == got_prev else (need - got_prev) / (got_cur - got_prev)
            return {**{n: min(0.999, max(0.0, prev[n] + w * (cur[n] - prev[n]))) for n in free}, **fixed}, tolerance
        prev = cur
    scale = need / max(reached(prev), 1e-12)  # the scanned levels cannot reach the target
    return {**{n: min(0.999, s * scale) for n, s in prev.items()}, **fixed}, tolerance
