"""Fit a freshly built model's layers to saved tensors of other shapes (channel-pruned, narrowed).

Why: a structurally pruned model is the task's architecture with fewer channels, heads or
neurons, which the task's builder usually cannot express. Restoring it from its artifact alone
means building the task's model, then replacing each Linear / Conv / Norm / Embedding whose saved
weight has another shape by the same kind of layer at the saved shape (same stride, padding,
eps...), so `load_state_dict(strict=True)` then fits. Attributes a model keeps outside its
layers (an attention module's head count, say) are the method's to restore.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from slimbench.methods.common.layers import replace_module

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _saved(tensors: Mapping[str, torch.Tensor], prefix: str, name: str) -> torch.Tensor | None:
    return tensors.get(f"{prefix}.{name}" if prefix else name)


def _resized(layer: nn.Module, w: torch.Tensor, prefix: str, tensors: Mapping[str, torch.Tensor]) -> nn.Module | None:
    """A layer like `layer` shaped for saved weight `w` (None if the kind is not handled)."""
    has_bias = _saved(tensors, prefix, "bias") is not None
    if type(layer) is nn.Linear:
        return nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
    if type(layer) in _CONVS:
        depthwise = layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels
        groups = w.shape[0] if depthwise else layer.groups
        new = type(layer)(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, groups=groups, bias=has_bias,
                          padding_mode=layer.padding_mode)
        if layer.weight.dim() == 4 and layer.weight.is_contiguous(memory_format=torch.channels_last) \
                and not layer.weight.is_contiguous():
            new = new.to(memory_format=torch.channels_last)
        return new
    if type(layer) in _NORMS:
        return type(layer)(w.shape[0], eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                           track_running_stats=layer.track_running_stats)
    if type(layer) is nn.LayerNorm:
        return nn.LayerNorm(tuple(w.shape), eps=layer.eps, elementwise_affine=layer.elementwise_affine,
                            bias=has_bias)
    if type(layer) is nn.Embedding:
        pad = layer.padding_idx if layer.padding_idx is not None and layer.padding_idx < w.shape[0] else None
        return nn.Embedding(w.shape[0], w.shape[1], padding_idx=pad)
    return None


def fit_to_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Replace every layer whose saved weight (or BatchNorm running mean) differs in shape from
    its own by a layer of the saved shape; returns the names replaced. Shapes that already
    match are left alone, so this is a no-op for an unchanged architecture."""
    changed = []
    for name, layer in list(model.named_modules()):
        own = getattr(layer, "weight", None)
        saved = _saved(tensors, name, "weight")
        if saved is None and type(layer) in _NORMS:
            own, saved = layer.running_mean, _saved(tensors, name, "running_mean")
        if saved is None or not isinstance(own, torch.Tensor) or tuple(own.shape) == tuple(saved.shape):
            continue
        new = _resized(layer, saved, name, tensors)
        if new is None:
            raise ValueError(f"saved tensor {name}.weight has shape {tuple(saved.shape)} but the model's "
                             f"{type(layer).__name__} {name!r} has {tuple(own.shape)}; this layer kind cannot be "
                             "resized automatically (the method's restore must rebuild it)")
        replace_module(model, name, new.to(dtype=saved.dtype if saved.is_floating_point() else own.dtype))
        changed.append(name)
    return changed
