"""Half-precision cast (fp16 or bf16): the cheapest compression, and the bar kernels must beat."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slimbench.core.config import setting
from slimbench.methods.base import Compressed, CompressionContext, Method, MethodConfig, register_method


@dataclass(frozen=True)
class HalfConfig(MethodConfig):
    dtype: Literal["auto", "fp16", "bf16"] = setting("auto", "auto: fp16 on CUDA, bf16 on CPU")


@register_method("half")
class Half(Method):
    family = "reference"
    description = "Cast weights and activations to fp16 (CUDA) or bf16 (CPU)."
    config_cls = HalfConfig

    def resolved_dtype(self, device) -> str:
        import torch
        if self.config.dtype != "auto":
            return self.config.dtype
        return "fp16" if torch.device(device).type == "cuda" else "bf16"

    def supports(self, task, device):
        import torch
        if self.resolved_dtype(device) == "bf16" and torch.device(device).type == "cuda" \
                and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16 support"
        return None

    def compress(self, model, ctx: CompressionContext):
        import torch
        from slimbench.methods.common.cast import CastInputs
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.resolved_dtype(ctx.device)]
        return Compressed(CastInputs(model, dtype), meta={"dtype": str(dtype).removeprefix("torch.")})

    def restore(self, model, tensors, meta):
        import torch
        from slimbench.methods.common.cast import CastInputs
        wrapped = CastInputs(model, getattr(torch, meta["dtype"]))
        wrapped.load_state_dict(tensors, strict=True)
        return wrapped
