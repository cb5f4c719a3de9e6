"""Typed dataclass configs: parsing `name:key=value,...` specs, coercion, validation.

Every method config is a frozen dataclass; this module turns command-line strings into
such a config and back into a plain dict that is recorded verbatim with every run.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """A bad config key or value; the message names it and what would be accepted."""


def field_specs(cls: type) -> list[dict[str, Any]]:
    """Describe a dataclass's fields (name, type, default, help) for `slimbench list`."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name == "version":
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append({"name": f.name, "type": _type_name(hints[f.name]), "default": default,
                    "help": f.metadata.get("help", "")})
    return out


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp) if a is not Ellipsis)}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a (possibly string) value to the annotated type, or raise ConfigError."""
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value):
                return c
        raise ConfigError(f"{where}={value!r} is not valid; choose one of {', '.join(map(str, choices))}")
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}={value!r} matches none of {_type_name(tp)}")
    if origin in (tuple, list):
        (item_tp, *_) = get_args(tp) or (str,)
        items = value
        if isinstance(value, str):
            items = [v for v in value.split(";") if v != ""] if value else []
        try:
            seq = [coerce(v, item_tp, where) for v in items]
        except TypeError:
            raise ConfigError(f"{where}={value!r} should be a list of {_type_name(item_tp)} (separate items with ';')")
        return tuple(seq) if origin is tuple else seq
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}={value!r} is not a boolean; use true or false")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} should be {tp.__name__}")
        try:
            num = float(value) if tp is float else _to_int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}={value!r} is not a valid {tp.__name__}") from None
        return num
    if tp is str:
        return str(value)
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    return int(value)


def build(cls: type, overrides: dict[str, Any], owner: str) -> Any:
    """Instantiate config `cls` with overrides; unknown keys name the valid fields."""
    hints = typing.get_type_hints(cls)
    valid = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "version"}
    kwargs = {}
    for key, raw in overrides.items():
        if key not in valid:
            import difflib
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{owner} has no config field {key!r}.{hint} Valid fields: "
                              f"{', '.join(sorted(valid)) or '(none)'}")
        kwargs[key] = coerce(raw, hints[key], f"{owner}:{key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split `name:key=value,key=value` into the name and raw string overrides."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"empty method name in {spec!r}; expected NAME or NAME:key=value,...")
    overrides: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"bad setting {part!r} in {spec!r}; expected key=value")
        overrides[key.strip()] = value.strip()
    return name, overrides


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-safe dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def check(cond: bool, message: str) -> None:
    """Raise ConfigError(message) unless cond; used in configs' __post_init__."""
    if not cond:
        raise ConfigError(message)
