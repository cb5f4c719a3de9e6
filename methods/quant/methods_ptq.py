"""Post-training quantization plugins: `quant.gptq`, `torch.static_int8` and `quant.fp8`.

Declared without importing torch (as `methods`): registering them must stay cheap for
`slimbench list`; the layers (`gptq`, `torch_static`, `fp8`) load inside compress / restore /
supports. Literal fields are re-checked in `__post_init__` because a config built directly
(not through `build`) would otherwise accept any string.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from slimbench.methods.base import CompressionContext, Method, MethodConfig, register_method
from slimbench.methods.quant.compute import COMPUTE_HELP, Compute
from slimbench.methods.quant.methods import BN_HELP, MinMax, check_compute
from slimbench.methods.quant.options import DEFAULT_SKIP, SKIP_HELP, check_bits
from slimbench.suite.config import check

Granularity = Literal["tensor", "channel", "group"]
_GRANULARITIES = ("tensor", "channel", "group")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    check(value in choices, f"{name}={value!r} is not valid; choose one of {', '.join(map(str, choices))}")


# ---------------------------------------------------------------- quant.gptq

@dataclass(frozen=True)
class GPTQConfig(MethodConfig):
    """Same grid fields (and names) as MinMaxConfig: restore reuses quant.minmax's rebuild."""

    bits: int = field(default=4, metadata={"help": "weight bits: 2, 3, 4 or 8"})
    granularity: Granularity = field(default="group", metadata={
        "help": "nn.Linear scales: one per tensor, per output channel, or per group of input features"})
    group_size: int = field(default=128, metadata={
        "help": "inputs per group (granularity=group); a row no longer than this is one group; "
                "otherwise it must divide the row length"})
    conv_granularity: Granularity = field(default="channel", metadata={
        "help": "nn.Conv2d scales over the [out, in/groups*kh*kw] weight view"})
    symmetric: bool = field(default=True, metadata={"help": "symmetric (no zero-point) or asymmetric min-max grid"})
    damp: float = field(default=0.01, metadata={
        "help": "added to the Hessian diagonal, as a fraction of its mean (keeps the Cholesky stable)"})
    block_size: int = field(default=128, metadata={
        "help": "columns per lazy batch update (speed only; the result is the same up to rounding)"})
    act_order: bool = field(default=False, metadata={
        "help": "quantize columns in order of decreasing Hessian diagonal; group scales are then fixed "
                "from the original weights (static groups) so storage stays contiguous"})
    recalibrate_bn: bool = field(default=False, metadata={"help": BN_HELP})
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP, metadata={"help": SKIP_HELP})
    compute: Compute = field(default="auto", metadata={"help": COMPUTE_HELP})

    def __post_init__(self):
        check_bits(self.bits)
        _check_choice("granularity", self.granularity, _GRANULARITIES)
        _check_choice("conv_granularity", self.conv_granularity, _GRANULARITIES)
        check(self.group_size >= 1, f"group_size={self.group_size!r} must be >= 1")
        check(0 <= self.damp <= 1, f"damp={self.damp!r} must be in [0, 1] (fraction of the mean Hessian diagonal)")
        check(self.block_size >= 1, f"block_size={self.block_size!r} must be >= 1")
        check_compute(self.compute)


@register_method("quant.gptq")
class GPTQ(MinMax):
    family = "quantization"
    description = ("GPTQ: second-order (Hessian from calibration inputs) weight-only quantization of Linear and "
                   "Conv2d onto the quant.minmax grid and bit-packed format.")
    config_cls = GPTQConfig
    grid_name = "GPTQ"

    def _compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.gptq import quantize_model
        return quantize_model(model, self.config, self.name, ctx)


# ---------------------------------------------------------------- torch.static_int8

@dataclass(frozen=True)
class StaticInt8Config(MethodConfig):
    engine: Literal["x86", "fbgemm"] = field(default="x86", metadata={
        "help": "torch.backends.quantized engine whose default qconfig and kernels are used"})
    skip: tuple[str, ...] = field(default=(), metadata={
        "help": "fnmatch patterns of Linear layers kept in fp32 (e.g. '*classifier*'); ';'-separated"})

    def __post_init__(self):
        _check_choice("engine", self.engine, ("x86", "fbgemm"))


@register_method("torch.static_int8")
class StaticInt8(Method):
    family = "quantization"
    description = ("PyTorch's stock eager post-training static int8 (torch.ao prepare/calibrate/convert, "
                   "CPU kernels), Linear layers only: each is quantized -> quantized::linear -> dequantized.")
    config_cls = StaticInt8Config

    def supports(self, task, device):
        import torch
        if torch.device(device).type != "cpu":
            return "PyTorch's eager static int8 kernels run on the CPU only"
        if self.config.engine not in torch.backends.quantized.supported_engines:
            return f"this PyTorch build has no {self.config.engine!r} quantized engine"
        return None

    def compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.torch_static import quantize_model
        return quantize_model(model, self.config, self.name, ctx)

    def artifact_meta(self, model) -> dict[str, Any]:
        from slimbench.methods.quant.torch_static import quantized_names
        return {"format": f"int8 per-channel weights + fp32 scales, static uint8 activations "
                          f"(per-layer input/output scale + zero-point), {self.config.engine} engine",
                "layers": quantized_names(model)}

    def restore(self, model, tensors, meta):
        from slimbench.methods.quant.torch_static import rebuild
        rebuild(model, meta, self.config).load_state_dict(tensors, strict=True)
        return model


# ---------------------------------------------------------------- quant.fp8

@dataclass(frozen=True)
class FP8Config(MethodConfig):
    scaling: Literal["tensor", "row"] = field(default="tensor", metadata={
        "help": "tensor: one weight scale and one dynamic activation scale per call; row: per output "
                "channel weight scales and per-token activation scales"})
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP, metadata={"help": SKIP_HELP})

    def __post_init__(self):
        _check_choice("scaling", self.scaling, ("tensor", "row"))


@register_method("quant.fp8")
class FP8(Method):
    family = "quantization"
    description = "FP8 e4m3 W8A8 Linear layers via torch._scaled_mm (CUDA, compute capability >= 8.9 only)."
    config_cls = FP8Config

    def supports(self, task, device):
        import torch
        device = torch.device(device)
        if device.type != "cuda":
            return "FP8 W8A8 needs torch._scaled_mm on a CUDA GPU with compute capability >= 8.9 (Ada/Hopper)"
        if not torch.cuda.is_available():
            return "CUDA is not available"
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            return f"FP8 _scaled_mm needs compute capability >= 8.9; this GPU is {major}.{minor}"
        return None

    def compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.fp8 import quantize_model
        return quantize_model(model, self.config, self.name)

    def artifact_meta(self, model) -> dict[str, Any]:
        from slimbench.methods.quant.fp8 import quantized_names
        return {"format": f"float8_e4m3fn weights + fp32 {self.config.scaling}-wise scales, "
                          f"dynamic {'per-tensor' if self.config.scaling == 'tensor' else 'per-token'} "
                          "fp8 activations",
                "layers": quantized_names(model)}

    def restore(self, model, tensors, meta):
        from slimbench.methods.quant.fp8 import rebuild
        rebuild(model, meta, self.config).load_state_dict(tensors, strict=True)
        return model
