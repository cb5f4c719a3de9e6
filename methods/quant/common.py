"""Torch-side helpers shared by the quantized layers: picking, swapping and costing layers.

Imported only when a method runs; the torch-free config checks are in `options`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext

import torch
from torch import nn

from slimbench.methods.modules import matches, replace_module

LINEAR: tuple[type, ...] = (nn.Linear,)
WEIGHT_LAYERS: tuple[type, ...] = (nn.Linear, nn.Conv2d)


def eligible(model: nn.Module, skip: Iterable[str], types: tuple[type, ...] = LINEAR) -> list[tuple[str, nn.Module]]:
    """Layers of exactly one of `types` not matched by `skip`.

    Exact types, not isinstance: subclasses often use their weight outside `forward`
    (MultiheadAttention's out_proj) or transform it first (timm's StdConv2d, Conv2dSame),
    so a plain quantized replacement would silently compute something else.
    """
    skip = tuple(skip)
    return [(n, m) for n, m in model.named_modules() if type(m) in types and not matches(n, skip)]


def targets(model: nn.Module, skip: Iterable[str], owner: str,
            types: tuple[type, ...] = LINEAR) -> list[tuple[str, nn.Module]]:
    """The layers a method will quantize; raises if there are none."""
    layers = eligible(model, skip, types)
    if not layers:
        kinds = " or ".join(f"nn.{t.__name__}" for t in types)
        raise ValueError(f"{owner} found no {kinds} layer to quantize (skip={tuple(skip)!r})")
    return layers


def fan_in(layer: nn.Module) -> int:
    """Length of a weight row in the [out, fan_in] view every quantizer works on."""
    return layer.weight[0].numel()


def fan_in_name(layer: nn.Module) -> str:
    return "in_channels/groups*kh*kw" if isinstance(layer, nn.Conv2d) else "in_features"


def swap_named(model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module]) -> None:
    """Replace exactly the named layers (restore uses the names recorded in artifact_meta)."""
    for name in names:
        replace_module(model, name, make(name, model.get_submodule(name)))


def restore_names(meta: dict, model: nn.Module, skip: Iterable[str], types: tuple[type, ...] = LINEAR) -> list[str]:
    """Layers to rebuild: those recorded at compress time, else what the skip list selects."""
    if meta.get("layers") is not None:
        return list(meta["layers"])
    return [n for n, _ in eligible(model, skip, types)]


class ConvGeometry:
    """The Conv2d hyper-parameters a quantized conv keeps to run `F.conv2d` exactly as the original."""

    def init_geometry(self, conv: nn.Conv2d) -> None:
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = tuple(conv.kernel_size), tuple(conv.stride), conv.padding
        self.dilation, self.groups, self.padding_mode = tuple(conv.dilation), conv.groups, conv.padding_mode
        self._pad = tuple(conv._reversed_padding_repeated_twice)

    def weight_4d(self, w2: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """[out, fan_in] -> [out, in/groups, kh, kw], in the input's memory format (NHWC convs stay fast)."""
        w = w2.reshape(self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
            w = w.contiguous(memory_format=torch.channels_last)
        return w

    def conv(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":  # as nn.Conv2d._conv_forward
            x = torch.nn.functional.pad(x, self._pad, mode=self.padding_mode)
            return torch.nn.functional.conv2d(x, w, bias, self.stride, 0, self.dilation, self.groups)
        return torch.nn.functional.conv2d(x, w, bias, self.stride, self.padding, self.dilation, self.groups)

    def conv_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}")


class PackedStorage:
    """Marks layers whose tensors are a storage format (codes, scales, codebooks): casting a
    model's compute dtype (`compute.wrap`) leaves them alone."""


class DequantConv(ConvGeometry):
    """Shared forward of weight-only convs stored like a DequantLinear over the [out, fan_in] view:
    dequantize, reshape to 4-d, then the original conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_4d(self.dequantize().to(x.dtype), x)
        return self.conv(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return conv_cost(self, output)


class DequantLinear(PackedStorage, nn.Module):
    """Shared forward of weight-only Linear layers: a GPU kernel on the packed form when one
    applies (`kernel_forward` returns None otherwise), else dequantize then `F.linear`
    (the CPU reference path). Subclasses define `dequantize()` and `kernel_forward(x2)`."""

    in_features: int
    out_features: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if x.is_cuda:
            y = self.kernel_forward(x.reshape(-1, self.in_features))
            if y is not None:
                return y.reshape(*x.shape[:-1], self.out_features)
        w = self.dequantize().to(x.dtype)
        return F.linear(x, w, None if self.bias is None else self.bias.to(x.dtype))

    def slim_cost(self, inputs, output) -> dict[str, int]:
        return linear_cost(self, inputs)


def linear_cost(module: nn.Module, inputs: tuple, effective_ratio: float = 1.0) -> dict[str, int]:
    """Dense FLOPs of a Linear-shaped layer (2 per multiply-accumulate)."""
    x = inputs[0]
    flops = 2 * (x.numel() // module.in_features) * module.in_features * module.out_features
    return {"dense": flops, "effective": int(flops * effective_ratio)}


def conv_cost(module: nn.Module, output: torch.Tensor, effective_ratio: float = 1.0) -> dict[str, int]:
    """Dense FLOPs of a conv: 2 x output elements x fan-in (torch's counter's convention, bias free)."""
    flops = 2 * output.numel() * module.in_features
    return {"dense": flops, "effective": int(flops * effective_ratio)}


def snr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Signal-to-noise ratio of `out` against `ref` in dB (how close a quantized output is)."""
    ref, out = ref.double(), out.double()
    noise = (ref - out).pow(2).sum().clamp(min=1e-300)
    return float(10 * torch.log10(ref.pow(2).sum() / noise))


def calibration_pass(model: nn.Module, ctx: "CompressionContext", owner: str, purpose: str,
                     reached: Callable[[], list[str]]) -> int:
    """Run the task's calibration batches through `model` once (eval, no grad) so hooks the
    caller installed can observe activations. Raises if there was no data, or if
    `reached()` lists layers the calibration never reached. Returns the batch count."""
    was_training, batches = model.training, 0
    model.eval()
    try:
        with torch.no_grad():
            for inputs, _ in ctx.calibration():
                model(**{k: v.to(ctx.device) for k, v in inputs.items()})
                batches += 1
    finally:
        model.train(was_training)
    if batches == 0:
        raise ValueError(f"{owner}: {purpose} needs calibration data, but the calibration set yielded no batches")
    unseen = reached()
    if unseen:
        raise ValueError(f"{owner}: calibration never reached layer(s) {', '.join(unseen)}; "
                         "skip them or check the model's forward")
    return batches


def recalibrate_batchnorm(model: nn.Module, ctx: "CompressionContext", owner: str) -> int:
    """Re-estimate every BatchNorm's running mean/variance on the calibration set.

    Why: quantized weights shift each conv's output distribution, and the BatchNorm after it
    keeps normalizing with the fp32 model's statistics. A forward pass over calibration data
    with fresh cumulative statistics (momentum None) fixes that without training a single
    weight. Only BatchNorm layers are put in train mode (dropout stays off). Returns the number
    of layers re-estimated (0 for a model without BatchNorm: nothing to do)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    was_training = model.training
    saved = [(m, m.momentum) for m in bns]
    model.eval()
    batches = 0
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all calibration batches
            m.train()
        with torch.no_grad():
            for inputs, _ in ctx.calibration():
                model(**{k: v.to(ctx.device) for k, v in inputs.items()})
                batches += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    if batches == 0:
        raise ValueError(f"{owner}: recalibrate_bn needs calibration data, but the calibration set yielded no batches")
    return len(bns)

