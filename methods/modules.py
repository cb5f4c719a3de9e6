"""Module-tree helpers shared by methods: find layers, swap them, honour skip patterns."""
from __future__ import annotations

import fnmatch
from typing import Callable, Iterable

from torch import nn


def matches(name: str, patterns: Iterable[str]) -> bool:
    """True if a module's qualified name matches any fnmatch pattern (e.g. `*head*`)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def named_layers(model: nn.Module, types: tuple[type, ...], skip: Iterable[str] = ()) -> list[tuple[str, nn.Module]]:
    """Layers whose type is exactly one of `types` (subclasses such as MultiheadAttention's
    out_proj or timm's StdConv2d compute something else and must not be swapped blindly)."""
    skip = tuple(skip)
    return [(n, m) for n, m in model.named_modules() if type(m) in types and not matches(n, skip)]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def swap_layers(model: nn.Module, types: tuple[type, ...], make: Callable[[str, nn.Module], nn.Module],
                skip: Iterable[str] = ()) -> list[str]:
    """Replace every matching layer by `make(name, layer)`; returns the swapped names."""
    names = []
    for name, layer in named_layers(model, types, skip):
        replace_module(model, name, make(name, layer))
        names.append(name)
    return names
