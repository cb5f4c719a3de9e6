"""PyTorch's own dynamic int8 quantization of Linear layers (fbgemm/x86 kernels, CPU only).

Weights are stored as int8 with one fp32 scale per output channel; activations are quantized
per batch at run time by the stock kernel. The packed weights the kernel wants are rebuilt from
the stored int8 tensors, so the artifact holds only plain tensors and is weighed honestly.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from slimbench.methods.base import CompressionContext, Method, MethodConfig, register_method
from slimbench.methods.modules import named_layers, swap_layers


@dataclass(frozen=True)
class DynamicInt8Config(MethodConfig):
    skip: tuple[str, ...] = field(default=(), metadata={
        "help": "fnmatch patterns of Linear layers kept in fp32 (e.g. '*classifier*'); ';'-separated"})


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
            with warnings.catch_warnings():  # the stock kernel still wants a qint8 tensor
                warnings.simplefilter("ignore", UserWarning)
                qw = torch._make_per_channel_quantized_tensor(
                    self.weight_int8, self.weight_scale.double(),
                    torch.zeros(self.out_features, dtype=torch.long), 0)
            self._packed = torch.ops.quantized.linear_prepack(qw, self.bias)
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float().contiguous(), self._prepacked()).to(x.dtype)

    def slim_cost(self, inputs, output) -> dict[str, int]:
        macs = inputs[0].numel() // self.in_features * self.in_features * self.out_features
        return {"dense": 2 * macs, "effective": 2 * macs}


@register_method("torch.dynamic_int8")
class DynamicInt8(Method):
    family = "quantization"
    description = "PyTorch's stock dynamic int8 Linear quantization (per-channel weights, CPU kernels)."
    config_cls = DynamicInt8Config

    def supports(self, task, device):
        if torch.device(device).type != "cpu":
            return "PyTorch's dynamic int8 kernels run on the CPU only"
        if "fbgemm" not in torch.backends.quantized.supported_engines and \
                "x86" not in torch.backends.quantized.supported_engines:
            return "this PyTorch build has no x86/fbgemm quantized engine"
        return None

    def _swap(self, model: nn.Module, fill: bool) -> list[str]:
        make = (lambda _, lin: DynamicInt8Linear.from_linear(lin)) if fill else \
            (lambda _, lin: DynamicInt8Linear(lin.in_features, lin.out_features, lin.bias is not None))
        return swap_layers(model, (nn.Linear,), make, skip=self.config.skip)

    def compress(self, model, ctx: CompressionContext):
        if not named_layers(model, (nn.Linear,), self.config.skip):
            raise ValueError("torch.dynamic_int8 found no nn.Linear layer to quantize "
                             f"(skip={self.config.skip!r})")
        self._swap(model, fill=True)
        return model

    def artifact_meta(self, model):
        return {"format": "int8 per-output-channel weights + fp32 scales",
                "layers": [n for n, m in model.named_modules() if isinstance(m, DynamicInt8Linear)]}

    def restore(self, model, tensors, meta):
        self._swap(model, fill=False)
        model.load_state_dict(tensors, strict=True)
        return model
