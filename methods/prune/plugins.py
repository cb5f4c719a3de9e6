"""The pruning method plugins, registered without importing torch.

Unstructured methods (`prune.magnitude`, `prune.random`, `prune.sensitivity`, `prune.l1`) choose
masks on the dense model, fine-tune with the masks held, then swap each pruned layer for a
sparse-stored twin (`SparseMethod`, a `LayerSwapMethod`). `prune.nm` keeps n of every m inputs
and stores values + positions. `prune.structured` removes channels, heads and neurons, leaving a
smaller dense model that reloads onto the task's build by resizing layers to the saved tensors.
"""
from __future__ import annotations

from typing import Any

from slimbench.methods.base import Compressed, CompressionContext, Method, register_method
from slimbench.methods.common.swap import LayerSwapMethod
from slimbench.methods.prune.configs import (L1Config, MagnitudeConfig, NMConfig, RandomConfig, SensitivityConfig,
                                             SparseConfig, StructuredConfig)


class SparseMethod(LayerSwapMethod):
    """Masks on the dense layers (`_prune`), then sparse storage; records the achieved sparsity
    measured from what is stored, and whether sparse storage beat dense."""

    family = "pruning"
    followable = True  # densify: the plain layers with their pruned weights zero

    def densify(self, model):
        from slimbench.methods.prune.sparse import densify
        return densify(model)
    config_cls = SparseConfig

    def _prune(self, model, layers: dict, fixed: dict, ctx: CompressionContext) -> tuple[dict, dict[str, Any]]:
        """Mask (and fine-tune) the dense `layers` in place; return the final masks and what the run
        should record."""
        raise NotImplementedError

    def _swap(self, model, ctx: CompressionContext):
        from slimbench.methods.prune import masks as mk
        from slimbench.methods.prune import unstructured as un

        layers = mk.selected(model, self.config.skip, self.name)
        fixed = mk.overrides(layers, self.config.per_layer, self.name)  # bad maps fail before any work
        dense: dict[str, str] = {}
        if self.config.block > 1:
            layers, dense = mk.block_layers(layers, self.config.block)
            if not layers:
                raise ValueError(f"{self.name}: no nn.Linear layer is a whole number of {self.config.block}x"
                                 f"{self.config.block} blocks: {dense}")
            named_dense = sorted(set(fixed) - set(layers))
            if named_dense:
                from slimbench.core.config import ConfigError
                raise ConfigError(f"{self.name}: per_layer names {', '.join(named_dense)}, which block pruning "
                                  f"keeps dense ({'; '.join(dense[n] for n in named_dense)})")
        mk.rest_target({n: m.weight.numel() for n, m in layers.items()}, self.config.sparsity, fixed, self.name)
        masks, metrics = self._prune(model, layers, fixed, ctx)
        if dense:
            metrics["kept_dense"] = dense
        un.to_sparse(model, layers, masks, self.config)
        metrics.update(un.storage_metrics(model))
        check = un.kernel_check(model, ctx)
        check.update(un.choose_kernels(model, ctx))
        if "note" in check and "note" in metrics:
            check["note"] = metrics.pop("note") + "; " + check["note"]
        metrics.update(check)
        return model, metrics

    def _twins(self):
        from slimbench.methods.prune.sparse import BlockSparseLinear, SparseLinear
        return (SparseLinear, BlockSparseLinear)

    def _empty(self, name, layer, meta):
        from slimbench.methods.prune.sparse import empty_sparse
        c = self.config
        timed = meta.get("csr_rows", {})
        return empty_sparse(layer, meta["nnz"][name], c.storage_kind, c.kernel, c.block, timed.get(name, 0),
                            meta.get("timed_on", ""))

    def _meta(self, model) -> dict[str, Any]:
        from slimbench.methods.prune.sparse import SparseLinear
        twins = self._twins()
        meta: dict[str, Any] = {"nnz": {n: m.values.numel() for n, m in model.named_modules() if isinstance(m, twins)}}
        auto = {n: m for n, m in model.named_modules() if isinstance(m, SparseLinear) and m.kernel == "auto"}
        if auto:  # kernel=auto's timed choice travels with the artifact, so the reloaded model runs it
            meta["csr_rows"] = {n: m.csr_rows for n, m in auto.items() if m.csr_rows > 0}
            meta["timed_on"] = next(iter(auto.values())).timed_on
        return meta

    def _format(self) -> str:
        c = self.config
        blocks = f"{c.block}x{c.block} blocks, " if c.block > 1 else ""
        return f"unstructured sparse, {blocks}{c.storage_kind} + fp32 values, {c.kernel} kernel"


@register_method("prune.magnitude")
class Magnitude(SparseMethod):
    description = ("Unstructured magnitude pruning (layer-wise or one global threshold; one-shot or a cubic "
                   "ramp during fine-tuning), masks held while fine-tuning, stored as bitmask or CSR.")
    config_cls = MagnitudeConfig

    def _prune(self, model, layers, fixed, ctx):
        from slimbench.methods.prune import masks as mk
        from slimbench.methods.prune import unstructured as un

        c = self.config
        if c.schedule == "gradual":
            masks, trace = un.gradual(model, layers, c, fixed, ctx, self.name)
            return masks, {"ramp": trace[:1] + trace[-1:], "mask_updates": len(trace)}
        if c.block > 1:
            scores = mk.block_scores(layers, c.block)
            blocks = mk.masks_from(scores, mk.allocate(scores, c.sparsity, c.scope, fixed, self.name))
            masks = mk.expand_blocks(blocks, c.block)
        else:
            scores = mk.saliency(model, layers, "magnitude")
            masks = mk.masks_from(scores, mk.allocate(scores, c.sparsity, c.scope, fixed, self.name))
        un.finetune_masked(model, layers, masks, ctx, f"{self.name} fine-tune", c.finetune)
        return masks, {}


@register_method("prune.random")
class Random(SparseMethod):
    description = ("Control: the per-layer sparsities magnitude pruning would choose, at random positions, "
                   "fine-tuned the same way (shows what the criterion buys).")
    config_cls = RandomConfig

    def _prune(self, model, layers, fixed, ctx):
        from slimbench.methods.prune import masks as mk
        from slimbench.methods.prune import unstructured as un

        scores = mk.saliency(model, layers, "magnitude")
        sparsities = mk.allocate(scores, self.config.sparsity, self.config.scope, fixed, self.name)
        masks = mk.random_masks(layers, sparsities, ctx.seed)
        un.finetune_masked(model, layers, masks, ctx, f"{self.name} fine-tune", self.config.finetune)
        return masks, {}


@register_method("prune.sensitivity")
class Sensitivity(SparseMethod):
    description = ("Per-layer sparsity from a validation sensitivity scan under a global target; saliency by "
                   "magnitude, first-order Taylor or second-order (diagonal Fisher, OBD); then fine-tuned.")
    config_cls = SensitivityConfig

    def _prune(self, model, layers, fixed, ctx):
        from slimbench.core.metrics import get_metric
        from slimbench.methods.prune import masks as mk
        from slimbench.methods.prune import sensitivity as sens
        from slimbench.methods.prune import unstructured as un

        import time

        c = self.config
        start, grad_cost = time.perf_counter(), {"saliency_batches": 0, "saliency_backward_passes": 0}
        scores = mk.saliency(model, layers, c.saliency, ctx, c.grad_batches, grad_cost)
        saliency_seconds = round(time.perf_counter() - start, 2)
        curves, base, cost = sens.scan(model, layers, scores, c.levels, ctx, c.scan_examples)
        sizes = {n: m.weight.numel() for n, m in layers.items()}
        chosen, tolerance = sens.allocate(curves, base, sizes, c.sparsity, fixed)
        masks = mk.masks_from(scores, chosen)
        reached = 1 - sum(float(m.sum()) for m in masks.values()) / sum(sizes.values())
        short = {} if reached >= c.sparsity - 1e-3 else {
            "note": f"the scanned levels reach {reached:.3f} of the asked {c.sparsity} (a layer is capped at 0.999)"}
        un.finetune_masked(model, layers, masks, ctx, f"{self.name} fine-tune", c.finetune)
        metric = get_metric(ctx.task.metric)
        return masks, {**cost, f"val_{metric.name}_unpruned": round(metric.unscore(base), 4),
                       "tolerance": round(tolerance, 4),
                       **grad_cost, "saliency_seconds": saliency_seconds, **short,
                       "allocated": {n: round(s, 4) for n, s in chosen.items()}}


@register_method("prune.l1")
class L1(SparseMethod):
    description = ("Sparsity-inducing training: an L1 (unstructured) or group-lasso (whole output rows) penalty "
                   "for the fine-tuning budget, then thresholded to the target sparsity.")
    config_cls = L1Config

    def _prune(self, model, layers, fixed, ctx):
        from slimbench.methods.prune import masks as mk
        from slimbench.methods.prune import unstructured as un

        c = self.config
        un.penalised(model, layers, c, ctx, f"{self.name} {c.penalty} training")
        if c.penalty == "group":  # per_layer is refused with it by L1Config
            masks = mk.row_masks(layers, c.sparsity)
        else:
            scores = mk.saliency(model, layers, "magnitude")
            masks = mk.masks_from(scores, mk.allocate(scores, c.sparsity, "global", fixed, self.name))
        mk.apply(layers, masks)
        return masks, {}


@register_method("prune.nm")
class NM(LayerSwapMethod):
    family = "pruning"
    followable = True

    def densify(self, model):
        from slimbench.methods.prune.sparse import densify
        return densify(model)
    description = ("N:M semi-structured pruning (2:4 by default: 2 of every 4 inputs kept, the pattern sparse "
                   "tensor cores run), fine-tuned with the pattern held, stored as values + 2-bit positions.")
    config_cls = NMConfig

    def _swap(self, model, ctx: CompressionContext):
        from slimbench.methods.common.layers import replace_module
        from slimbench.methods.prune import masks as mk
        from slimbench.methods.prune import unstructured as un
        from slimbench.methods.prune.sparse import nm_twin

        c = self.config
        layers = mk.selected(model, c.skip, self.name)
        masks = mk.nm_masks(layers, c.n, c.m, self.name)  # a pattern that does not divide a layer fails here
        un.finetune_masked(model, layers, masks, ctx, f"{self.name} fine-tune", c.finetune)
        for name, layer in layers.items():
            replace_module(model, name, nm_twin(layer, c.n, c.m))
        return model, {"pattern": f"{c.n}:{c.m}"}  # sparsity and bytes are measured from what is stored (`_metrics`)

    def _twins(self):
        from slimbench.methods.prune.sparse import NMLinear
        return (NMLinear,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.prune.sparse import nm_twin
        return nm_twin(layer, self.config.n, self.config.m, fill=False)

    def _metrics(self, model) -> dict[str, Any]:
        """The N:M sparsity and bytes measured from the stored values (n of m per group, exactly)."""
        from slimbench.methods.prune.unstructured import storage_metrics
        return storage_metrics(model)

    def _format(self) -> str:
        return f"{self.config.n}:{self.config.m} semi-structured, fp32 values + bit-packed positions"


@register_method("prune.structured")
class Structured(Method):
    family = "pruning"
    followable = True  # a smaller dense model
    description = ("Structured pruning that physically removes conv channels (dependency-aware: residual adds, "
                   "BatchNorm, grouped convs) or attention heads and FFN neurons, then fine-tunes the smaller dense "
                   "model.")
    config_cls = StructuredConfig

    def model_unsupported(self, model):
        """Unsupported (not failed) on a model with neither conv channels nor BERT-style attention."""
        from slimbench.methods.prune.structured import structure_of
        if structure_of(model) is None:
            return (f"{self.name} removes conv channels (CNNs) or attention heads and FFN neurons (BERT-style "
                    "encoders); this task's model has neither")
        return None

    def compress(self, model, ctx: CompressionContext) -> Compressed:
        from slimbench.methods.prune.structured import prune_structured
        return prune_structured(model, self.config, ctx, self.name)

    def restore(self, model, tensors, meta):
        return self.after_resize(super().restore(model, tensors, meta))

    def after_resize(self, model):
        from slimbench.methods.prune.structured import sync_attention
        return sync_attention(model)
