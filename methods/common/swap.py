"""`LayerSwapMethod`: the base of methods that replace chosen layers by compressed twins.

Quantization swaps a Linear for a packed-weight layer; pruning for a sparse one; low-rank
for a pair of factors. What they share lives here once: the names of the swapped layers are
recorded in the artifact and restore swaps exactly those back (never re-selecting from the
config), optional BatchNorm re-estimation (`recalibrate_bn` config field), and the compute
dtype the model runs in (`compute` config field, recorded as `compute_dtype`).

Torch-free at import (methods register without torch); the layer tools load when a method runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slimbench.methods.base import Compressed, CompressionContext, Method, Unsupported

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


class LayerSwapMethod(Method):
    """Subclasses implement `_swap` (replace layers in place; may calibrate or train; returns the
    model, or `(model, metrics)` to record what the procedure found), `_twins`
    (the classes of the replacements, to find them again) and `_empty` (an empty twin for a
    freshly built layer, filled by `load_state_dict`); they may add `_format` (the storage format
    in words, recorded with the run), `_meta` (more of what restore needs), `_metrics` (what the
    run records) and `_rebuilt` (a last restore step)."""

    def _swap(self, model: "nn.Module", ctx: CompressionContext) -> "nn.Module":
        raise NotImplementedError

    def _twins(self) -> tuple[type, ...]:
        raise NotImplementedError

    def _empty(self, name: str, layer: "nn.Module", meta: dict[str, Any]) -> "nn.Module":
        raise NotImplementedError

    def _format(self) -> str:
        return ""

    def _meta(self, model: "nn.Module") -> dict[str, Any]:
        return {}

    def _metrics(self, model: "nn.Module") -> dict[str, Any]:
        return {}

    def _rebuilt(self, model: "nn.Module", meta: dict[str, Any]) -> "nn.Module":
        return model

    def swapped(self, model: "nn.Module") -> list[str]:
        """Names of the twins in `model`, in module order."""
        twins = self._twins()
        return [n for n, m in model.named_modules() if isinstance(m, twins)]

    def compress(self, model: "nn.Module", ctx: CompressionContext) -> Compressed:
        from slimbench.methods.common.layers import NoTargets

        try:
            model = self._swap(model, ctx)
        except NoTargets as exc:  # nothing of its kind here: UNSUPPORTED with the reason, not FAILED
            raise Unsupported(str(exc)) from exc
        metrics: dict[str, Any] = {}
        if isinstance(model, tuple):
            model, metrics = model[0], dict(model[1])
        if getattr(self.config, "recalibrate_bn", False):
            from slimbench.methods.common.calibrate import recalibrate_batchnorm
            metrics["bn_recalibrated_layers"] = recalibrate_batchnorm(model, ctx, self.name)
        layers = self.swapped(model)
        meta = {"layers": layers, **self._meta(model)}  # what restore needs: it is weighed with the artifact
        metrics["format"], metrics["layers_swapped"] = self._format(), len(layers)
        metrics.update(self._metrics(model))
        compute = getattr(self.config, "compute", None)
        if compute is not None:
            from slimbench.methods.common.cast import unwrap, wrap
            model = wrap(model, compute, ctx.device)
            meta["compute_dtype"] = unwrap(model)[1]
        return Compressed(model, meta, metrics)

    def restore(self, model: "nn.Module", tensors: dict, meta: dict[str, Any]) -> "nn.Module":
        from slimbench.methods.common.cast import rewrap
        from slimbench.methods.common.layers import swap_named

        if not isinstance(meta.get("layers"), list):
            raise ValueError(f"{self.name}: the artifact does not record which layers were swapped "
                             "(model.json meta.layers); it cannot be restored")
        swap_named(model, meta["layers"], lambda name, layer: self._empty(name, layer, meta))
        model = rewrap(self._rebuilt(model, meta), meta)
        model.load_state_dict(tensors, strict=True)
        return model
