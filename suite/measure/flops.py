"""FLOPs and BOPs per forward pass, traced with `torch.utils.flop_counter.FlopCounterMode`.

Three numbers are reported:
- `dense`: what the traced dense ops cost (2 FLOPs per multiply-accumulate, the counter's
  convention), with declared costs substituted where a module declares them;
- `effective`: the same, except that every weight layer (`sparsity.weight_layers`: Linear,
  conv, and the compressed twins that expose `slim_weight()`) counts only the share of its
  multiply-accumulates whose weight is nonzero: its dense figure times the density of the
  weight it really computes with, measured here, whatever format stores it (a pruned layer
  later quantized keeps its zeros). Other declaring modules (a factorised layer) use their
  declared `effective` figure;
- `bops`: bit operations, weight bits x activation bits per effective multiply-accumulate.
  Low-bit layers declare theirs (a W4A16 Linear: 4 x 16 per MAC; scaled by the measured
  density like the FLOPs); every other MAC counts at the width of the model's compute dtype
  squared (32 x 32 for an fp32 model, 16 x 16 for half). A figure of the representation (the
  convention of mixed-precision papers), not of speed.

A module declares its cost with `slim_cost(inputs, output) -> {"dense": int, "effective": int,
"bops": int}` (`bops` optional)
(`inputs` is the tuple of the forward call's positional arguments followed by its keyword
argument values, so a model called as `model(**inputs)` still sees them). Whatever the counter
traced inside such a module is discarded and the declared figures used instead. When
declaring modules or weight layers are nested, the outermost one wins: inner ones are ignored,
because the outer figure already covers everything inside it.

Only ops the counter has a formula for count (matmuls, convolutions, attention);
elementwise ops, norms and activations count zero, as in the usual "MACs" tables.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from torch.utils.hooks import RemovableHandle

from slimbench.suite.measure.sparsity import density, is_weight_layer


def _sdpa_cpu_flop(query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size,
                   *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Shape formula for `aten._scaled_dot_product_flash_attention_for_cpu`.

    Torch has no formula for the CPU flash kernel, so SDPA on CPU would count 0; its
    first three arguments are query/key/value [B, H, S, D] like the CUDA variants.
    """
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flop
    return mapping


class _Costs:
    """Forward hooks that swap traced FLOPs for declared costs and measured densities.

    The pre-hook snapshots the counter's running total; the post-hook computes what was
    traced inside the module and records the corrections (figure - traced) of the dense and
    effective totals. Only the outermost hooked module on the call stack counts.
    """

    def __init__(self, counter: FlopCounterMode):
        self.counter = counter
        self.stack: list[int] = []  # running total at entry of each active hooked call
        self.dense_delta = 0
        self.effective_delta = 0
        self.bops = 0  # declared BOPs
        self.bops_effective = 0  # effective FLOPs of the modules that declared BOPs
        self._density: dict[int, float | None] = {}  # per module, measured once

    def pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.stack.append(self.counter.get_total_flops())

    def post(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
             output: Any) -> None:
        before = self.stack.pop()
        if self.stack:  # inside an outer hooked module: its figure covers this call
            return
        traced = self.counter.get_total_flops() - before
        declare = getattr(module, "slim_cost", None)
        cost = declare((*args, *kwargs.values()), output) if callable(declare) else {"dense": traced}
        dense = int(cost["dense"])
        share = self.density(module)
        effective = int(round(dense * share)) if share is not None else int(cost.get("effective", dense))
        self.dense_delta += dense - traced
        self.effective_delta += effective - traced
        if "bops" in cost:
            self.bops += int(round(int(cost["bops"]) * (share if share is not None else 1.0)))
            self.bops_effective += effective

    def density(self, module: nn.Module) -> float | None:
        return self._density.get(id(module))

    def attach(self, model: nn.Module) -> list[RemovableHandle]:
        """Hook every declaring module and weight layer; densities are measured here, before the
        counted forward, so a dequantize never runs inside the counter."""
        handles = []
        for m in model.modules():
            weighted = is_weight_layer(m)
            if weighted:
                self._density[id(m)] = density(m)
            if weighted or callable(getattr(m, "slim_cost", None)):
                handles.append(m.register_forward_pre_hook(self.pre, with_kwargs=True))
                handles.append(m.register_forward_hook(self.post, with_kwargs=True))
        return handles


def count_flops(model: nn.Module, inputs: Mapping[str, torch.Tensor],
                compute_dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """FLOPs and BOPs of one `model(**inputs)` call: {"dense", "effective", "bops"}.

    `compute_dtype`: what undeclared multiply-accumulates run in (their BOPs are its bits squared).

    Runs in eval mode under `torch.no_grad` (the model's training flag is restored after).
    Pass batch-size-1 inputs to get the per-sample figures recorded in run.json.
    """
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    declared = _Costs(counter)
    handles = declared.attach(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(**inputs)
        total = counter.get_total_flops()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    effective = total + declared.effective_delta
    bits = torch.finfo(compute_dtype).bits if compute_dtype.is_floating_point else torch.iinfo(compute_dtype).bits
    bops = declared.bops + (effective - declared.bops_effective) // 2 * bits * bits
    return {"dense": total + declared.dense_delta, "effective": effective, "bops": int(bops)}
