"""Helpers shared by the quantization methods: config checks, layer swapping for restore."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from slimbench.methods.modules import named_layers, replace_module
from slimbench.methods.quant.packing import SUPPORTED_BITS
from slimbench.suite.config import ConfigError, check

# The classifier head is the layer most sensitive to quantization and the cheapest to keep:
# these patterns cover timm (`head`, `fc`) and transformers (`classifier`) naming.
DEFAULT_SKIP: tuple[str, ...] = ("fc", "head", "head.*", "*classifier*")

SKIP_HELP = ("fnmatch patterns of layers kept in full precision, ';'-separated "
             "(default keeps the classifier head: fc, head, *classifier*)")


def check_bits(bits: int, valid: Iterable[int] = SUPPORTED_BITS) -> None:
    valid = tuple(valid)
    check(bits in valid, f"bits={bits!r} is not supported; choose one of {', '.join(map(str, valid))}")


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def require_divides(owner: str, layer: str, what: str, size: int, extent: int, hint: str = "") -> None:
    """Raise a ConfigError naming the layer, the size and the sizes that would work."""
    if size >= 1 and extent % size == 0:
        return
    divs = divisors(extent)
    shown = ", ".join(map(str, divs if len(divs) <= 24 else divs[:12] + ["..."] + divs[-4:]))
    raise ConfigError(f"{owner}: {what}={size} does not divide in_features={extent} of layer {layer!r}; "
                      f"valid values for this layer: {shown}{hint}")


def targets(model: nn.Module, skip: Iterable[str], owner: str) -> list[tuple[str, nn.Linear]]:
    """The nn.Linear layers a method will quantize; raises if there are none."""
    layers = named_layers(model, (nn.Linear,), skip)
    if not layers:
        raise ValueError(f"{owner} found no nn.Linear layer to quantize (skip={tuple(skip)!r})")
    return layers


def swap_named(model: nn.Module, names: Iterable[str], make: Callable[[str, nn.Module], nn.Module]) -> None:
    """Replace exactly the named layers (restore uses the names recorded in artifact_meta)."""
    for name in names:
        replace_module(model, name, make(name, model.get_submodule(name)))


def restore_names(meta: dict, model: nn.Module, skip: Iterable[str]) -> list[str]:
    """Layers to rebuild: those recorded at compress time, else what the skip list selects."""
    if meta.get("layers") is not None:
        return list(meta["layers"])
    return [n for n, _ in named_layers(model, (nn.Linear,), skip)]


def linear_cost(module: nn.Module, inputs: tuple, effective_ratio: float = 1.0) -> dict[str, int]:
    """Dense FLOPs of a Linear-shaped layer (2 per multiply-accumulate)."""
    x = inputs[0]
    flops = 2 * (x.numel() // module.in_features) * module.in_features * module.out_features
    return {"dense": flops, "effective": int(flops * effective_ratio)}


def snr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Signal-to-noise ratio of `out` against `ref` in dB (how close a quantized output is)."""
    ref, out = ref.double(), out.double()
    noise = (ref - out).pow(2).sum().clamp(min=1e-300)
    return float(10 * torch.log10(ref.pow(2).sum() / noise))
