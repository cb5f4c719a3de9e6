"""The unstructured pruning procedures on dense layers: one-shot masks, the gradual ramp,
fine-tuning with masks held, L1 / group-lasso training, and the swap into sparse storage.

Everything trains through `ctx.trainer` (charged to the fine-tuning budget); masks are applied
to the dense weights first, and the layers become `SparseLinear` / `SparseConv2d` only at the
end, so the stored artifact is exactly the weights the last training step left.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from slimbench.methods.common.layers import ConvGeometry, replace_module
from slimbench.methods.common.losses import task_loss
from slimbench.methods.prune import masks as mk
from slimbench.methods.prune.sparse import SparseLinear, StoredSparse, sparse_twin

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.prune.configs import L1Config, MagnitudeConfig, SparseConfig


def finetune_masked(model: nn.Module, layers: dict[str, nn.Module], masks: mk.Masks, ctx: "CompressionContext",
                    desc: str, finetune: bool = True) -> None:
    """Zero the pruned weights, then (if `finetune`) fine-tune for the whole budget with them held
    at zero (the run records the steps from the ledger)."""
    mk.apply(layers, masks)
    if not finetune or ctx.budget_steps <= 0:
        return
    before, after = mk.holders(layers, masks)
    ctx.trainer.fit(model, ctx.train_batches(), ctx.recipe(), ctx.seed, before_step=before, after_step=after,
                    desc=desc)


def gradual(model: nn.Module, layers: dict[str, nn.Module], cfg: "MagnitudeConfig", fixed: dict[str, float],
            ctx: "CompressionContext", owner: str) -> tuple[mk.Masks, list[tuple[int, float]]]:
    """Magnitude pruning along the cubic ramp during fine-tuning; returns the final masks and the
    (step, sparsity) updates. A zero budget prunes one-shot to the target (nothing to ramp over)."""
    total = ctx.budget_steps
    current: mk.Masks = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in layers.items()}
    trace: list[tuple[int, float]] = []

    def update(step: int, final: bool = False) -> None:
        frac = 1.0 if final else mk.cubic(step, total, 1.0)
        target = cfg.sparsity * frac
        scaled = {n: s * frac for n, s in fixed.items()}
        scores = mk.saliency(model, layers, "magnitude")
        current.update(mk.masks_from(scores, mk.allocate(scores, target, cfg.scope, scaled, owner)))
        mk.apply(layers, current)
        trace.append((step, round(target, 4)))

    if total <= 0:
        update(0, final=True)
        return current, trace

    before, _ = mk.holders(layers, current)  # reads `current`, which each update refills in place

    def after(m, step):
        if (step + 1) % cfg.update_every == 0 or step + 1 == total:
            update(step + 1)
        else:
            mk.apply(layers, current)

    update(0)
    ctx.trainer.fit(model, ctx.train_batches(), ctx.recipe(), ctx.seed, before_step=before, after_step=after,
                    desc=f"{owner} gradual")
    if trace[-1][1] != round(cfg.sparsity, 4):
        update(total, final=True)  # a budget too short for the ramp still ends at the asked sparsity
    return current, trace


def penalised(model: nn.Module, layers: dict[str, nn.Module], cfg: "L1Config", ctx: "CompressionContext",
              desc: str) -> None:
    """Train for the budget with the L1 (or group-lasso) penalty added to the task loss."""
    weights = [m.weight for m in layers.values()]

    def loss(m, inputs, logits, labels):
        if cfg.penalty == "l1":
            reg = sum(w.abs().sum() for w in weights)
        else:
            reg = sum(w.reshape(w.shape[0], -1).norm(dim=1).sum() for w in weights)
        return task_loss(logits, labels) + cfg.strength * reg

    ctx.trainer.fit(model, ctx.train_batches(), ctx.recipe(), ctx.seed, loss=loss, desc=desc)


def to_sparse(model: nn.Module, layers: dict[str, nn.Module], masks: mk.Masks, cfg: "SparseConfig") -> None:
    """Swap every selected (masked) layer for its sparse-stored twin, storing exactly the mask's positions."""
    for name, layer in layers.items():
        replace_module(model, name, sparse_twin(layer, cfg.storage_kind, cfg.kernel, cfg.block, masks[name]))


def storage_metrics(model: nn.Module) -> dict[str, Any]:
    """Sparsity measured from what is stored (values vs the dense shape), per layer and overall, and
    the stored bytes of the sparse layers against what dense weights of the values' dtype would take."""
    per_layer, kept, total, stored, index, dense_bytes = {}, 0, 0, 0, 0, 0
    for name, m in model.named_modules():
        if isinstance(m, StoredSparse):
            dense = m.in_features * m.out_features
            per_layer[name] = round(1 - m.values.numel() / dense, 6) if dense else 0.0
            kept, total = kept + m.values.numel(), total + dense
            idx = sum(getattr(m, b).numel() * getattr(m, b).element_size() for b in m.slim_index)
            stored, index = stored + m.values.numel() * m.values.element_size() + idx, index + idx
            dense_bytes += dense * m.values.element_size()
    out: dict[str, Any] = {"sparsity": round(1 - kept / total, 6) if total else 0.0, "sparsity_per_layer": per_layer,
                           "kept_weights": kept, "pruned_layer_weights": total,
                           "sparse_weight_bytes": stored, "sparse_index_bytes": index,
                           "dense_weight_bytes": dense_bytes}
    if stored > dense_bytes:
        out["note"] = "sparse storage is larger than dense here (index bytes outweigh the zeros)"
    return out


def _time_ms(fn, reps: int) -> float:
    """Median wall time of `fn()` in ms (one warm-up call first)."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def choose_kernels(model: nn.Module, ctx: "CompressionContext", reps: int = 7) -> dict[str, Any]:
    """For kernel=auto: per sparse Linear, time torch's CSR matmul against the dense GEMM on the
    layer's own inputs at each of the task's latency batch sizes (validation data, the compress
    device), and set `csr_rows` between the most rows at which CSR was faster (at that size and
    every smaller one) and the fewest at which it was not: their geometric mean (twice the
    largest measured size when CSR always won), since a batch's token count varies. Which is
    faster depends on the layer's density, shape and the batch, so neither a fixed kernel nor a
    sparsity threshold is right everywhere."""
    sparse = {n: m for n, m in model.named_modules() if isinstance(m, SparseLinear) and m.kernel == "auto"
              and not isinstance(m, ConvGeometry)}
    if not sparse:
        return {}
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in sparse}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: captured[n].append(args[0].detach()))
             for n, m in sparse.items()]
    model.eval()
    try:
        with torch.inference_mode():
            for bs in sorted(set(ctx.task.latency_batch_sizes)):
                model(**{k: v.to(ctx.device) for k, v in ctx.example_inputs(bs).items()})
    finally:
        for h in hooks:
            h.remove()
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    choice: dict[str, int] = {}
    with torch.inference_mode():
        for name, m in sparse.items():
            m.timed_on, m.csr_rows = ctx.device.type, 0
            won, lost = 0, None
            for x in sorted(captured[name], key=lambda t: t.numel()):
                rows = x.numel() // m.in_features
                ms = {}
                for rows_limit in (rows, -1):  # CSR, then dense
                    m.csr_rows = rows_limit
                    ms[rows_limit] = _time_ms(lambda: (m(x), sync()), reps)
                if ms[rows] >= ms[-1]:
                    lost = rows
                    break
                won = rows
            if won:  # the switch between measured sizes: their geometric mean (token counts vary per batch)
                choice[name] = int((won * lost) ** 0.5) if lost else 2 * won
            m.csr_rows = choice.get(name, 0)
    return {"kernel_choice": {"csr_layers": len(choice), "sparse_linear_layers": len(sparse),
                              "device": ctx.device.type, "csr_rows": choice}}


def kernel_check(model: nn.Module, ctx: "CompressionContext", reps: int = 10) -> dict[str, Any]:
    """For kernel=csr: time the model at batch 1 with the CSR path and with the dense one (on the
    run's device, validation inputs), so the run says when dense would have been faster."""
    sparse = [m for m in model.modules() if isinstance(m, SparseLinear) and m.kernel == "csr"]
    if not sparse:
        return {}
    inputs = {k: v.to(ctx.device) for k, v in ctx.example_inputs(1).items()}
    model.eval()
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    times = {}
    for kernel in ("csr", "dense"):
        for m in sparse:
            m.kernel = kernel
        with torch.inference_mode():  # the warm-up call caches the expanded / CSR weights
            times[kernel] = _time_ms(lambda: (model(**inputs), sync()), reps)
    for m in sparse:
        m.kernel = "csr"
    out = {"csr_ms_bs1": round(times["csr"], 4), "dense_ms_bs1": round(times["dense"], 4)}
    if times["dense"] < times["csr"]:
        out["note"] = (f"the dense kernel would be faster at batch 1 on {ctx.device.type} ({times['dense']:.3g} ms "
                       f"vs {times['csr']:.3g} ms with CSR; the method's own timing)")
    return out
