"""The quantization method plugins, registered without importing torch.

Each is a `LayerSwapMethod`: its config (in `configs`) says which layers and how; the layers,
packing and kernels (`linear`, `kmeans`, `w8a8`, `gptq`, `qat`, `torch_int8`, `fp8`) are imported
inside compress / restore / supports when a method actually runs.
"""
from __future__ import annotations

from typing import Any

from slimbench.methods.base import CompressionContext, register_method
from slimbench.methods.common.swap import LayerSwapMethod
from slimbench.methods.quant.configs import (DynamicInt8Config, FP8Config, GPTQConfig, KMeansConfig, MinMaxConfig,
                                             ProgressiveConfig, QATConfig, StaticInt8Config, W8A8Config)


class QuantMethod(LayerSwapMethod):
    """A method whose config has `convs` (`SwapConfig`) implements `_quantize(model, ctx, cfg)`:
    `cfg` is its config with the convs the policy keeps added to `skip`, so every layer helper
    sees one selection."""

    family = "quantization"

    def _quantize(self, model, ctx: CompressionContext, cfg):
        raise NotImplementedError

    def _swap(self, model, ctx: CompressionContext):
        import dataclasses

        from torch import nn

        from slimbench.methods.common.layers import NoTargets, eligible

        cfg = self.config
        if cfg.quantizes_convs(ctx.device):
            return self._quantize(model, ctx, cfg)
        kept = [n for n, _ in eligible(model, cfg.skip, (nn.Conv2d,))]
        why = ("convs=keep keeps nn.Conv2d layers" if cfg.convs == "keep" else
               "convs=auto keeps nn.Conv2d layers when compressing for CUDA, where no conv kernel beats "
               "dequantize + cuDNN yet; convs=quantize quantizes them anyway")
        try:
            out = self._quantize(model, ctx, dataclasses.replace(cfg, skip=(*cfg.skip, *kept)))
        except NoTargets as exc:
            raise NoTargets(f"{self.name} found no layer to quantize outside skip={tuple(cfg.skip)!r} but "
                            f"{len(kept)} nn.Conv2d layer(s), and {why}") from exc
        model, metrics = out if isinstance(out, tuple) else (out, {})
        return model, {**metrics, "convs_kept": {"layers": len(kept), "reason": why}} if kept else metrics


# ---------------------------------------------------------------- quant.minmax, quant.gptq

def _grid_text(cfg: MinMaxConfig, grid_name: str) -> str:
    gran = f"{cfg.granularity}{f' g{cfg.group_size}' if cfg.granularity == 'group' else ''}"
    conv = f"{cfg.conv_granularity}{f' g{cfg.group_size}' if cfg.conv_granularity == 'group' else ''}"
    return (f"{cfg.bits}-bit {'symmetric' if cfg.symmetric else 'asymmetric'} {grid_name}, linear {gran}, "
            f"conv {conv}, bit-packed uint8 codes + fp16 scales" + ("" if cfg.symmetric else " + uint8 zeros"))


class _PackedGrid(QuantMethod):
    """Methods whose artifact is quant.minmax's packed format (`minmax_config()` describes it)."""

    grid_name = "min-max"  # how the codes were chosen

    def minmax_config(self) -> MinMaxConfig:
        return self.config

    def _twins(self):
        from slimbench.methods.quant.linear import QuantLinear
        return (QuantLinear,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.quant.linear import empty_twin
        return empty_twin(layer, self.minmax_config())

    def _format(self) -> str:
        return _grid_text(self.minmax_config(), self.grid_name)


@register_method("quant.minmax")
class MinMax(_PackedGrid):
    description = ("Weight-only min-max quantization of Linear and Conv2d layers (2/3/4/8-bit, "
                   "per-tensor/channel/group), bit-packed.")
    config_cls = MinMaxConfig

    def _quantize(self, model, ctx: CompressionContext, cfg):
        from slimbench.methods.quant.linear import quantize_model
        return quantize_model(model, cfg, self.name)


@register_method("quant.gptq")
class GPTQ(_PackedGrid):
    description = ("GPTQ: second-order (Hessian from calibration inputs) weight-only quantization of Linear and "
                   "Conv2d onto the quant.minmax grid and bit-packed format.")
    config_cls = GPTQConfig
    grid_name = "GPTQ"

    def _quantize(self, model, ctx: CompressionContext, cfg):
        from slimbench.methods.quant.gptq import quantize_model
        return quantize_model(model, cfg, self.name, ctx)


@register_method("quant.qat")
class QAT(_PackedGrid):
    description = ("Quantization-aware training (STE + LSQ learned step sizes) of Linear/Conv2d weights for the "
                   "fine-tuning budget (on the labels, or distilled from the teacher with loss=kd), then stored "
                   "bit-packed like quant.minmax.")
    config_cls = QATConfig

    def minmax_config(self) -> MinMaxConfig:
        return self.config.minmax_config()

    def _format(self) -> str:
        return f"{self.name}: LSQ-learned scales, " + super()._format()

    def _quantize(self, model, ctx: CompressionContext, cfg):
        from slimbench.methods.quant.qat import compress_qat, teacher_kd
        loss = teacher_kd(ctx, cfg.temperature, cfg.alpha) if cfg.loss == "kd" else None
        return compress_qat(model, ctx, cfg.minmax_config(), self.name, loss)


@register_method("quant.progressive")
class Progressive(QAT):
    description = ("Progressive QAT: fake-quant fine-tuning at descending bit-widths (default 8 then 4), "
                   "budget split across stages, final stage stored bit-packed like quant.minmax.")
    config_cls = ProgressiveConfig

    def _quantize(self, model, ctx: CompressionContext, cfg):
        from slimbench.methods.quant.progressive import compress_progressive
        return compress_progressive(model, ctx, cfg.minmax_config(), cfg.schedule, self.name)


# ---------------------------------------------------------------- quant.kmeans

@register_method("quant.kmeans")
class KMeans(QuantMethod):
    description = "Per-layer k-means codebook (scalar or vector) for Linear and Conv2d, packed indices + fp16 codebook."
    config_cls = KMeansConfig

    def _quantize(self, model, ctx: CompressionContext, cfg):
        from slimbench.methods.quant.kmeans import finetune_codebooks, quantize_model
        quantize_model(model, cfg, self.name, ctx.seed)
        if cfg.finetune and ctx.budget_steps > 0:
            finetune_codebooks(model, ctx, desc=f"{self.name} codebooks", rel_lr=cfg.rel_lr)
        return model

    def _twins(self):
        from slimbench.methods.quant.kmeans import CodebookLinear
        return (CodebookLinear,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.quant.kmeans import empty_twin
        return empty_twin(layer, self.config)

    def _format(self) -> str:
        c = self.config
        return f"k-means codebook, {c.bits}-bit indices over {c.dim}-dim vectors, fp16 codebook"


# ---------------------------------------------------------------- quant.w8a8

@register_method("quant.w8a8")
class W8A8(QuantMethod):
    description = ("int8 weights (per-channel) x int8 activations (per-token dynamic or calibrated static, "
                   "symmetric or zero-point), Linear and Conv2d (groups=1, via im2col).")
    config_cls = W8A8Config

    def supports(self, task, device):
        """Unsupported on a vision task whose model has nothing W8A8 can take outside the skip list
        (no nn.Linear and no groups=1, zero-padded nn.Conv2d).

        Only vision models are inspected: building one is cheap; a run that fails later still
        raises from compress."""
        if getattr(task, "kind", None) != "vision":  # no task (a bare-model benchmark): compress decides
            return None
        return self.model_reason(task)

    def model_unsupported(self, model):
        from slimbench.methods.quant.w8a8_model import has_targets
        if has_targets(model, self.config.skip):
            return None
        return (f"{self.name} quantizes nn.Linear and groups=1 nn.Conv2d layers; this task's model has "
                "none outside the skip list")

    def _quantize(self, model, ctx: CompressionContext, cfg):
        from slimbench.methods.quant.w8a8_model import quantize_model
        return quantize_model(model, cfg, self.name, ctx)

    def _twins(self):
        from slimbench.methods.quant.w8a8 import W8A8Base
        return (W8A8Base,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.quant.w8a8_model import empty_twin
        return empty_twin(layer, self.config)

    def _format(self) -> str:
        c = self.config
        acts = f"{c.activations} {'symmetric' if c.act_symmetric else 'asymmetric (zero-point)'} int8 activations"
        return f"int8 per-channel weights + fp32 scales, {acts}"

    def _meta(self, model) -> dict[str, Any]:
        from slimbench.methods.quant.w8a8_fuse import fused_meta
        fused = fused_meta(model)
        return {"fused_act": fused} if fused else {}

    def _metrics(self, model) -> dict[str, Any]:
        """`kept_fp32`: convs outside the skip list left in fp32 (grouped / depthwise, non-zero
        padding), with the reason, so a reader sees they were not silently quantized."""
        from slimbench.methods.quant.w8a8_model import kept_fp32
        return {"kept_fp32": kept_fp32(model, self.config.skip)}

    def _rebuilt(self, model, meta):
        if meta.get("fused_act"):
            from slimbench.methods.quant.w8a8_fuse import apply
            apply(model, meta["fused_act"], fill=False)
        return model


# ---------------------------------------------------------------- torch.dynamic_int8, torch.static_int8, quant.fp8

def _stock_int8_reason(device, engines: tuple[str, ...]) -> str | None:
    import torch
    if torch.device(device).type != "cpu":
        return "PyTorch's int8 kernels (quantized::linear*) run on the CPU only"
    if not set(engines) & set(torch.backends.quantized.supported_engines):
        return f"this PyTorch build has no {' or '.join(repr(e) for e in engines)} quantized engine"
    return None


@register_method("torch.dynamic_int8")
class DynamicInt8(QuantMethod):
    description = "PyTorch's stock dynamic int8 Linear quantization (per-channel weights, CPU kernels)."
    config_cls = DynamicInt8Config

    def supports(self, task, device):
        return _stock_int8_reason(device, ("x86", "fbgemm"))

    def _swap(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.torch_int8 import quantize_dynamic
        return quantize_dynamic(model, self.config, self.name)

    def _twins(self):
        from slimbench.methods.quant.torch_int8 import DynamicInt8Linear
        return (DynamicInt8Linear,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.quant.torch_int8 import DynamicInt8Linear
        return DynamicInt8Linear(layer.in_features, layer.out_features, layer.bias is not None)

    def _format(self) -> str:
        return "int8 per-output-channel weights + fp32 scales"


@register_method("torch.static_int8")
class StaticInt8(QuantMethod):
    description = ("PyTorch's stock eager post-training static int8 (torch.ao prepare/calibrate/convert, "
                   "CPU kernels), Linear layers only: each is quantized -> quantized::linear -> dequantized.")
    config_cls = StaticInt8Config

    def supports(self, task, device):
        return _stock_int8_reason(device, (self.config.engine,))

    def _swap(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.torch_int8 import quantize_static
        return quantize_static(model, self.config, self.name, ctx)

    def _twins(self):
        from slimbench.methods.quant.torch_int8 import StaticInt8Linear
        return (StaticInt8Linear,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.quant.torch_int8 import StaticInt8Linear
        return StaticInt8Linear(layer.in_features, layer.out_features, layer.bias is not None, self.config.engine)

    def _format(self) -> str:
        return (f"int8 per-channel weights + fp32 scales, static uint8 activations "
                f"(per-layer input/output scale + zero-point), {self.config.engine} engine")


@register_method("quant.fp8")
class FP8(QuantMethod):
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
        return self.model_reason(task)

    def model_unsupported(self, model):
        from slimbench.methods.common.layers import eligible
        if eligible(model, self.config.skip):
            return None
        return (f"{self.name} quantizes nn.Linear layers; this task's model has none outside the skip list "
                f"(skip={tuple(self.config.skip)!r})")

    def _swap(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.fp8 import quantize_model
        return quantize_model(model, self.config, self.name)

    def _twins(self):
        from slimbench.methods.quant.fp8 import FP8Linear
        return (FP8Linear,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.quant.fp8 import FP8Linear
        return FP8Linear(layer.in_features, layer.out_features, layer.bias is not None, self.config.scaling)

    def _format(self) -> str:
        return (f"float8_e4m3fn weights + fp32 {self.config.scaling}-wise scales, "
                f"dynamic {'per-tensor' if self.config.scaling == 'tensor' else 'per-token'} fp8 activations")
