"""Typed dataclass configs: the `MethodConfig` base, spec parsing, coercion and validation.

Every method config is a frozen dataclass deriving from `MethodConfig`. Its fields are checked
once, here, whoever builds it (the command line, a YAML file, or Python code): Literal choices,
types, and the ranges declared with `setting(..., ge=1)`. A method adds cross-field checks in
`validate()`. This module also turns `--method` specs into such a config and a config back into
the plain dict recorded verbatim with every run. Torch-free: `slimbench list` stays fast.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """A bad config key or value; the message names it and what would be accepted."""


def check(cond: bool, message: str) -> None:
    """Raise ConfigError(message) unless cond; for a config's cross-field `validate()`."""
    if not cond:
        raise ConfigError(message)


_MISSING = dataclasses.MISSING


def setting(default: Any = _MISSING, help: str = "", *, choices: tuple | None = None,
            ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, default_factory: Any = _MISSING) -> Any:
    """A config field with its help text and the checks `MethodConfig` applies to it.

    `choices` restricts values (each element, for a tuple field); `ge`/`gt`/`le`/`lt` bound
    numbers (each element, for a tuple field).
    """
    meta = {"help": help, **{k: v for k, v in (("choices", choices), ("ge", ge), ("gt", gt), ("le", le),
                                                 ("lt", lt)) if v is not None}}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ------------------------------------------------------------------ types

def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "|".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp) if a is not Ellipsis)}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def ordered_fields(cls: type) -> list[dataclasses.Field]:
    """A config's fields, most specific first: a subclass's own fields, then those it inherits
    (shared settings such as `skip` come last in listings, labels and specs)."""
    mro = [c for c in cls.__mro__ if dataclasses.is_dataclass(c)]

    def depth(f: dataclasses.Field) -> int:
        return max(i for i, c in enumerate(mro) if f.name in getattr(c, "__annotations__", {}))
    fields = list(dataclasses.fields(cls))
    return sorted(fields, key=lambda f: (depth(f), fields.index(f)))


def field_specs(cls: type) -> list[dict[str, Any]]:
    """Describe a dataclass's fields (name, type, default, help) for `slimbench list`."""
    hints = _hints(cls)
    out = []
    for f in ordered_fields(cls):
        if not f.init or f.name == "version":
            continue
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else None)
        out.append({"name": f.name, "type": _type_name(hints[f.name]), "default": default,
                    "help": f.metadata.get("help", "")})
    return out


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
    if origin is dict:
        key_tp, val_tp = get_args(tp) or (str, Any)
        if isinstance(value, str) and value.strip().startswith("{"):
            value = _json(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} should be a mapping of {_type_name(key_tp)} to "
                              f"{_type_name(val_tp)} (give it in a config file or as JSON)")
        return {coerce(k, key_tp, f"{where}[key]"): coerce(v, val_tp, f"{where}[{k!r}]") for k, v in value.items()}
    if origin in (tuple, list):
        (item_tp, *_) = get_args(tp) or (str,)
        items = value
        if isinstance(value, str):
            items = [v for v in value.split(";") if v != ""] if value else []
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}={value!r} should be a list of {_type_name(item_tp)} (separate items with ';')")
        seq = [coerce(v, item_tp, where) for v in items]
        return tuple(seq) if origin is tuple else seq
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and value.strip().startswith("{"):
            value = _json(value, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} should be a mapping of {tp.__name__} fields")
        return build(tp, value, where)
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
            return float(value) if tp is float else _to_int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}={value!r} is not a valid {tp.__name__}") from None
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"{where}={value!r} should be a string")
        return str(value)
    return value


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: {text!r} is not valid JSON ({exc})") from None


def _to_int(value: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    return int(value)


# ------------------------------------------------------------------ validation

def _conforms(value: Any, tp: Any) -> bool:
    """Whether an already-typed value matches the annotation (no conversion)."""
    if tp is Any:
        return True
    origin = get_origin(tp)
    if origin is Literal:
        return any(value == c and type(value) is type(c) for c in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (tuple, list):
        item = (get_args(tp) or (Any,))[0]
        return isinstance(value, origin) and all(_conforms(v, item) for v in value)
    if origin is dict:
        k_tp, v_tp = get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(_conforms(k, k_tp) and _conforms(v, v_tp) for k, v in value.items())
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _check_bounds(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    items = value if isinstance(value, (tuple, list)) else (value,)
    shown = ";".join(map(str, value)) if isinstance(value, (tuple, list)) else repr(value)
    for v in items:
        if v is None:
            continue
        if "choices" in meta and v not in meta["choices"]:
            what = f"contains {v!r}, which is not supported" if isinstance(value, (tuple, list)) else "is not supported"
            raise ConfigError(f"{name}={shown} {what}; choose one of {', '.join(map(str, meta['choices']))}")
        ok = all(op(float(v), float(meta[key])) for key, op in _BOUNDS if key in meta) \
            if isinstance(v, (int, float)) else True
        if not ok:
            raise ConfigError(f"{name}={shown} must be {_bounds_text(meta)}")


_BOUNDS = (("ge", float.__ge__), ("gt", float.__gt__), ("le", float.__le__), ("lt", float.__lt__))


def _bounds_text(meta: typing.Mapping[str, Any]) -> str:
    """'>= 1', '< 5' or an interval such as '(0, 1]'."""
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = (meta["le"], "]") if "le" in meta else (meta["lt"], ")") if "lt" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]}"
    return f"{'<=' if hi[1] == ']' else '<'} {hi[0]}"


def validate_fields(cfg: Any, prefix: str = "") -> None:
    """Type, Literal and range checks of every field of a config dataclass instance, nested
    dataclass settings included (named `outer.inner` in errors).

    Lists given for tuple fields become tuples (configs are frozen and hashable)."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        tp = hints[f.name]
        name = prefix + f.name
        if get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
            object.__setattr__(cfg, f.name, value)
        if not _conforms(value, tp):
            if get_origin(tp) is Literal:
                raise ConfigError(f"{name}={value!r} is not valid; choose one of "
                                  f"{', '.join(map(str, get_args(tp)))}")
            raise ConfigError(f"{name}={value!r} should be {_type_name(tp)}")
        _check_bounds(name, value, f.metadata)
        if dataclasses.is_dataclass(value) and not isinstance(value, type) and not isinstance(value, MethodConfig):
            validate_fields(value, f"{name}.")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base of every method config: frozen, typed, versioned, recorded verbatim per run.

    Field types, Literal choices and `setting()` bounds are checked here for every config,
    however it is built; put cross-field rules in `validate()`. A subclass that defines its own
    `__post_init__` still gets the field checks first."""

    version: int = setting(1, "config schema version", ge=1)

    def __post_init__(self) -> None:
        validate_fields(self)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; raise ConfigError (or use `check`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_slim_checked", False):
            def post_init(self, _own=own):  # a subclass's own __post_init__, between the checks
                validate_fields(self)
                _own(self)
                self.validate()
            post_init._slim_checked = True  # type: ignore[attr-defined]
            cls.__post_init__ = post_init  # type: ignore[method-assign]


# ------------------------------------------------------------------ building and specs

def build(cls: type, overrides: dict[str, Any], owner: str) -> Any:
    """Instantiate config `cls` with overrides; unknown keys name the valid fields."""
    hints = _hints(cls)
    valid = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "version"}
    kwargs = {}
    for key, raw in overrides.items():
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{owner} has no config field {key!r}.{hint} Valid fields: "
                              f"{', '.join(sorted(valid)) or '(none)'}")
        kwargs[key] = coerce(raw, hints[key], f"{owner}:{key}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(owner) else f"{owner}: {msg}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


FILE_METHOD_KEY = "method"  # the method name inside a config file given with --method-config


def load_config_file(path: str | Path) -> tuple[dict[str, Any], str]:
    """A YAML/JSON mapping of config fields (and optionally `method: NAME`) -> (mapping, verbatim text)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"method config file {str(path)!r} does not exist")
    text = p.read_text()
    if p.suffix.lower() == ".json":
        data = _json(text, str(path))
    else:
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"method config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"method config file {str(path)!r} must hold a mapping of config fields, "
                          f"not {type(data).__name__}")
    return data, text


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split a method spec into its name and raw overrides.

    Forms: `name`, `name:key=value,key=value` (lists `;`-separated), `name:@file.yaml[,key=value]`
    (fields from a YAML/JSON file, inline ones win) and `name:{json}` (any nesting)."""
    name, _, rest = spec.partition(":")
    name, rest = name.strip(), rest.strip()
    if not name:
        raise ConfigError(f"empty method name in {spec!r}; expected NAME or NAME:key=value,...")
    overrides: dict[str, Any] = {}
    if rest.startswith("{"):
        data = _json(rest, name)
        if not isinstance(data, dict):
            raise ConfigError(f"{name}: the JSON config must be an object")
        return name, data
    if rest.startswith("@"):
        path, _, rest = rest[1:].partition(",")
        data, _ = load_config_file(path.strip())
        named = data.pop(FILE_METHOD_KEY, name)
        if named != name:
            raise ConfigError(f"method config file {path.strip()!r} is for method {named!r}, not {name!r}")
        overrides.update(data)
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"bad setting {part!r} in {spec!r}; expected key=value")
        overrides[key.strip()] = value.strip()
    return name, overrides


def spec_from_file(path: str | Path) -> str:
    """`--method-config FILE` as a `--method` spec: the file names its method (`method: NAME`)."""
    data, _ = load_config_file(path)
    name = data.get(FILE_METHOD_KEY)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"method config file {str(path)!r} needs a top-level `{FILE_METHOD_KEY}: NAME` "
                          "(or pass it as --method NAME:@FILE)")
    return f"{name}:@{path}"


def spec_sources(spec: str) -> dict[str, str]:
    """{path: verbatim text} of the config file a spec reads, recorded with the run."""
    _, _, rest = spec.partition(":")
    rest = rest.strip()
    if not rest.startswith("@"):
        return {}
    path = rest[1:].partition(",")[0].strip()
    return {path: load_config_file(path)[1]}


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-safe dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def is_inline(value: Any) -> bool:
    """Whether a value can be written in `key=value` form (scalars and flat lists)."""
    if isinstance(value, (tuple, list)):
        return all(isinstance(v, (str, int, float, bool)) and not (isinstance(v, str) and (";" in v or "," in v))
                   for v in value)
    if isinstance(value, str):
        return "," not in value and not value.startswith(("{", "@"))
    return isinstance(value, (int, float, bool)) or value is None
