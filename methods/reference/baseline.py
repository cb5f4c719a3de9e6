"""The fp32 model exactly as the suite trained it: the row every delta is measured against."""
from __future__ import annotations

from dataclasses import dataclass

from slimbench.methods.base import CompressionContext, Method, MethodConfig, register_method


@dataclass(frozen=True)
class BaselineConfig(MethodConfig):
    pass


@register_method("baseline")
class Baseline(Method):
    family = "reference"
    followable = True
    description = "The uncompressed fp32 model as trained by the suite."
    config_cls = BaselineConfig

    def compress(self, model, ctx: CompressionContext):
        return model
