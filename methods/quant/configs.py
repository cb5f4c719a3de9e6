"""Configs of the quantization methods: typed, torch-free, each checked by `MethodConfig`.

The four methods that store quant.minmax's packed format (minmax, gptq, qat, progressive)
share its layout fields through `GridConfig`, so the format, its checks and its help text are
defined once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slimbench.core.config import MethodConfig, check, setting
from slimbench.methods.common.options import (BN_HELP, COMPUTE_HELP, DEFAULT_SKIP, PACKABLE_BITS, SKIP_HELP,
                                              Compute)

Granularity = Literal["tensor", "channel", "group"]
BITS_HELP = "weight bits: 2, 3, 4 or 8"


@dataclass(frozen=True)
class SwapConfig(MethodConfig):
    """Which layers are kept (`skip`) and the dtype the compressed model runs in (`compute`)."""

    skip: tuple[str, ...] = setting(DEFAULT_SKIP, SKIP_HELP)
    compute: Compute = setting("auto", COMPUTE_HELP)
    convs: Literal["auto", "quantize", "keep"] = setting(
        "auto", "nn.Conv2d layers: quantize, keep (in the compute dtype), or auto: kept when compressing for CUDA, "
                "where no conv kernel beats dequantize + cuDNN yet (an H200 ran W8A8 im2col convs 14.5x slower "
                "than fp32), quantized on the CPU; the run records what was kept")

    def quantizes_convs(self, device: str) -> bool:
        """Whether convs outside `skip` are quantized when compressing on `device`."""
        return self.convs == "quantize" or (self.convs == "auto" and not str(device).startswith("cuda"))


@dataclass(frozen=True)
class GridConfig(SwapConfig):
    """The layout of quant.minmax's packed weights: where scales are shared."""

    granularity: Granularity = setting(
        "group", "nn.Linear scales: one per tensor, per output channel, or per group of input features")
    group_size: int = setting(128, "inputs per group (granularity=group); a layer whose row is no longer than this "
                                   "gets one group per row; otherwise it must divide the row length", ge=1)
    conv_granularity: Granularity = setting(
        "channel", "nn.Conv2d scales, over the weight viewed as [out, in/groups*kh*kw]; per output channel by "
                   "default because conv rows (9*C, ...) rarely divide group_size; group uses group_size")


# ---------------------------------------------------------------- quant.minmax, quant.gptq

@dataclass(frozen=True)
class MinMaxConfig(GridConfig):
    bits: int = setting(4, BITS_HELP, choices=PACKABLE_BITS)
    symmetric: bool = setting(True, "symmetric (no zero-point) or asymmetric min-max")
    recalibrate_bn: bool = setting(False, BN_HELP)


@dataclass(frozen=True)
class GPTQConfig(MinMaxConfig):
    """quant.minmax's grid, with codes chosen by GPTQ: restore is quant.minmax's."""

    damp: float = setting(0.01, "added to the Hessian diagonal, as a fraction of its mean (keeps the Cholesky "
                                "stable)", ge=0, le=1)
    block_size: int = setting(128, "columns per lazy batch update (speed only; the result is the same up to "
                                   "rounding)", ge=1)
    act_order: bool = setting(False, "quantize columns in order of decreasing Hessian diagonal; group scales are "
                                     "then fixed from the original weights (static groups) so storage stays "
                                     "contiguous")


# ---------------------------------------------------------------- quant.qat, quant.progressive

@dataclass(frozen=True)
class TrainedGridConfig(GridConfig):
    """Trained with fake quantization, stored in quant.minmax's symmetric format (LSQ learns one
    step size per group and no zero-point)."""

    @property
    def final_bits(self) -> int:
        raise NotImplementedError

    def minmax_config(self, bits: int | None = None) -> MinMaxConfig:
        """The quant.minmax config whose packed format (and restore) this method produces."""
        return MinMaxConfig(bits=self.final_bits if bits is None else bits, granularity=self.granularity,
                            group_size=self.group_size, conv_granularity=self.conv_granularity,
                            symmetric=True, skip=self.skip, compute=self.compute, convs=self.convs)


@dataclass(frozen=True)
class QATConfig(TrainedGridConfig):
    bits: int = setting(4, "weight bits: 2, 3, 4 or 8 (symmetric)", choices=PACKABLE_BITS)
    loss: Literal["ce", "kd"] = setting(
        "ce", "ce: cross-entropy on the labels; kd: quantization-aware distillation, Hinton KD against the frozen "
              "fp32 teacher (the baseline), so the quantized model learns the teacher's outputs")
    temperature: float = setting(4.0, "loss=kd: T of the softened logits", gt=0)
    alpha: float = setting(0.9, "loss=kd: weight of the teacher term (1 - alpha weights cross-entropy)", ge=0, le=1)

    def validate(self) -> None:
        super().validate()
        check(self.loss == "kd" or (self.temperature, self.alpha) == (4.0, 0.9),
              f"temperature={self.temperature} / alpha={self.alpha} weight the teacher's logits: they need loss=kd")

    @property
    def final_bits(self) -> int:
        return self.bits


@dataclass(frozen=True)
class ProgressiveConfig(TrainedGridConfig):
    schedule: tuple[int, ...] = setting(
        (8, 4), "bit-widths of the stages, strictly descending, ';'-separated (e.g. 8;4;3); each stage "
                "fine-tunes for budget/len(schedule) steps (remainder to the last); the last is stored",
        choices=PACKABLE_BITS)

    def validate(self) -> None:
        shown = ";".join(map(str, self.schedule))
        check(len(self.schedule) >= 1, "schedule is empty; give at least one bit-width, e.g. 8;4")
        check(all(a > b for a, b in zip(self.schedule, self.schedule[1:])),
              f"schedule={shown} must be strictly descending (e.g. 8;4;3)")

    @property
    def final_bits(self) -> int:
        return self.schedule[-1]


# ---------------------------------------------------------------- quant.kmeans

@dataclass(frozen=True)
class KMeansConfig(SwapConfig):
    bits: int = setting(4, "index bits (2**bits centroids): 2, 3, 4 or 8", choices=PACKABLE_BITS)
    dim: int = setting(1, "weights per codebook vector (1 = scalar); bits/weight = bits/dim; must divide each "
                          "layer's row (in_features, or in/groups*kh*kw for a conv)", ge=1)
    iters: int = setting(15, "Lloyd iterations (stops early when assignments settle)", ge=0)
    finetune: bool = setting(False, "train the centroids (indices fixed) for the task's fine-tuning budget; the "
                                    "model trains in train mode, so BatchNorm running statistics are re-estimated "
                                    "too (on fashion-mnist most of the recovered accuracy comes from that, not "
                                    "from the centroids)")
    rel_lr: float = setting(0.03, "finetune: the centroids' peak learning rate as a fraction of their RMS over all "
                                  "layers (scale-free: AdamW moves a centroid about lr per step whatever its "
                                  "gradient). The task's fine-tuning recipe sets steps, schedule, warm-up and "
                                  "weight decay; its lr, sized for whole models, is not used: on rotten-tomatoes "
                                  "(5e-5, 0.07% of the RMS) 100 steps moved the centroids ~1.4%", gt=0, le=1)
    recalibrate_bn: bool = setting(False, BN_HELP)


# ---------------------------------------------------------------- quant.w8a8

@dataclass(frozen=True)
class W8A8Config(SwapConfig):
    activations: Literal["dynamic", "static"] = setting(
        "dynamic", "dynamic: per-token (per output position for a conv) scales at run time; "
                   "static: one calibrated scale per layer")
    act_symmetric: bool = setting(True, "symmetric int8 activations; false: [min, max] with a zero point (suits "
                                        "one-signed, e.g. post-ReLU, activations; the GEMM is corrected with zero "
                                        "point x weight row sums)")
    calibration: Literal["minmax", "percentile", "mse"] = setting(
        "percentile", "how static activation ranges are set from calibration data")
    percentile: float = setting(99.99, "percentile of |x| used as the clip (calibration=percentile); asymmetric: "
                                       "of x, both tails", gt=0, le=100)
    samples_per_batch: int = setting(4096, "activation values sampled per layer per calibration batch "
                                           "(percentile / mse)", ge=1)
    fuse_act: bool = setting(False, "fuse an activation module (ReLU/GELU) that sits between two quantized Linears "
                                    "into the first one's GEMM epilogue, and with static activations also the "
                                    "second one's int8 quantization (traced on a calibration batch; needs "
                                    "act_symmetric=true)")
    recalibrate_bn: bool = setting(False, BN_HELP)

    def validate(self) -> None:
        check(not self.fuse_act or self.act_symmetric, "fuse_act=true needs act_symmetric=true (the epilogue "
              "quantizes symmetrically; asymmetric layers correct their zero point after the GEMM)")


# ---------------------------------------------------------------- torch.dynamic_int8, torch.static_int8, quant.fp8

@dataclass(frozen=True)
class DynamicInt8Config(MethodConfig):
    skip: tuple[str, ...] = setting((), "fnmatch patterns of Linear layers kept in fp32 (e.g. '*classifier*'); "
                                        "';'-separated")


@dataclass(frozen=True)
class StaticInt8Config(MethodConfig):
    engine: Literal["x86", "fbgemm"] = setting(
        "x86", "torch.backends.quantized engine whose default qconfig and kernels are used")
    skip: tuple[str, ...] = setting((), "fnmatch patterns of Linear layers kept in fp32 (e.g. '*classifier*'); "
                                        "';'-separated")


@dataclass(frozen=True)
class FP8Config(MethodConfig):
    scaling: Literal["tensor", "row"] = setting(
        "tensor", "tensor: one weight scale and one dynamic activation scale per call; row: per output "
                  "channel weight scales and per-token activation scales")
    skip: tuple[str, ...] = setting(DEFAULT_SKIP, SKIP_HELP)
