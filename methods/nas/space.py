"""Search spaces: YAML files a user can write, validated before any work, resolved against the
task's own model.

A space names builder arguments (`dims`) and the values each may take. `key.i` sets element i
of a list argument (a timm ResNet's `layers.2`, `channels.0`); a plain key sets the argument
(`num_hidden_layers`). A value is absolute (`48`) or relative to the trained model's own value
(`"0.5x"`: half the baseline's), so one file serves a tiny test model and the real one. Depth-like
arguments round to whole numbers (at least 1), widths to multiples of `multiple_of`. Torch-free:
a space is checked when the method config is built, before any baseline is trained.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from slimbench.core.config import ConfigError, check

SPACES_DIR = Path(__file__).parent / "spaces"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.\d+)?$")
_REL = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)\s*x\s*$")
WHOLE = frozenset({"layers", "num_hidden_layers", "num_attention_heads", "depth", "depths", "num_heads"})
MODELS = ("resnet", "transformer", "any")

Arch = tuple[int, ...]  # one choice index per dim, in the space's order


def builtin_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class SpaceFile:
    """A declared space as written (values possibly relative), checked for shape and sense."""

    name: str
    dims: dict[str, tuple[Any, ...]]
    model: str = "any"
    fixed: dict[str, Any] = field(default_factory=dict)
    multiple_of: int = 8
    description: str = ""

    def __post_init__(self):
        where = f"search space {self.name!r}"
        check(isinstance(self.dims, dict) and bool(self.dims),
              f"{where} declares no dims: nothing to search (give `dims: {{arg: [choices...]}}`)")
        check(self.model in MODELS, f"{where}: model={self.model!r}; choose {', '.join(MODELS)}")
        check(isinstance(self.multiple_of, int) and self.multiple_of >= 1,
              f"{where}: multiple_of={self.multiple_of!r} must be an integer >= 1")
        for dim, values in self.dims.items():
            check(bool(_NAME.match(str(dim))), f"{where}: dim {dim!r} is not `arg` or `arg.INDEX`")
            check(isinstance(values, (list, tuple)) and len(values) > 0,
                  f"{where}: dim {dim!r} has no choices (give a non-empty list)")
            for v in values:
                ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0) or \
                     (isinstance(v, str) and bool(_REL.match(v)) and float(v.strip()[:-1]) > 0)
                check(ok, f"{where}: dim {dim!r} has choice {v!r}; give a positive number or a relative "
                          f"'<factor>x' such as '0.5x'")
                check(not isinstance(v, float) or dim.split(".")[0] not in WHOLE,
                      f"{where}: dim {dim!r} counts whole things (layers, heads): choice {v!r} must be an integer")
            check(len(set(map(str, values))) == len(values), f"{where}: dim {dim!r} repeats a choice: {list(values)}")
            base = dim.split(".")[0]
            check(base not in self.fixed, f"{where}: {base!r} is both fixed and searched; remove one")
            if "." in dim:
                check(base not in self.dims, f"{where}: both {base!r} and {dim!r} are searched; the whole "
                                             f"argument and one of its elements contradict each other")
        check(self.size > 1, f"{where} has one architecture only (every dim has one choice): nothing to search")
        _check_heads(where, {d: list(v) for d, v in self.dims.items()}, self.fixed, relative_ok=True)

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.dims.values())


def _check_heads(where: str, dims: dict[str, list], fixed: Mapping[str, Any], relative_ok: bool,
                 base: Mapping[str, Any] | None = None) -> None:
    """A transformer's hidden size must divide into its heads, in every combination."""
    def values(key: str) -> list | None:
        if key in dims:
            return dims[key]
        if key in fixed:
            return [fixed[key]]
        return [base[key]] if base and key in base else None

    hidden, heads = values("hidden_size"), values("num_attention_heads")
    if not hidden or not heads or (relative_ok and any(isinstance(v, str) for v in hidden + heads)):
        return
    bad = [(h, n) for h in hidden for n in heads if h % n]
    check(not bad, f"{where} is contradictory: hidden_size must be a multiple of num_attention_heads, but "
                   + ", ".join(f"{h} / {n}" for h, n in bad[:4]) + " are not")


def load_space(ref: str | Mapping[str, Any]) -> SpaceFile:
    """A built-in space by name, a YAML file by path, or a mapping (from a method config file)."""
    if isinstance(ref, Mapping):
        data, name = dict(ref), str(ref.get("name", "inline"))
    else:
        path = Path(ref)
        if not path.suffix and (SPACES_DIR / f"{ref}.yaml").exists():
            path = SPACES_DIR / f"{ref}.yaml"
        if not path.is_file():
            raise ConfigError(f"search space {ref!r} is neither a file nor a built-in space; built-in: "
                              f"{', '.join(builtin_spaces())} (or 'auto')")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"search space file {path} is not valid YAML: {exc}") from exc
        name = str(data.get("name", path.stem))
    if not isinstance(data, dict):
        raise ConfigError(f"search space {name!r} must be a mapping with `dims`, got {type(data).__name__}")
    known = {"name", "dims", "model", "fixed", "multiple_of", "description"}
    unknown = sorted(set(data) - known)
    check(not unknown, f"search space {name!r}: unknown key(s) {unknown}; valid: {', '.join(sorted(known))}")
    dims = data.get("dims") or {}
    check(isinstance(dims, dict), f"search space {name!r}: `dims` must be a mapping of argument -> choices")
    return SpaceFile(name=name, dims={str(k): tuple(v) if isinstance(v, (list, tuple)) else v
                                      for k, v in dims.items()},
                     model=data.get("model", "any"), fixed=dict(data.get("fixed") or {}),
                     multiple_of=data.get("multiple_of", 8), description=str(data.get("description", "")))


@dataclass(frozen=True)
class Space:
    """A space resolved against a model: concrete choices per dim, and how an architecture becomes
    the builder's arguments."""

    name: str
    dims: tuple[str, ...]
    choices: tuple[tuple[Any, ...], ...]
    base: dict[str, Any]  # the trained model's own builder values (list arguments filled from them)
    fixed: dict[str, Any]

    @property
    def size(self) -> int:
        return math.prod(len(c) for c in self.choices)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.choices)

    def values(self, arch: Arch) -> dict[str, Any]:
        return {d: c[i] for d, c, i in zip(self.dims, self.choices, arch)}

    def key(self, arch: Arch) -> str:
        """A stable, readable name of an architecture (its searched values)."""
        return json.dumps(self.values(arch), sort_keys=False, separators=(",", ":"))

    def model_key(self, arch: Arch) -> str:
        """What the builder is given (fixed and inherited arguments too): what a cost is cached by."""
        return json.dumps(self.overrides(arch), sort_keys=True, separators=(",", ":"))

    def overrides(self, arch: Arch) -> dict[str, Any]:
        """The builder arguments of this architecture."""
        out: dict[str, Any] = dict(self.fixed)
        for dim, value in self.values(arch).items():
            if "." in dim:
                key, idx = dim.split(".")
                lst = out.setdefault(key, list(self.base[key]))
                lst[int(idx)] = value
            else:
                out[dim] = value
        return out

    def all(self) -> Iterator[Arch]:
        return itertools.product(*(range(n) for n in self.cardinalities))

    def smallest(self) -> Arch:
        """Every dim at its smallest value (the cheapest architecture when cost grows with each)."""
        return tuple(min(range(len(c)), key=lambda i, c=c: c[i]) for c in self.choices)


def resolve(spec: SpaceFile, base: Mapping[str, Any]) -> Space:
    """Concrete choices for a model whose own builder values are `base`."""
    where = f"search space {spec.name!r}"
    dims, choices = [], []
    for dim, values in spec.dims.items():
        key, _, idx = dim.partition(".")
        own = base.get(key)
        if idx:
            check(isinstance(own, (list, tuple)) and int(idx) < len(own),
                  f"{where}: dim {dim!r} names element {idx} of {key!r}, but this model's {key} is {own!r} "
                  f"(known arguments: {', '.join(sorted(base))})")
            own = own[int(idx)]
        concrete: list[Any] = []
        for v in values:
            if isinstance(v, str):
                check(isinstance(own, (int, float)), f"{where}: dim {dim!r} has relative choice {v!r}, but this "
                                                     f"model has no {dim} value (known: {', '.join(sorted(base))})")
                v = _round(key, own * float(v.strip()[:-1]), spec.multiple_of)
            concrete.append(v)
        concrete = list(dict.fromkeys(concrete))
        dims.append(dim)
        choices.append(tuple(concrete))
    space = Space(spec.name, tuple(dims), tuple(choices), {k: (list(v) if isinstance(v, (list, tuple)) else v)
                                                          for k, v in base.items()}, dict(spec.fixed))
    check(space.size > 1, f"{where} resolves to one architecture on this model ({space.values(space.smallest())}): "
                          f"nothing to search")
    _check_heads(where, dict(zip(dims, map(list, choices))), spec.fixed, relative_ok=False, base=base)
    return space


def _round(key: str, value: float, multiple: int) -> int:
    if key in WHOLE:
        return max(1, round(value))
    return max(multiple, round(value / multiple) * multiple)
