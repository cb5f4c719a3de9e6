"""PyTorch's own dynamic int8 quantization of Linear layers (fbgemm/x86 kernels, CPU only).

Weights are stored as int8 with one fp32 scale per output channel; activations are quantized
per batch at run time by the stock kernel. The packed weights the kernel wants are rebuilt from
the stored int8 tensors, so the artifact holds only plain tensors and is weighed honestly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from slimbench.methods.base import CompressionContext, Method, MethodConfig, register_method


@dataclass(frozen=True)
class DynamicInt8Config(MethodConfig):
    skip: tuple[str, ...] = field(default=(), metadata={
        "help": "fnmatch patterns of Linear layers kept in fp32 (e.g. '*classifier*'); ';'-separated"})


@register_method("torch.dynamic_int8")
class DynamicInt8(Method):
    family = "quantization"
    description = "PyTorch's stock dynamic int8 Linear quantization (per-channel weights, CPU kernels)."
    config_cls = DynamicInt8Config

    def supports(self, task, device):
        import torch
        if torch.device(device).type != "cpu":
            return "PyTorch's dynamic int8 kernels run on the CPU only"
        if "fbgemm" not in torch.backends.quantized.supported_engines and \
                "x86" not in torch.backends.quantized.supported_engines:
            return "this PyTorch build has no x86/fbgemm quantized engine"
        return None

    def _swap(self, model, fill: bool) -> list[str]:
        from torch import nn

        from slimbench.methods.modules import swap_layers
        from slimbench.methods.reference.layers import DynamicInt8Linear
        make = (lambda _, lin: DynamicInt8Linear.from_linear(lin)) if fill else \
            (lambda _, lin: DynamicInt8Linear(lin.in_features, lin.out_features, lin.bias is not None))
        return swap_layers(model, (nn.Linear,), make, skip=self.config.skip)

    def compress(self, model, ctx: CompressionContext):
        from torch import nn

        from slimbench.methods.modules import named_layers
        if not named_layers(model, (nn.Linear,), self.config.skip):
            raise ValueError("torch.dynamic_int8 found no nn.Linear layer to quantize "
                             f"(skip={self.config.skip!r})")
        self._swap(model, fill=True)
        return model

    def artifact_meta(self, model):
        from slimbench.methods.reference.layers import DynamicInt8Linear
        return {"format": "int8 per-output-channel weights + fp32 scales",
                "layers": [n for n, m in model.named_modules() if isinstance(m, DynamicInt8Linear)]}

    def restore(self, model, tensors, meta):
        self._swap(model, fill=False)
        model.load_state_dict(tensors, strict=True)
        return model
