"""The training quantization methods, `quant.qat` and `quant.progressive`: configs and
`Method` classes, with no torch import (the layers load in compress / restore).

Both train fake-quant wrappers with the shared trainer, then store real packed weights in
exactly `quant.minmax`'s symmetric format, so each behaves as the min-max method whose
config `minmax_config()` returns: same restore path, same artifact layout, `simulated=False`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimbench.methods.base import CompressionContext, MethodConfig, register_method
from slimbench.methods.quant.compute import COMPUTE_HELP, Compute
from slimbench.methods.quant.methods import Granularity, MinMax, MinMaxConfig, QuantMethod, check_compute
from slimbench.methods.quant.options import DEFAULT_SKIP, SKIP_HELP, SUPPORTED_BITS, check_bits
from slimbench.suite.config import check

_GRAN_HELP = "nn.Linear step sizes (learned): one per tensor, per output channel, or per group of input features"
_GROUP_HELP = ("inputs per group (granularity=group); a layer whose row is no longer than this gets one group "
               "per row; otherwise it must divide the row length")
_CONV_HELP = "nn.Conv2d step sizes over the weight viewed as [out, in/groups*kh*kw]; group uses group_size"


@dataclass(frozen=True)
class _TrainedQuantConfig(MethodConfig):
    """Shared by the configs below, which each declare their bit-width(s) first, then the layout
    fields of quant.minmax (always symmetric: LSQ learns one step and no zero-point)."""

    def __post_init__(self):
        check(self.group_size >= 1, f"group_size={self.group_size!r} must be >= 1")
        check_compute(self.compute)

    @property
    def final_bits(self) -> int:
        raise NotImplementedError

    def minmax_config(self, bits: int | None = None) -> MinMaxConfig:
        """The quant.minmax config whose packed format (and restore) this method produces."""
        return MinMaxConfig(bits=self.final_bits if bits is None else bits, granularity=self.granularity,
                            group_size=self.group_size, conv_granularity=self.conv_granularity,
                            symmetric=True, skip=self.skip, compute=self.compute)


class _TrainedQuant(QuantMethod):
    """Shared artifact / restore: identical to quant.minmax with `minmax_config()`."""

    simulated = False  # the result is real packed low-bit storage, not fake-quant

    def _as_minmax(self) -> MinMax:
        return MinMax(self.config.minmax_config())

    def _meta(self, model) -> dict[str, Any]:
        meta = self._as_minmax()._meta(model)
        meta["format"] = f"{self.name}: LSQ-learned scales, " + meta["format"]
        return meta

    def _rebuild(self, model, meta):
        return self._as_minmax()._rebuild(model, meta)


# ---------------------------------------------------------------- quant.qat

@dataclass(frozen=True)
class QATConfig(_TrainedQuantConfig):
    bits: int = field(default=4, metadata={"help": "weight bits: 2, 3, 4 or 8 (symmetric)"})
    granularity: Granularity = field(default="group", metadata={"help": _GRAN_HELP})
    group_size: int = field(default=128, metadata={"help": _GROUP_HELP})
    conv_granularity: Granularity = field(default="channel", metadata={"help": _CONV_HELP})
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP, metadata={"help": SKIP_HELP})
    compute: Compute = field(default="auto", metadata={"help": COMPUTE_HELP})

    def __post_init__(self):
        check_bits(self.bits)
        super().__post_init__()

    @property
    def final_bits(self) -> int:
        return self.bits


@register_method("quant.qat")
class QAT(_TrainedQuant):
    description = ("Quantization-aware training (STE + LSQ learned step sizes) of Linear/Conv2d weights for the "
                   "fine-tuning budget, then stored bit-packed like quant.minmax.")
    config_cls = QATConfig

    def _compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.qat import compress_qat
        return compress_qat(model, ctx, self.config.minmax_config(), self.name)


# ---------------------------------------------------------------- quant.progressive

@dataclass(frozen=True)
class ProgressiveConfig(_TrainedQuantConfig):
    schedule: tuple[int, ...] = field(default=(8, 4), metadata={
        "help": "bit-widths of the stages, strictly descending, ';'-separated (e.g. 8;4;3); each stage "
                "fine-tunes for budget/len(schedule) steps (remainder to the last); the last is stored"})
    granularity: Granularity = field(default="group", metadata={"help": _GRAN_HELP})
    group_size: int = field(default=128, metadata={"help": _GROUP_HELP})
    conv_granularity: Granularity = field(default="channel", metadata={"help": _CONV_HELP})
    skip: tuple[str, ...] = field(default=DEFAULT_SKIP, metadata={"help": SKIP_HELP})
    compute: Compute = field(default="auto", metadata={"help": COMPUTE_HELP})

    def __post_init__(self):
        check(len(self.schedule) >= 1, "schedule is empty; give at least one bit-width, e.g. 8;4")
        for bits in self.schedule:
            check(bits in SUPPORTED_BITS, f"schedule={';'.join(map(str, self.schedule))} contains bits={bits!r}, "
                                          f"which is not supported; choose from {', '.join(map(str, SUPPORTED_BITS))}")
        check(all(a > b for a, b in zip(self.schedule, self.schedule[1:])),
              f"schedule={';'.join(map(str, self.schedule))} must be strictly descending (e.g. 8;4;3)")
        super().__post_init__()

    @property
    def final_bits(self) -> int:
        return self.schedule[-1]


@register_method("quant.progressive")
class Progressive(_TrainedQuant):
    description = ("Progressive QAT: fake-quant fine-tuning at descending bit-widths (default 8 then 4), "
                   "budget split across stages, final stage stored bit-packed like quant.minmax.")
    config_cls = ProgressiveConfig

    def _compress(self, model, ctx: CompressionContext):
        from slimbench.methods.quant.progressive import compress_progressive
        return compress_progressive(model, ctx, self.config.minmax_config(), self.config.schedule, self.name)
