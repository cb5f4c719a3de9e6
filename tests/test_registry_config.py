"""The generic registry, spec parsing and config validation: errors name the bad value and the choices."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from slimbench.methods import METHODS, create_method
from slimbench.core.config import ConfigError, build, coerce, field_specs, parse_spec
from slimbench.core.registry import Registry, UnknownNameError


def test_registry_did_you_mean_and_duplicates():
    reg: Registry[object] = Registry("widget")
    reg.register("alpha")(object)
    with pytest.raises(UnknownNameError) as err:
        reg.get("alpah")
    assert "Did you mean 'alpha'" in str(err.value) and "Valid choices: alpha" in str(err.value)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha")(int)


def test_unknown_method_lists_choices():
    with pytest.raises(UnknownNameError, match="Valid choices: .*baseline"):
        create_method("nosuch")


def test_parse_spec():
    assert parse_spec("quant.minmax:bits=4, group_size=128") == ("quant.minmax", {"bits": "4", "group_size": "128"})
    assert parse_spec("half") == ("half", {})
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_spec("half:dtype")
    with pytest.raises(ConfigError, match="empty method name"):
        parse_spec(":bits=4")


@dataclass(frozen=True)
class _Cfg:
    version: int = 1
    bits: int = 8
    ratio: float = 0.5
    mode: Literal["a", "b"] = "a"
    flag: bool = False
    skip: tuple[str, ...] = field(default=(), metadata={"help": "patterns"})
    rank: int | None = None

    def __post_init__(self):
        if self.bits not in (2, 4, 8):
            raise ConfigError(f"bits={self.bits} is not supported; choose 2, 4 or 8")


def test_build_coerces_and_validates():
    cfg = build(_Cfg, {"bits": "4", "ratio": "0.25", "mode": "b", "flag": "true", "skip": "x;y", "rank": "none"}, "m")
    assert cfg == _Cfg(bits=4, ratio=0.25, mode="b", flag=True, skip=("x", "y"), rank=None)
    with pytest.raises(ConfigError, match=r"bits=3 is not supported; choose 2, 4 or 8"):
        build(_Cfg, {"bits": "3"}, "m")
    with pytest.raises(ConfigError, match="not a valid int"):
        build(_Cfg, {"bits": "four"}, "m")
    with pytest.raises(ConfigError, match="choose one of a, b"):
        build(_Cfg, {"mode": "c"}, "m")
    with pytest.raises(ConfigError, match="Did you mean 'bits'"):
        build(_Cfg, {"bitz": "4"}, "m")
    with pytest.raises(ConfigError, match="boolean"):
        coerce("maybe", bool, "m:flag")
    names = [f["name"] for f in field_specs(_Cfg)]
    assert names == ["bits", "ratio", "mode", "flag", "skip", "rank"]  # version is internal


def test_half_config_rejects_bad_dtype():
    with pytest.raises(ConfigError, match="dtype='fp8' is not valid; choose one of auto, fp16, bf16"):
        create_method("half:dtype=fp8")


def test_plugin_discovered_through_entry_point():
    """The demo distribution under tests/plugins is pip-installed by the test set-up."""
    pytest.importorskip("slimbench_demo_plugin", reason="run `make test` to install the demo plugin")
    assert "demo.round" in METHODS.names()
    m = create_method("demo.round:decimals=1")
    assert m.name == "demo.round" and m.config.decimals == 1
    assert METHODS.origin("demo.round").startswith("slimbench_demo_plugin")
    with pytest.raises(ConfigError, match="decimals=9 must be in 0..6"):
        create_method("demo.round:decimals=9")


def test_list_does_not_import_heavy_modules():
    """`slimbench --help` and `list` stay fast because no method or task imports torch to register."""
    import subprocess
    import sys
    code = ("import sys, io, contextlib; from slimbench.suite.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['list', '--json'])\n"
            "print(sorted(m for m in ('torch', 'mlflow', 'timm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- MethodConfig checks and nested settings

from slimbench.core.config import MethodConfig, check, setting, spec_from_file, spec_sources  # noqa: E402


@dataclass(frozen=True)
class _Arch:
    layers: int = 2
    width: float = 1.0


@dataclass(frozen=True)
class _Nested(MethodConfig):
    mode: Literal["a", "b"] = setting("a", "mode")
    ratio: float = setting(0.5, "ratio", gt=0, le=1)
    per_layer: dict[str, float] = setting(help="sparsity per layer", default_factory=dict)
    arch: _Arch = setting(help="student", default_factory=_Arch)
    widths: tuple[int, ...] = setting((8, 4), "widths", ge=1)


def test_method_config_checks_every_field_however_built():
    with pytest.raises(ConfigError, match="mode='c' is not valid; choose one of a, b"):
        _Nested(mode="c")
    with pytest.raises(ConfigError, match=r"ratio=0 must be in \(0, 1\]"):
        _Nested(ratio=0)
    with pytest.raises(ConfigError, match="widths=8;0 must be >= 1"):
        _Nested(widths=(8, 0))
    with pytest.raises(ConfigError, match="per_layer=.* should be dict"):
        _Nested(per_layer={"a": "x"})
    assert _Nested(widths=[3, 2]).widths == (3, 2)


def test_plugin_post_init_still_gets_field_checks():
    pytest.importorskip("slimbench_demo_plugin", reason="run `make test` to install the demo plugin")
    from slimbench_demo_plugin import RoundConfig
    with pytest.raises(ConfigError, match="decimals='2' should be int"):
        RoundConfig(decimals="2")


def test_nested_settings_from_json_and_files(tmp_path):
    name, raw = parse_spec('x.y:{"per_layer": {"fc1": 0.5}, "arch": {"layers": 1}, "mode": "b"}')
    cfg = build(_Nested, raw, name)
    assert cfg.per_layer == {"fc1": 0.5} and cfg.arch == _Arch(layers=1) and cfg.mode == "b"
    path = tmp_path / "cfg.yaml"
    path.write_text("# my sparsity map\nmethod: x.y\nper_layer:\n  fc1: 0.25\n  fc2: 0.75\narch: {width: 0.5}\n")
    name, raw = parse_spec(f"x.y:@{path},ratio=0.25")
    cfg = build(_Nested, raw, name)
    assert cfg.per_layer == {"fc1": 0.25, "fc2": 0.75} and cfg.arch.width == 0.5 and cfg.ratio == 0.25
    assert spec_from_file(path) == f"x.y:@{path}"
    assert spec_sources(f"x.y:@{path}") == {str(path): path.read_text()}  # recorded verbatim
    with pytest.raises(ConfigError, match="is for method 'x.y', not 'z.z'"):
        parse_spec(f"z.z:@{path}")
    with pytest.raises(ConfigError, match="does not exist"):
        parse_spec("x.y:@/nonexistent.yaml")
    (tmp_path / "bad.yaml").write_text("ratio: 0.5\n")
    with pytest.raises(ConfigError, match="needs a top-level `method: NAME`"):
        spec_from_file(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match=r"arch:layers='many' is not a valid int"):
        build(_Nested, {"arch": {"layers": "many"}}, "x.y")


def test_spec_of_a_nested_config_round_trips():
    from slimbench.methods import Method

    class _M(Method):
        name = "x.y"
        config_cls = _Nested

    m = _M(_Nested(per_layer={"a.b": 0.5}, ratio=0.25))
    name, raw = parse_spec(m.spec)
    assert name == "x.y" and build(_Nested, raw, name) == m.config
    assert _M(_Nested(ratio=0.25)).spec == "x.y:ratio=0.25"
    assert [f["name"] for f in field_specs(_Nested)] == ["mode", "ratio", "per_layer", "arch", "widths"]


@dataclass(frozen=True)
class _Inner:
    layers: int = setting(2, "layers", ge=1)
    kind: Literal["x", "y"] = setting("x", "kind")


@dataclass(frozen=True)
class _Outer(MethodConfig):
    inner: _Inner = setting(help="nested", default_factory=_Inner)
    a: int = 1

    def validate(self):
        check(self.a < 5, f"a={self.a} must be < 5")


@dataclass(frozen=True)
class _Child(_Outer):
    b: int = 0

    def __post_init__(self):  # a plugin's own hook must not switch off the inherited rules
        check(self.b >= 0, "b must be >= 0")


def _bad_inner() -> _Inner:
    """An invalid nested value, built around its own (absent) checks."""
    obj = object.__new__(_Inner)
    object.__setattr__(obj, "layers", 2)
    object.__setattr__(obj, "kind", "q")
    return obj


def test_nested_settings_and_inherited_rules_are_checked():
    with pytest.raises(ConfigError, match="inner.layers=0 must be >= 1"):
        build(_Outer, {"inner": {"layers": 0}}, "m")
    with pytest.raises(ConfigError, match="inner.kind='q' is not valid"):
        _Outer(inner=_bad_inner())
    with pytest.raises(ConfigError, match="a=7 must be < 5"):
        _Child(a=7)
    with pytest.raises(ConfigError, match="b must be >= 0"):
        _Child(b=-1)
