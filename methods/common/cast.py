"""Running a compressed model in a low-precision dtype (`half`, and `compute=` of layer-swap methods).

Why: the GPU kernels take fp16/bf16 activations (W4A16, codebook) or write the activation
dtype (W8A8), but tasks feed fp32. Left in fp32 on CUDA, a weight-only layer would dequantize
and call cuBLAS in fp32, so a CUDA row would time a path nobody deploys. `auto` therefore runs
CUDA in fp16 (inputs cast in, logits cast back to fp32, unchanged layers cast to fp16, as the
`half` reference row does) and keeps the CPU reference path in fp32. Layers marked
`PackedStorage` keep their storage dtypes (fp16 scales, fp32 int8 scales, codebooks): those are
the format, not the compute dtype. The resolved dtype is recorded in the artifact.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

_TORCH_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class PackedStorage:
    """Marks layers whose tensors are a storage format (codes, scales, codebooks): casting a
    model's compute dtype leaves them alone."""


class CastInputs(nn.Module):
    """Runs a model in a low-precision dtype: casts float inputs in and logits back to fp32.

    `keep`: module types whose own tensors are left as they are (compressed layers, whose
    scales and codebooks are part of their storage format); everything else is cast."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, keep: type | tuple[type, ...] = ()):
        super().__init__()
        if keep:
            for m in model.modules():
                if not isinstance(m, keep):
                    m._apply(lambda t: t.to(dtype) if t.is_floating_point() else t, recurse=False)
            self.model = model
        else:
            self.model = model.to(dtype)
        self.dtype = dtype

    def forward(self, **inputs):
        cast = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        return self.model(**cast).float()


def resolve(compute: str, device: Any) -> str:
    """`auto` -> fp16 on CUDA, fp32 elsewhere; explicit choices pass through."""
    if compute != "auto":
        return compute
    return "fp16" if str(device).startswith("cuda") else "fp32"


def wrap(model: nn.Module, compute: str, device: Any) -> nn.Module:
    """The compressed `model`, wrapped to run in the resolved dtype (unchanged for fp32)."""
    return _wrap(model, _TORCH_NAMES[resolve(compute, device)])


def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """(the compressed model inside, its compute dtype name) for artifact metadata."""
    if isinstance(model, CastInputs):
        return model.model, str(model.dtype).removeprefix("torch.")
    return model, "float32"


def rewrap(model: nn.Module, meta: dict) -> nn.Module:
    """Restore-time twin of `wrap`: the dtype comes from the artifact, not the current device."""
    return _wrap(model, meta.get("compute_dtype", "float32"))


def _wrap(model: nn.Module, dtype_name: str) -> nn.Module:
    if dtype_name == "float32":
        return model
    return CastInputs(model, getattr(torch, dtype_name), keep=PackedStorage)
