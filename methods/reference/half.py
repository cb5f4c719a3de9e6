"""Half-precision cast (fp16 or bf16): the cheapest compression, and the bar kernels must beat."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from slimbench.methods.base import CompressionContext, Method, MethodConfig, register_method

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class HalfConfig(MethodConfig):
    dtype: Literal["auto", "fp16", "bf16"] = field(
        default="auto", metadata={"help": "auto: fp16 on CUDA, bf16 on CPU"})


class CastInputs(nn.Module):
    """Runs a model in a low-precision dtype: casts float inputs in and logits back to fp32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    def forward(self, **inputs):
        cast = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        return self.model(**cast).float()


@register_method("half")
class Half(Method):
    family = "reference"
    description = "Cast weights and activations to fp16 (CUDA) or bf16 (CPU)."
    config_cls = HalfConfig

    def resolved_dtype(self, device: torch.device | str) -> str:
        if self.config.dtype != "auto":
            return self.config.dtype
        return "fp16" if torch.device(device).type == "cuda" else "bf16"

    def supports(self, task, device):
        if self.resolved_dtype(device) == "bf16" and torch.device(device).type == "cuda" \
                and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16 support"
        return None

    def compress(self, model, ctx: CompressionContext):
        return CastInputs(model, _DTYPES[self.resolved_dtype(ctx.device)])

    def artifact_meta(self, model):
        return {"dtype": str(model.dtype).removeprefix("torch.")}

    def restore(self, model, tensors, meta):
        wrapped = CastInputs(model, getattr(torch, meta["dtype"]))
        wrapped.load_state_dict(tensors, strict=True)
        return wrapped
