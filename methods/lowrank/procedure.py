"""The low-rank procedures: observe the layers, factorise them, keep a factorised layer only where it
is smaller and not measured slower, then fine-tune.

Everything a rank rule needs comes from the train / calibration / validation data of the
context: Fisher rows from training-batch gradients, activation scales and the timing inputs
from one calibration pass, the sensitivity scan from validation batches.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from slimbench.core.config import ConfigError
from slimbench.methods.common.calibrate import calibration_pass
from slimbench.methods.common.losses import task_loss
from slimbench.methods.common.layers import LINEAR, per_layer_map, replace_module, targets
from slimbench.methods.lowrank import factor as fx
from slimbench.methods.lowrank.modules import LowRankLinear, TuckerConv2d

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.lowrank.configs import FactorConfig, SVDConfig, TuckerConfig

LAUNCH_BOUND_MS = 0.05  # a dense layer faster than this is dominated by the cost of the call itself
SLOWER_MARGIN = 1.05  # factors slower than this multiple of the dense time keep the dense layer
TIMING_ROWS = 64  # rows (items) of the first calibration batch each layer is timed on: the batch it runs at


def observe(model: nn.Module, layers: dict[str, nn.Module], ctx: "CompressionContext", owner: str,
            abs_mean: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, tuple]]:
    """One calibration pass: per layer the mean |x| of each input feature (when `abs_mean`), a sample
    of its first input (for timing) and its (input, output) shapes."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    sample: dict[str, torch.Tensor] = {}
    shapes: dict[str, tuple] = {}

    def hook(name: str) -> Callable:
        def f(module, inputs, output):
            x = inputs[0].detach()
            if name not in sample:
                sample[name] = x[:TIMING_ROWS].clone()
                shapes[name] = (tuple(x.shape), tuple(output.shape))
            if abs_mean:
                flat = x.reshape(-1, x.shape[-1]).abs().double()
                sums[name] = sums.get(name, 0) + flat.sum(0)
                counts[name] = counts.get(name, 0) + flat.shape[0]
        return f

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        calibration_pass(model, ctx, owner, "the low-rank statistics",
                         reached=lambda: [n for n in layers if n not in sample])
    finally:
        for h in handles:
            h.remove()
    return {n: sums[n] / counts[n] for n in sums}, sample, shapes


def fisher_rows(model: nn.Module, layers: dict[str, nn.Module], ctx: "CompressionContext", batches: int
                ) -> dict[str, torch.Tensor]:
    """Per output row of each weight: the empirical Fisher information summed over the row (squared
    gradients of `batches` training batches), the row weights of FWSVD."""

    acc = {n: torch.zeros(m.weight.shape[0], dtype=torch.float64, device=m.weight.device) for n, m in layers.items()}
    was = model.training
    model.eval()
    stream = ctx.train_batches()
    try:
        for _ in range(batches):
            inputs, labels = next(stream)
            model.zero_grad(set_to_none=True)
            logits = model(**{k: v.to(ctx.device) for k, v in inputs.items()})
            task_loss(logits, labels.to(ctx.device)).backward()
            for n, m in layers.items():
                if m.weight.grad is not None:
                    acc[n] += m.weight.grad.detach().double().pow(2).sum(1)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return acc


def paired_ms(first: Callable[[], Any], second: Callable[[], Any], device: torch.device, reps: int = 9
              ) -> tuple[float, float]:
    """Fastest of `reps` timings of each, interleaved (so drift and a neighbour's load hit both
    alike; the minimum is the stablest estimate of what a call costs)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: tuple[list[float], list[float]] = ([], [])
    with torch.no_grad():
        for fn in (first, second, first, second):
            fn()
        for _ in range(reps):
            for i, fn in enumerate((first, second)):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[i].append((time.perf_counter() - t0) * 1e3)
    return min(times[0]), min(times[1])


def keep_dense_reason(dense: nn.Module, twin: nn.Module, dense_params: int, twin_params: int,
                      x: torch.Tensor | None, cfg: "FactorConfig", device: torch.device,
                      timings: dict[str, list[float]] | None = None, name: str = "",
                      timer: Callable[..., tuple[float, float]] | None = None) -> str | None:
    """Why the factorised twin should not replace `dense` (None: it should); the timings taken go to
    `timings[name]` as [dense ms, factorised ms]. `timer(first, second, device) -> (ms, ms)` is
    `paired_ms` unless given (tests inject timings: the decision must not depend on this machine)."""
    if twin_params >= dense_params:
        return f"factors hold {twin_params:,} parameters, not fewer than the dense {dense_params:,}"
    if cfg.dense_if_slower and x is not None:
        import copy

        from slimbench.methods.common.cast import resolve
        dtype = getattr(torch, {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[resolve(cfg.compute, device)])
        if dtype != x.dtype:  # timed in the dtype the model will run in (fp16 on CUDA by default)
            dense, twin, x = copy.deepcopy(dense).to(dtype), copy.deepcopy(twin).to(dtype), x.to(dtype)
        t_dense, t_twin = (timer or paired_ms)(lambda: dense(x), lambda: twin(x), device)
        if timings is not None:
            timings[name] = [round(t_dense, 4), round(t_twin, 4)]
        return timing_reason(t_dense, t_twin, tuple(x.shape))
    return None


def timing_reason(t_dense: float, t_twin: float, shape: tuple[int, ...]) -> str | None:
    """The decision on measured timings (ms) at input `shape`: why the dense layer stays, or None."""
    if t_dense < LAUNCH_BOUND_MS:  # call overhead, not arithmetic: a second call cannot pay (and the
        # comparison of two such timings is noise, which would make the artifact depend on the machine's load)
        return (f"launch-bound: the dense layer takes {t_dense:.4f} ms at input {shape}, under "
                f"{LAUNCH_BOUND_MS} ms, where two calls cost more than the FLOPs saved")
    if t_twin > SLOWER_MARGIN * t_dense:
        return f"measured slower: {t_twin:.3f} ms factorised vs {t_dense:.3f} ms dense at input {shape}"
    return None


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def rank_overrides(layers: dict[str, nn.Module], per_layer: dict[str, int], owner: str) -> dict[str, int]:
    """Layer -> fixed rank from the per_layer patterns; a pattern naming no layer, or a rank above a
    layer's full rank, fails before any work."""
    def within_full_rank(n: str, pattern: str, r: int) -> None:
        full = min(layers[n].weight.shape[0], layers[n].weight[0].numel())
        if r > full:
            raise ConfigError(f"{owner}: per_layer[{pattern!r}]={r} is above the full rank {full} of layer {n!r}")
    return per_layer_map(layers, per_layer, owner, "selected layer", within_full_rank)


def _scan(model: nn.Module, layers: dict[str, nn.Module], decomps: dict[str, fx.WeightedSVD], cfg: "SVDConfig",
          ctx: "CompressionContext") -> dict[str, dict[int, float]]:
    """Validation score lost by each layer alone at each level's rank: {layer: {rank: drop}} (scores
    are `ctx.val_score`: accuracy, or minus perplexity on a language model)."""
    batches = list(ctx.val_batches(limit=cfg.scan_examples))
    base = ctx.val_score(model, batches)
    drops: dict[str, dict[int, float]] = {}
    for n, layer in layers.items():
        w = layer.weight.data
        out_f, in_f = w.shape
        drops[n] = {}
        for level in sorted(set(cfg.levels)):
            r = min(fx.params_rank(out_f, in_f, level), decomps[n].full_rank)
            layer.weight.data = decomps[n].approx(r).to(w.dtype)
            drops[n][r] = base - ctx.val_score(model, batches)
            layer.weight.data = w
    return drops


def allocate(drops: dict[str, dict[int, float]], layers: dict[str, nn.Module], budget: float) -> dict[str, int]:
    """Per-layer ranks from the scan: start every layer at its largest scanned rank, then lower the
    layer whose next step down loses the least accuracy per parameter saved, until the factors fit
    `budget` parameters (or every layer is at its smallest rank)."""
    cost = {n: layers[n].weight.shape[0] + layers[n].weight.shape[1] for n in layers}
    options = {n: sorted(d) for n, d in drops.items()}
    at = {n: len(o) - 1 for n, o in options.items()}
    total = sum(options[n][at[n]] * cost[n] for n in layers)
    while total > budget:
        best, best_score = None, None
        for n in layers:
            if at[n] == 0:
                continue
            hi, lo = options[n][at[n]], options[n][at[n] - 1]
            score = (drops[n][lo] - drops[n][hi]) / ((hi - lo) * cost[n])
            if best_score is None or score < best_score:
                best, best_score = n, score
        if best is None:
            break
        total -= (options[best][at[best]] - options[best][at[best] - 1]) * cost[best]
        at[best] -= 1
    return {n: options[n][at[n]] for n in layers}


def factorise_linear(model: nn.Module, cfg: "SVDConfig", ctx: "CompressionContext", owner: str
                     ) -> tuple[nn.Module, dict[str, Any]]:
    layers = dict(targets(model, cfg.skip, owner, LINEAR, verb="factorise"))
    fixed = rank_overrides(layers, cfg.per_layer, owner)
    col_means, sample, _ = observe(model, layers, ctx, owner, abs_mean=cfg.weighting == "activation")
    rows = fisher_rows(model, layers, ctx, cfg.grad_batches) if cfg.weighting == "fisher" else {}
    decomps = {}
    for n, m in layers.items():
        row = fx.positive(rows[n]).sqrt() if n in rows else None
        col = fx.positive(col_means[n]).pow(cfg.alpha) if n in col_means else None
        decomps[n] = fx.weighted_svd(m.weight, row, col)
    if cfg.rank_by == "energy":
        ranks = {n: fx.energy_rank(d.s, cfg.energy) for n, d in decomps.items()}
    elif cfg.rank_by == "params":
        ranks = {n: min(fx.params_rank(*m.weight.shape, cfg.params), decomps[n].full_rank) for n, m in layers.items()}
    else:
        free = {n: m for n, m in layers.items() if n not in fixed}
        budget = cfg.params * sum(m.weight.numel() for m in free.values())
        ranks = allocate(_scan(model, free, decomps, cfg, ctx), free, budget) if free else {}
    ranks.update(fixed)
    kept_dense: dict[str, str] = {}
    timings: dict[str, list[float]] = {}
    dense_params = sum(_params(m) for m in layers.values())
    with torch.no_grad():
        for n, m in layers.items():
            a, b = decomps[n].factors(ranks[n])
            twin = LowRankLinear.from_factors(a.to(m.weight.dtype), b.to(m.weight.dtype), m.bias, cfg.kernel)
            reason = keep_dense_reason(m, twin, _params(m), _params(twin), sample.get(n), cfg, ctx.device, timings, n)
            if reason:
                kept_dense[n] = reason
            else:
                replace_module(model, n, twin)
    metrics = _finish(model, layers, dense_params, kept_dense, ctx, cfg, owner, timings)
    metrics["ranks"] = {n: ranks[n] for n in layers if n not in kept_dense}
    return model, metrics


def _finish(model: nn.Module, layers: dict[str, nn.Module], dense_params: int, kept_dense: dict[str, str],
            ctx: "CompressionContext", cfg: "FactorConfig", owner: str, timings: dict[str, list[float]]
            ) -> dict[str, Any]:
    after = sum(_params(model.get_submodule(n)) for n in layers)
    metrics: dict[str, Any] = {"layers_factorised": len(layers) - len(kept_dense),
                               "factorised_params_kept": round(after / dense_params, 4)}
    if timings:
        metrics["layer_ms_dense_vs_factorised"] = timings
    if kept_dense:
        metrics["kept_dense"] = kept_dense
    if len(kept_dense) == len(layers):  # nothing changed: the dense model is the honest result, untrained
        metrics["note"] = "every selected layer stayed dense (see kept_dense): the model is the baseline's"
        return metrics
    metrics[f"val_{ctx.task.metric or 'accuracy'}_before_finetune"] = round(ctx.val_metric(model), 5)
    if cfg.finetune and ctx.budget_steps > 0:
        ctx.trainer.fit(model, ctx.train_batches(), ctx.recipe(), ctx.seed, desc=f"{owner} fine-tune")
    return metrics


def conv_targets(model: nn.Module, skip: tuple[str, ...], owner: str) -> tuple[dict[str, nn.Conv2d], dict[str, str]]:
    """kxk, groups=1 convs Tucker-2 applies to, and the other selected convs with why they stay."""
    convs = dict(targets(model, skip, owner, (nn.Conv2d,), verb="factorise"))
    chosen, other = {}, {}
    for n, m in convs.items():
        if m.groups != 1:
            other[n] = f"grouped conv (groups={m.groups})"
        elif m.kernel_size == (1, 1):
            other[n] = "1x1 conv (Tucker-2 of it is a plain SVD: nothing to gain from a core)"
        else:
            chosen[n] = m
    if not chosen:
        raise ValueError(f"{owner} found no kxk (k > 1), groups=1 nn.Conv2d to factorise ({len(other)} other convs)")
    return chosen, other


def factorise_conv(model: nn.Module, cfg: "TuckerConfig", ctx: "CompressionContext", owner: str
                   ) -> tuple[nn.Module, dict[str, Any]]:
    layers, other = conv_targets(model, cfg.skip, owner)
    _, sample, shapes = observe(model, layers, ctx, owner, abs_mean=False)
    kept_dense: dict[str, str] = {}
    timings: dict[str, list[float]] = {}
    ranks: dict[str, list[int]] = {}
    dense_params = sum(_params(m) for m in layers.values())
    flops_before = flops_after = 0.0
    with torch.no_grad():
        for n, m in layers.items():
            (in_shape, out_shape) = shapes[n]
            o, i = m.out_channels, m.in_channels
            k = m.kernel_size[0] * m.kernel_size[1]
            spatial = (in_shape[-1] * in_shape[-2]) / (out_shape[-1] * out_shape[-2])
            spectra = fx.mode_spectra(m.weight)
            if cfg.rank_by == "flops":
                r_out, r_in = fx.flops_ranks(o, i, k, cfg.flops, spatial)
            elif cfg.rank_by == "energy":
                r_out, r_in = (fx.energy_rank(s, cfg.energy) for _, s in spectra)
            else:
                r_out, r_in = (fx.vbmf_rank(fx.unfold(m.weight, mode)) for mode in (0, 1))
            r_out, r_in = min(r_out, spectra[0][1].numel()), min(r_in, spectra[1][1].numel())
            twin = TuckerConv2d(m, r_out, r_in).fill(*fx.tucker2(m.weight, r_out, r_in, spectra), m.bias)
            pixels = out_shape[-1] * out_shape[-2]
            cost = fx.tucker_flops(o, i, k, r_out, r_in, spatial) * pixels
            reason = keep_dense_reason(m, twin, _params(m), _params(twin), sample.get(n), cfg, ctx.device, timings, n)
            if reason is None and cost >= o * i * k * pixels:
                reason = f"the three convs cost {cost:,.0f} MACs per image, not fewer than the dense {o * i * k * pixels:,}"
            flops_before += o * i * k * pixels
            if reason:
                kept_dense[n] = reason
                flops_after += o * i * k * pixels
            else:
                replace_module(model, n, twin)
                ranks[n] = [r_out, r_in]
                flops_after += cost
    metrics = _finish(model, layers, dense_params, kept_dense, ctx, cfg, owner, timings)
    metrics.update(ranks=ranks, factorised_conv_flops_kept=round(flops_after / flops_before, 4))
    if other:
        metrics["not_factorised"] = other
    return model, metrics
