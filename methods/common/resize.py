"""Fit a freshly built model's layers to saved tensors of other shapes (channel-pruned, narrowed).

Why: a structurally pruned model is the task's architecture with fewer channels, heads or
neurons, which the task's builder usually cannot express. Restoring it from its artifact alone
means building the task's model, then resizing each Linear / Conv / BatchNorm / LayerNorm /
Embedding (subclasses included, such as timm's BatchNormAct2d) whose saved weight has another
shape: its parameters and buffers are replaced by empty ones of the saved shapes and its size
attributes updated, in place, so `load_state_dict(strict=True)` then fits and everything else
about the layer (stride, padding, eps, fused activations) stays as built. Attributes a model
keeps outside its layers (an attention module's head count, say) are the method's to restore.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd


def _saved(tensors: Mapping[str, torch.Tensor], prefix: str, name: str) -> torch.Tensor | None:
    return tensors.get(f"{prefix}.{name}" if prefix else name)


def _param(module: nn.Module, name: str, like: torch.Tensor | None, dtype: torch.dtype) -> None:
    """Replace parameter `name` by an empty one shaped like `like` (or remove it when `like` is None)."""
    if getattr(module, name, None) is None and like is None:
        return
    setattr(module, name, None if like is None else nn.Parameter(torch.empty(like.shape, dtype=dtype)))


def _resize(layer: nn.Module, w: torch.Tensor, prefix: str, tensors: Mapping[str, torch.Tensor]) -> bool:
    """Resize `layer` in place to saved weight `w`; False if its kind is not handled."""
    bias = _saved(tensors, prefix, "bias")
    if isinstance(layer, nn.Linear):
        _param(layer, "weight", w, w.dtype)
        _param(layer, "bias", bias, w.dtype)
        layer.out_features, layer.in_features = w.shape
        return True
    if isinstance(layer, _ConvNd):
        depthwise = layer.groups > 1 and layer.groups == layer.in_channels == layer.out_channels
        channels_last = layer.weight.dim() == 4 and not layer.weight.is_contiguous() \
            and layer.weight.is_contiguous(memory_format=torch.channels_last)
        _param(layer, "weight", w, w.dtype)
        if channels_last:
            layer.weight = nn.Parameter(layer.weight.data.contiguous(memory_format=torch.channels_last))
        _param(layer, "bias", bias, w.dtype)
        layer.groups = w.shape[0] if depthwise else layer.groups
        layer.out_channels, layer.in_channels = w.shape[0], w.shape[1] * layer.groups
        return True
    if isinstance(layer, _BatchNorm):
        n = w.shape[0]
        if layer.affine:
            _param(layer, "weight", w, w.dtype)
            _param(layer, "bias", bias, w.dtype)
        if layer.track_running_stats:
            layer.running_mean = torch.zeros(n)
            layer.running_var = torch.ones(n)
        layer.num_features = n
        return True
    if isinstance(layer, nn.LayerNorm):
        _param(layer, "weight", w, w.dtype)
        _param(layer, "bias", bias, w.dtype)
        layer.normalized_shape = tuple(w.shape)
        return True
    if isinstance(layer, nn.Embedding):
        _param(layer, "weight", w, w.dtype)
        layer.num_embeddings, layer.embedding_dim = w.shape
        if layer.padding_idx is not None and layer.padding_idx >= w.shape[0]:
            layer.padding_idx = None
        return True
    return False


def fit_to_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Resize every layer whose saved weight (or BatchNorm running mean) differs in shape from its
    own to the saved shape; returns the names resized. Shapes that already match are left alone,
    so this is a no-op for an unchanged architecture."""
    changed = []
    for name, layer in list(model.named_modules()):
        own = getattr(layer, "weight", None)
        saved = _saved(tensors, name, "weight")
        if saved is None and isinstance(layer, _BatchNorm):
            own, saved = layer.running_mean, _saved(tensors, name, "running_mean")
        if saved is None or not isinstance(own, torch.Tensor) or tuple(own.shape) == tuple(saved.shape):
            continue
        if not _resize(layer, saved, name, tensors):
            raise ValueError(f"saved tensor {name}.weight has shape {tuple(saved.shape)} but the model's "
                             f"{type(layer).__name__} {name!r} has {tuple(own.shape)}; this layer kind cannot be "
                             "resized automatically (the method's restore must rebuild it)")
        changed.append(name)
    return changed
