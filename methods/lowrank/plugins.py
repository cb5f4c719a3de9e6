"""The low-rank method plugins, registered without importing torch.

Both swap chosen layers for factorised twins (`LayerSwapMethod`): the artifact records which
layers and their ranks, and restore builds empty twins of those ranks for the saved factors.
"""
from __future__ import annotations

from typing import Any, ClassVar

from slimbench.methods.base import CompressionContext, register_method
from slimbench.methods.common.swap import LayerSwapMethod
from slimbench.methods.lowrank.configs import SVDConfig, TuckerConfig


class FactorMethod(LayerSwapMethod):
    """A low-rank method: unsupported (not failed) on a model with nothing it can factorise."""

    family = "low-rank"
    what: ClassVar[str] = ""

    def _check(self, model) -> None:
        raise NotImplementedError

    def model_unsupported(self, model):
        try:
            self._check(model)
        except ValueError as exc:
            return f"{self.name} factorises {self.what}; this task's model has none outside skip ({exc})"
        return None

    def _meta(self, model) -> dict[str, Any]:
        twins = self._twins()
        return {"ranks": {n: getattr(m, "rank", None) or list(m.ranks)
                          for n, m in model.named_modules() if isinstance(m, twins)}}


@register_method("lowrank.svd")
class SVD(FactorMethod):
    description = ("Truncated SVD of Linear layers stored as two factors (plain, Fisher-weighted FWSVD or "
                   "activation-aware ASVD; ranks by parameter budget, energy or validation sensitivity), then "
                   "fine-tuned; layers not smaller or measured slower stay dense.")
    config_cls = SVDConfig
    what = "nn.Linear layers"

    def _check(self, model) -> None:
        from slimbench.methods.common.layers import LINEAR, targets
        targets(model, self.config.skip, self.name, LINEAR, verb="factorise")

    def _swap(self, model, ctx: CompressionContext):
        from slimbench.methods.lowrank.procedure import factorise_linear
        return factorise_linear(model, self.config, ctx, self.name)

    def _twins(self):
        from slimbench.methods.lowrank.modules import LowRankLinear
        return (LowRankLinear,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.lowrank.modules import LowRankLinear
        return LowRankLinear(layer.in_features, layer.out_features, int(meta["ranks"][name]), layer.bias is not None,
                             self.config.kernel)

    def _format(self) -> str:
        run = {"torch": "two matmuls", "fused": "the fused Triton kernel on CUDA in fp16/bf16, two matmuls elsewhere",
               "auto": "the fused Triton kernel on CUDA in fp16/bf16, two matmuls elsewhere"}[self.config.kernel]
        return f"two factors per layer (U [out, r], V [r, in]) in the compute dtype, run as {run}"


@register_method("lowrank.tucker")
class Tucker(FactorMethod):
    description = ("Tucker-2 (HOSVD) of kxk Conv2d layers: 1x1 -> kxk core -> 1x1 convs (ranks by FLOP budget, "
                   "energy or VBMF), then fine-tuned; convs not smaller or measured slower stay dense.")
    config_cls = TuckerConfig
    what = "kxk, groups=1 nn.Conv2d layers"

    def _check(self, model) -> None:
        from slimbench.methods.lowrank.procedure import conv_targets
        conv_targets(model, self.config.skip, self.name)

    def _swap(self, model, ctx: CompressionContext):
        from slimbench.methods.lowrank.procedure import factorise_conv
        return factorise_conv(model, self.config, ctx, self.name)

    def _twins(self):
        from slimbench.methods.lowrank.modules import TuckerConv2d
        return (TuckerConv2d,)

    def _empty(self, name, layer, meta):
        from slimbench.methods.lowrank.modules import TuckerConv2d
        r_out, r_in = meta["ranks"][name]
        return TuckerConv2d(layer, int(r_out), int(r_in))

    def _format(self) -> str:
        return "three convs per factorised conv (1x1, kxk core, 1x1) in the compute dtype"
