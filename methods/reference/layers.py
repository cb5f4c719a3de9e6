"""Modules the reference methods build; imported only when a method runs (keeps `list` fast)."""
from __future__ import annotations

import warnings

import torch
from torch import nn


class CastInputs(nn.Module):
    """Runs a model in a low-precision dtype: casts float inputs in and logits back to fp32.

    `keep`: module types whose own tensors are left as they are (quantized layers, whose
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


def prepack_int8(weight_int8: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                 bias: torch.Tensor | None):
    """Stock fbgemm/x86 packed weights from the stored int8 codes + per-channel scales (the
    stock kernels still want a qint8 tensor; building one warns, hence the filter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(weight_int8, scale.double(), zero_point.long(), 0)
    return torch.ops.quantized.linear_prepack(qw, bias)


class DynamicInt8Linear(nn.Module):
    """A Linear whose weight is int8 per-channel; runs `quantized::linear_dynamic`."""

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed = None

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> "DynamicInt8Linear":
        q = cls(lin.in_features, lin.out_features, lin.bias is not None)
        w = lin.weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        q.weight_int8.copy_(torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        q.weight_scale.copy_(scale)
        if lin.bias is not None:
            q.bias.copy_(lin.bias.detach())
        return q

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def _prepacked(self):
        if self._packed is None:
            self._packed = prepack_int8(self.weight_int8, self.weight_scale,
                                        torch.zeros(self.out_features, dtype=torch.long), self.bias)
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float().contiguous(), self._prepacked()).to(x.dtype)

    def slim_cost(self, inputs, output) -> dict[str, int]:
        macs = inputs[0].numel() // self.in_features * self.in_features * self.out_features
        return {"dense": 2 * macs, "effective": 2 * macs}
