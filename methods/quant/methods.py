"""The quantization method plugins: configs and `Method` classes, with no torch import.

Registration runs when the registry loads its built-ins (`slimbench list`, `--help`), so this
module only declares; the layers, packing and kernels (`linear`, `kmeans`, `w8a8`) are
imported inside compress / restore / supports when a method actually runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from slimbench.methods.base import CompressionContext, Method, MethodConfig, register_method
from slimbench.methods.quant.compute import COMPUTE_HELP, Compute
from slimbench.methods.quant.options import DEFAULT_SKIP, SKIP_HELP, check_bits
from slimbench.suite.config import check

Granularity = Literal["tensor", "channel", "group"]
_COMPUTES = ("auto", "fp32", "fp16", "bf16")


class QuantMethod(Method):
    """A quantization method whose model runs in `config.compute` (see `compute`).

    Subclasses implement `_compress`, `_meta` (of the unwrapped model) and `_rebuild` (empty
    packed layers swapped into a skeleton); the dtype wrapping, its record in the artifact,
    the optional BatchNorm re-estimation (configs with a `recalibrate_bn` field) and the
    state-dict round trip live here once."""

    family = "quantization"
    _bn_layers: int | None = None  # BatchNorm layers re-estimated by the last compress (None: not asked)

    def _compress(self, model, ctx: CompressionContext):
        raise NotImplementedError

    def _meta(self, model) -> dict[str, Any]:
        return {}

    def _rebuild(self, model, meta: dict[str, Any]):
        raise NotImplementedError

    def compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.compute import wrap
        model = self._compress(model, ctx)
        if getattr(self.config, "recalibrate_bn", False):
            from slimbench.methods.quant.common import recalibrate_batchnorm
            self._bn_layers = recalibrate_batchnorm(model, ctx, self.name)
        return wrap(model, self.config.compute, ctx.device)

    def artifact_meta(self, model) -> dict[str, Any]:
        from slimbench.methods.quant.compute import unwrap
        inner, dtype = unwrap(model)
        meta = {**self._meta(inner), "compute_dtype": dtype}
        if self._bn_layers is not None:
            meta["bn_recalibrated_layers"] = self._bn_layers
        return meta

    def restore(self, model, tensors, meta):
        from slimbench.methods.quant.compute import rewrap
        restored = rewrap(self._rebuild(model, meta), meta)
        restored.load_state_dict(tensors, strict=True)
        return restored


BN_HELP = ("re-estimate BatchNorm running statistics on the calibration set after quantizing (no weight is "
           "trained); a no-op for models without BatchNorm")


def check_compute(compute: str) -> None:
    check(compute in _COMPUTES, f"compute={compute!r} is not valid; choose one of {', '.join(_COMPUTES)}")


# ---------------------------------------------------------------- quant.minmax

@dataclass(frozen=True)
class MinMaxConfig(MethodConfig):
    bits: int = field(default=4, metadata={"help": "weight bits: 2, 3, 4 or 8"})
    granularity: Granularity = field(default="group", metadata={
        "help": "nn.Linear scales: one per tensor, per output channel, or per group of input features"})
    group_size: int = field(default=128, metadata={
        "help": "inputs per group (granularity=group); a layer whose row is no longer than this gets one "
                "group per row; otherwise it must divide the row length"})
    conv_granularity: Granularity = field(default="channel", metadata={
        "help": "nn.Conv2d scales, over the weight viewed as [out, in/groups*kh*kw]; per output channel by "
                "default because conv rows (9*C, ...) rarely divide group_size; group uses group_size"})
    symmetric: bool = field(default=True, metadata={"help": "symmetric (no zero-point) or asymmetric min-max"})
    recalibrate_bn: bool = field(default=False, metadata={"help": BN_HELP})
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP, metadata={"help": SKIP_HELP})
    compute: Compute = field(default="auto", metadata={"help": COMPUTE_HELP})

    def __post_init__(self):
        check_bits(self.bits)
        check(self.group_size >= 1, f"group_size={self.group_size!r} must be >= 1")
        check_compute(self.compute)


@register_method("quant.minmax")
class MinMax(QuantMethod):
    description = ("Weight-only min-max quantization of Linear and Conv2d layers (2/3/4/8-bit, "
                   "per-tensor/channel/group), bit-packed.")
    config_cls = MinMaxConfig
    grid_name = "min-max"  # how the codes were chosen; the storage format is shared (GPTQ reuses it)

    def _compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.linear import quantize_model
        return quantize_model(model, self.config, self.name)

    def _meta(self, model) -> dict[str, Any]:
        from slimbench.methods.quant.linear import quantized_names
        c = self.config
        gran = f"{c.granularity}{f' g{c.group_size}' if c.granularity == 'group' else ''}"
        conv = f"{c.conv_granularity}{f' g{c.group_size}' if c.conv_granularity == 'group' else ''}"
        return {"format": f"{c.bits}-bit {'symmetric' if c.symmetric else 'asymmetric'} {self.grid_name}, "
                          f"linear {gran}, conv {conv}, bit-packed uint8 codes + fp16 scales"
                          + ("" if c.symmetric else " + uint8 zeros"),
                "layers": quantized_names(model)}

    def _rebuild(self, model, meta):
        from slimbench.methods.quant.linear import rebuild
        return rebuild(model, meta, self.config)


# ---------------------------------------------------------------- quant.kmeans

@dataclass(frozen=True)
class KMeansConfig(MethodConfig):
    bits: int = field(default=4, metadata={"help": "index bits (2**bits centroids): 2, 3, 4 or 8"})
    dim: int = field(default=1, metadata={
        "help": "weights per codebook vector (1 = scalar); bits/weight = bits/dim; must divide each layer's "
                "row (in_features, or in/groups*kh*kw for a conv)"})
    iters: int = field(default=15, metadata={"help": "Lloyd iterations (stops early when assignments settle)"})
    finetune: bool = field(default=False, metadata={
        "help": "train the centroids (indices fixed) for the task's fine-tuning budget; the model trains in "
                "train mode, so BatchNorm running statistics are re-estimated too (on fashion-mnist most of "
                "the recovered accuracy comes from that, not from the centroids)"})
    rel_lr: float = field(default=0.03, metadata={
        "help": "finetune: the centroids' peak learning rate as a fraction of their RMS over all layers, in "
                "(0, 1] (scale-free: AdamW moves a centroid about lr per step whatever its gradient). The task's "
                "fine-tuning recipe sets steps, schedule, warm-up and weight decay; its lr, sized for whole "
                "models, is not used: on rotten-tomatoes (5e-5, 0.07% of the RMS) 100 steps moved the "
                "centroids ~1.4%"})
    recalibrate_bn: bool = field(default=False, metadata={"help": BN_HELP})
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP, metadata={"help": SKIP_HELP})
    compute: Compute = field(default="auto", metadata={"help": COMPUTE_HELP})

    def __post_init__(self):
        check_bits(self.bits)
        check(self.dim >= 1, f"dim={self.dim!r} must be >= 1")
        check(self.iters >= 0, f"iters={self.iters!r} must be >= 0")
        check(0 < self.rel_lr <= 1, f"rel_lr={self.rel_lr!r} must be in (0, 1]")
        check_compute(self.compute)


@register_method("quant.kmeans")
class KMeans(QuantMethod):
    description = "Per-layer k-means codebook (scalar or vector) for Linear and Conv2d, packed indices + fp16 codebook."
    config_cls = KMeansConfig

    def _compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.kmeans import finetune_codebooks, quantize_model
        quantize_model(model, self.config, self.name, ctx.seed)
        if self.config.finetune and ctx.budget_steps > 0:
            finetune_codebooks(model, ctx, desc=f"{self.name} codebooks", rel_lr=self.config.rel_lr)
        return model

    def _meta(self, model) -> dict[str, Any]:
        from slimbench.methods.quant.kmeans import quantized_names
        c = self.config
        return {"format": f"k-means codebook, {c.bits}-bit indices over {c.dim}-dim vectors, fp16 codebook",
                "layers": quantized_names(model)}

    def _rebuild(self, model, meta):
        from slimbench.methods.quant.kmeans import rebuild
        return rebuild(model, meta, self.config)


# ---------------------------------------------------------------- quant.w8a8

@dataclass(frozen=True)
class W8A8Config(MethodConfig):
    activations: Literal["dynamic", "static"] = field(default="dynamic", metadata={
        "help": "dynamic: per-token (per output position for a conv) scales at run time; "
                "static: one calibrated scale per layer"})
    act_symmetric: bool = field(default=True, metadata={
        "help": "symmetric int8 activations; false: [min, max] with a zero point (suits one-signed, "
                "e.g. post-ReLU, activations; the GEMM is corrected with zero point x weight row sums)"})
    calibration: Literal["minmax", "percentile", "mse"] = field(default="percentile", metadata={
        "help": "how static activation ranges are set from calibration data"})
    percentile: float = field(default=99.99, metadata={
        "help": "percentile of |x| used as the clip (calibration=percentile); asymmetric: of x, both tails"})
    samples_per_batch: int = field(default=4096, metadata={
        "help": "activation values sampled per layer per calibration batch (percentile / mse)"})
    fuse_act: bool = field(default=False, metadata={
        "help": "fuse an activation module (ReLU/GELU) that sits between two quantized Linears into the first "
                "one's GEMM epilogue, and with static activations also the second one's int8 quantization "
                "(traced on a calibration batch; needs act_symmetric=true)"})
    recalibrate_bn: bool = field(default=False, metadata={"help": BN_HELP})
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP, metadata={"help": SKIP_HELP})
    compute: Compute = field(default="auto", metadata={"help": COMPUTE_HELP})

    def __post_init__(self):
        check(0 < self.percentile <= 100, f"percentile={self.percentile!r} must be in (0, 100]")
        check(self.samples_per_batch >= 1, f"samples_per_batch={self.samples_per_batch!r} must be >= 1")
        check(not self.fuse_act or self.act_symmetric, "fuse_act=true needs act_symmetric=true (the epilogue "
              "quantizes symmetrically; asymmetric layers correct their zero point after the GEMM)")
        check_compute(self.compute)


@register_method("quant.w8a8")
class W8A8(QuantMethod):
    description = ("int8 weights (per-channel) x int8 activations (per-token dynamic or calibrated static, "
                   "symmetric or zero-point), Linear and Conv2d (groups=1, via im2col).")
    config_cls = W8A8Config

    def __init__(self, config: W8A8Config | None = None):
        super().__init__(config)
        self._has_target: dict[str, bool] = {}  # per task model: supports() is asked once per device

    def supports(self, task, device):
        """Unsupported on a vision task whose model has nothing W8A8 can take outside the skip list
        (no nn.Linear and no groups=1, zero-padded nn.Conv2d).

        Only vision models are inspected: building one is cheap; a run that fails later still
        raises from compress."""
        config = getattr(task, "config", None)
        if getattr(config, "kind", None) != "vision":
            return None
        key = config.baseline_key()
        if key not in self._has_target:
            from slimbench.methods.quant.w8a8 import has_targets
            try:
                self._has_target[key] = has_targets(task.build_model(), self.config.skip)
            except Exception:  # cannot tell: let compress report the real problem
                return None
        if not self._has_target[key]:
            return (f"{self.name} quantizes nn.Linear and groups=1 nn.Conv2d layers; this task's model has "
                    "none outside the skip list")
        return None

    def _compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.w8a8 import quantize_model
        return quantize_model(model, self.config, self.name, ctx)

    def _meta(self, model) -> dict[str, Any]:
        """`kept_fp32`: convs outside the skip list left in fp32 (grouped / depthwise, non-zero
        padding), with the reason, so a reader sees they were not silently quantized."""
        from slimbench.methods.quant.w8a8 import kept_fp32, quantized_names
        c = self.config
        acts = f"{c.activations} {'symmetric' if c.act_symmetric else 'asymmetric (zero-point)'} int8 activations"
        from slimbench.methods.quant.w8a8_fuse import fused_meta
        meta = {"format": f"int8 per-channel weights + fp32 scales, {acts}",
                "layers": quantized_names(model), "kept_fp32": kept_fp32(model, c.skip)}
        fused = fused_meta(model)
        if fused:
            meta["fused_act"] = fused
        return meta

    def _rebuild(self, model, meta):
        from slimbench.methods.quant.w8a8 import rebuild
        return rebuild(model, meta, self.config)
