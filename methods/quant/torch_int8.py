"""PyTorch's own int8 Linear kernels, as reference rows: `torch.dynamic_int8` and `torch.static_int8`.

Both store int8 per-channel weights as plain tensors and rebuild the engine's packed weights
from them lazily (the stock kernels want a packed qint8 tensor, which safetensors cannot store),
so the artifact holds only plain tensors and is weighed honestly.

`torch.dynamic_int8`: activations quantized per batch at run time by `quantized::linear_dynamic`.

`torch.static_int8` scope: nn.Linear layers only. Full eager-mode static quantization needs every op between two
quantized layers to have a quantized twin (functional adds, LayerNorm, GELU, softmax, timm's
and transformers' custom blocks do not), so each Linear is made its own quantized island:
QuantStub -> Linear -> DeQuantStub, with the engine's default qconfig (HistogramObserver on
activations, per-channel symmetric MinMax on weights). torch.ao `prepare` inserts the
observers, the calibration set runs once, `convert` yields the stock quantized::linear module.

The converted module keeps its weights as engine packed params, which safetensors cannot
store; `StaticInt8Linear` keeps what `convert` produced as plain tensors (int8 weight,
per-channel scales / zero-points, input and output scale / zero-point) and repacks them
lazily, so it computes bit-for-bit what the converted torch.ao module computes.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from slimbench.methods.common.calibrate import calibration_pass
from slimbench.methods.common.layers import LINEAR, linear_cost, replace_module, swap_named, targets

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.quant.configs import DynamicInt8Config, StaticInt8Config


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

    PATH = "int8 GEMM: torch quantized::linear_dynamic (fbgemm / oneDNN)"

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
        return linear_cost(self, inputs, bits=(8, 8))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        return self.PATH

    def slim_weight(self) -> torch.Tensor:
        """The dense weight this layer computes with, for measured sparsity and FLOPs."""
        return self.weight_int8.float() * self.weight_scale[:, None]


def quantize_dynamic(model: nn.Module, cfg: "DynamicInt8Config", owner: str) -> nn.Module:
    """Swap every Linear outside the skip list for a DynamicInt8Linear."""
    layers = targets(model, cfg.skip, owner, LINEAR)
    swap_named(model, [n for n, _ in layers], lambda _, lin: DynamicInt8Linear.from_linear(lin))
    return model


@contextlib.contextmanager
def quantized_engine(engine: str):
    """Run under `engine` (packed params are engine specific), then put the global setting back."""
    before = torch.backends.quantized.engine
    if before != engine:
        torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        if torch.backends.quantized.engine != before:
            torch.backends.quantized.engine = before


class _Island(nn.Module):
    """QuantStub -> Linear -> DeQuantStub: the unit torch.ao prepares and converts."""

    def __init__(self, lin: nn.Linear, qconfig):
        from torch.ao.quantization import DeQuantStub, QuantStub
        super().__init__()
        self.quant, self.lin, self.dequant = QuantStub(), lin, DeQuantStub()
        self.qconfig = qconfig
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.dequant(self.lin(self.quant(x.float()))).to(x.dtype)


class StaticInt8Linear(nn.Module):
    """A converted torch.ao static int8 Linear held as plain tensors.

    Buffers: `weight_int8` int8 [out, in], `weight_scale` fp32 [out], `weight_zero_point`
    int32 [out], `input_scale` / `output_scale` fp32 [], `input_zero_point` /
    `output_zero_point` int32 [] (quint8 activations), `bias` fp32.
    """

    PATH = "int8 GEMM: torch quantized::linear (static, fbgemm / oneDNN)"

    def __init__(self, in_features: int, out_features: int, bias: bool, engine: str = "x86"):
        super().__init__()
        self.in_features, self.out_features, self.engine = in_features, out_features, engine
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("weight_zero_point", torch.zeros(out_features, dtype=torch.int32))
        for side in ("input", "output"):
            self.register_buffer(f"{side}_scale", torch.ones(()))
            self.register_buffer(f"{side}_zero_point", torch.zeros((), dtype=torch.int32))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed = None

    @classmethod
    def from_converted(cls, island: nn.Module, engine: str) -> "StaticInt8Linear":
        """Copy the qparams torch.ao's `convert` produced (island.quant: Quantize, island.lin: nnq.Linear)."""
        ql = island.lin
        qw = ql.weight()
        q = cls(ql.in_features, ql.out_features, ql.bias() is not None, engine)
        q.weight_int8.copy_(qw.int_repr())
        if qw.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            q.weight_scale.copy_(qw.q_per_channel_scales().float())
            q.weight_zero_point.copy_(qw.q_per_channel_zero_points().to(torch.int32))
        else:  # a per-tensor qconfig: broadcast to the per-channel layout
            q.weight_scale.fill_(qw.q_scale())
            q.weight_zero_point.fill_(qw.q_zero_point())
        q.input_scale.fill_(float(island.quant.scale))
        q.input_zero_point.fill_(int(island.quant.zero_point))
        q.output_scale.fill_(float(ql.scale))
        q.output_zero_point.fill_(int(ql.zero_point))
        if ql.bias() is not None:
            q.bias.copy_(ql.bias().detach().float())
        return q

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def _prepacked(self):
        if self._packed is None:
            packed = prepack_int8(self.weight_int8, self.weight_scale, self.weight_zero_point, self.bias)
            self._packed = (packed, float(self.input_scale), int(self.input_zero_point),
                            float(self.output_scale), int(self.output_zero_point))
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with quantized_engine(self.engine):
            packed, in_s, in_z, out_s, out_z = self._prepacked()
            qx = torch.quantize_per_tensor(x.float().contiguous(), in_s, in_z, torch.quint8)
            return torch.ops.quantized.linear(qx, packed, out_s, out_z).dequantize().to(x.dtype)

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return linear_cost(self, inputs, bits=(8, 8))

    def slim_path(self, device: str, dtype: torch.dtype) -> str:
        return self.PATH

    def slim_weight(self) -> torch.Tensor:
        """The dense weight this layer computes with, for measured sparsity and FLOPs."""
        return (self.weight_int8.float() - self.weight_zero_point[:, None].float()) * self.weight_scale[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, engine={self.engine}"


def _calibrate(model: nn.Module, islands: dict[str, _Island], ctx: "CompressionContext", owner: str) -> None:
    calibration_pass(model, ctx, owner, "static activation quantization",
                     lambda: [n for n, isl in islands.items() if isl.calls == 0])


def quantize_static(model: nn.Module, cfg: "StaticInt8Config", owner: str, ctx: "CompressionContext") -> nn.Module:
    """Wrap each Linear, prepare -> calibrate -> convert with torch.ao, keep plain-tensor twins."""
    import torch.ao.quantization as tq

    layers = targets(model, cfg.skip, owner, LINEAR)
    with quantized_engine(cfg.engine), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's eager-mode deprecation notices
        qconfig = tq.get_default_qconfig(cfg.engine)
        islands = {}
        for name, lin in layers:
            islands[name] = _Island(lin, qconfig)
            replace_module(model, name, islands[name])
            tq.prepare(islands[name], inplace=True)
        _calibrate(model, islands, ctx, owner)
        for name, isl in islands.items():
            tq.convert(isl, inplace=True)
            replace_module(model, name, StaticInt8Linear.from_converted(isl, cfg.engine))
    return model
