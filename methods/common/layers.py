"""Module-tree tools every family needs: pick layers (honouring skip patterns), swap them by
name, and state their cost. Imported only when a method runs.
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, TypeVar

import torch
from torch import nn

from slimbench.core.config import ConfigError
from slimbench.core.record import REFERENCE_PATH

LINEAR: tuple[type, ...] = (nn.Linear,)
WEIGHT_LAYERS: tuple[type, ...] = (nn.Linear, nn.Conv2d)
V = TypeVar("V")


def matches(name: str, patterns: Iterable[str]) -> bool:
    """True if a module's qualified name matches any fnmatch pattern (e.g. `*head*`)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def per_layer_map(names: Iterable[str], per_layer: dict[str, V], owner: str, noun: str,
                  check: Callable[[str, str, V], None] | None = None) -> dict[str, V]:
    """{layer: value} from a `per_layer` map of fnmatch patterns (a later pattern wins a layer).

    A pattern naming none of `names` (the layers a method selected; `noun` says which) is a
    ConfigError listing them, raised before any work; `check(layer, pattern, value)` vets each
    hit in order (e.g. a rank above the layer's full rank)."""
    names = list(names)
    out: dict[str, V] = {}
    for pattern, value in per_layer.items():
        hit = [n for n in names if matches(n, (pattern,))]
        if not hit:
            raise ConfigError(f"{owner}: per_layer pattern {pattern!r} names no {noun}; the layers are "
                              f"{', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
        for n in hit:
            if check is not None:
                check(n, pattern, value)
            out[n] = value
    return out


def eligible(model: nn.Module, skip: Iterable[str], types: tuple[type, ...] = LINEAR) -> list[tuple[str, nn.Module]]:
    """Layers of exactly one of `types` not matched by `skip`.

    Exact types, not isinstance: subclasses often use their weight outside `forward`
    (MultiheadAttention's out_proj) or transform it first (timm's StdConv2d, Conv2dSame),
    so a plain compressed replacement would silently compute something else.
    """
    skip = tuple(skip)
    return [(n, m) for n, m in model.named_modules() if type(m) in types and not matches(n, skip)]


class NoTargets(ValueError):
    """A method found no layer of its kind on a model. `LayerSwapMethod` records the run as
    UNSUPPORTED with this reason: nothing to compress is not a failure of the method."""


def targets(model: nn.Module, skip: Iterable[str], owner: str, types: tuple[type, ...] = LINEAR,
            verb: str = "quantize") -> list[tuple[str, nn.Module]]:
    """The layers a method will change; raises if there are none."""
    layers = eligible(model, skip, types)
    if not layers:
        kinds = " or ".join(f"nn.{t.__name__}" for t in types)
        raise NoTargets(f"{owner} found no {kinds} layer to {verb} (skip={tuple(skip)!r})")
    return layers


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule called `name` is."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def swap_named(model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module]) -> None:
    """Replace exactly the named layers by `make(name, layer)` (restore uses the recorded names)."""
    for name in names:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the artifact names layer {name!r}, which this model does not have") from None
        replace_module(model, name, make(name, layer))


def fan_in(layer: nn.Module) -> int:
    """Length of a weight row in the [out, fan_in] view every compressor works on."""
    return layer.weight[0].numel()


def fan_in_name(layer: nn.Module) -> str:
    return "in_channels/groups*kh*kw" if isinstance(layer, nn.Conv2d) else "in_features"


class ConvGeometry:
    """The Conv2d hyper-parameters a replacement conv keeps to run `F.conv2d` exactly as the original."""

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


def linear_cost(module: nn.Module, inputs: tuple, effective_ratio: float = 1.0,
                bits: tuple[float, float] | None = None) -> dict[str, int]:
    """FLOPs of a Linear-shaped layer (2 per multiply-accumulate), and its BOPs when `bits` =
    (weight bits, activation bits) is given."""
    x = inputs[0]
    macs = (x.numel() // module.in_features) * module.in_features * module.out_features
    return _cost(macs, effective_ratio, bits)


def conv_cost(module: nn.Module, output: torch.Tensor, effective_ratio: float = 1.0,
              bits: tuple[float, float] | None = None) -> dict[str, int]:
    """FLOPs of a conv: 2 x output elements x fan-in (torch's counter's convention, bias free).

    The fan-in is `in_features` on layers that store a conv as a [out, fan_in] matrix, else the
    weight's (an nn.Conv2d: in_channels/groups*kh*kw)."""
    k = module.in_features if hasattr(module, "in_features") else fan_in(module)
    return _cost(output.numel() * k, effective_ratio, bits)


def _cost(macs: int, effective_ratio: float, bits: tuple[float, float] | None) -> dict[str, int]:
    out = {"dense": 2 * macs, "effective": int(2 * macs * effective_ratio)}
    if bits is not None:
        out["bops"] = int(macs * effective_ratio * bits[0] * bits[1])
    return out


def dtype_bits(t: torch.Tensor) -> int:
    """Bits of a tensor's element type (the activation operand's width in BOPs)."""
    return torch.finfo(t.dtype).bits if t.is_floating_point() else torch.iinfo(t.dtype).bits


def snr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Signal-to-noise ratio of `out` against `ref` in dB (how close a compressed output is)."""
    ref, out = ref.double(), out.double()
    noise = (ref - out).pow(2).sum().clamp(min=1e-300)
    return float(10 * torch.log10(ref.pow(2).sum() / noise))


# Execution paths: what a layer's forward runs on a device, as `slim_path(device, dtype)` states it
# (the harness records one label per layer and device); REFERENCE starts a reference path's label.
REFERENCE = REFERENCE_PATH


def dense_path(device: str, dtype: torch.dtype) -> str:
    """The path of a plain float layer: the stock dense kernel, or a reference where the CPU has no
    units for the dtype (bf16 / fp16 without AVX512-BF16/AMX or AVX512-FP16/AMX-FP16)."""
    name = str(dtype).removeprefix("torch.")
    if device.startswith("cuda"):
        return f"dense {name} (cuBLAS / cuDNN)"
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return f"{REFERENCE}bf16 on a CPU without bf16 units (converted per op)"
    if dtype == torch.float16 and not torch.ops.mkldnn._is_mkldnn_fp16_supported():
        return f"{REFERENCE}fp16 on a CPU without fp16 units (converted per op)"
    return f"dense {name} (oneDNN)"
