"""`quant.w8a8` at model level: which layers W8A8 takes (and which convs stay fp32, and why),
static calibration, the swap, and the optional activation fusion."""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from slimbench.methods.common.layers import WEIGHT_LAYERS, NoTargets, eligible, swap_named
from slimbench.methods.quant.w8a8 import W8A8Base, W8A8Conv2d, W8A8Linear
from slimbench.methods.quant.w8a8_calib import calibrate
from slimbench.methods.quant.w8a8_fuse import fuse

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.quant.configs import W8A8Config


def conv_unsupported(layer: nn.Module) -> str | None:
    """Why an nn.Conv2d stays fp32 under W8A8 (None: it is quantized)."""
    if not isinstance(layer, nn.Conv2d):
        return None
    if layer.groups != 1:
        return f"groups={layer.groups}: grouped/depthwise conv has no single int8 GEMM"
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return f"padding={layer.padding!r}, padding_mode={layer.padding_mode!r}: im2col path needs explicit zeros"
    return None


def select(model: nn.Module, skip) -> tuple[list[tuple[str, nn.Module]], dict[str, str]]:
    """(layers W8A8 quantizes, {name: reason} for eligible-looking convs kept in fp32)."""
    layers, kept = [], {}
    for name, layer in eligible(model, skip, WEIGHT_LAYERS):
        reason = conv_unsupported(layer)
        if reason:
            kept[name] = reason
        else:
            layers.append((name, layer))
    return layers, kept


def empty_twin(layer: nn.Module, cfg: "W8A8Config") -> W8A8Base:
    """The empty W8A8 layer a restore swaps in for a freshly built one (filled by load_state_dict)."""
    static, sym = cfg.activations == "static", cfg.act_symmetric
    if isinstance(layer, nn.Conv2d):
        return W8A8Conv2d(layer, static, sym)
    return W8A8Linear(layer.in_features, layer.out_features, layer.bias is not None, static, sym)


def _filled(cfg: "W8A8Config", scales: dict):
    """Factory for swap_named: a W8A8 twin quantized from the float layer (static scales if calibrated)."""
    sym = cfg.act_symmetric

    def make(name: str, layer: nn.Module) -> W8A8Base:
        act = scales.get(name, (None, None))
        if isinstance(layer, nn.Conv2d):
            return W8A8Conv2d.from_conv(layer, *act, symmetric=sym)
        return W8A8Linear.from_linear(layer, *act, symmetric=sym)
    return make


def quantize_model(model: nn.Module, cfg: "W8A8Config", owner: str, ctx: "CompressionContext") -> nn.Module:
    """Swap every eligible nn.Linear / nn.Conv2d for its W8A8 twin (calibrating first in static mode)."""
    layers, kept = select(model, cfg.skip)
    if not layers:
        why = "".join(f"; {n} kept fp32: {r}" for n, r in kept.items())
        raise NoTargets(f"{owner} found no nn.Linear or nn.Conv2d layer to quantize (skip={tuple(cfg.skip)!r}){why}")
    scales = calibrate(model, layers, ctx, cfg, owner) if cfg.activations == "static" else {}
    swap_named(model, [n for n, _ in layers], _filled(cfg, scales))
    if cfg.fuse_act:
        fuse(model, ctx, owner)
    return model


def has_targets(model: nn.Module, skip) -> bool:
    return bool(select(model, skip)[0])


def kept_fp32(model: nn.Module, skip) -> dict[str, str]:
    """Convs outside the skip list that W8A8 left in fp32, with the reason (recorded with the run)."""
    return select(model, skip)[1]
