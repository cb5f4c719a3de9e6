"""Students: what they are built as (builder overrides) and what they start from (the teacher), or,
with `student=input`, the model the method was given.

A student is always `task.build_model(**overrides)`, so its artifact reloads through the same
door as any model: the suite rebuilds it from the recorded overrides and loads the bytes.
Overrides are given (`student`) or derived from the teacher's own shape for the two model kinds
the suite ships: a timm ResNet (`layers`, `channels`, `stem_width`) and a transformers encoder
(`num_hidden_layers`, `intermediate_size`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from slimbench.core.config import ConfigError
from slimbench.methods.common.children import hf_config, inherit, layer_map, ranked, resnet_stages

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.distill.configs import StudentConfig


def _round8(x: float) -> int:
    """Down to a multiple of 8 (vector units want them), at least 8: a width below 1 always shrinks."""
    return max(8, int(x + 1e-9) // 8 * 8)


def derive(teacher: nn.Module, cfg: "StudentConfig", owner: str) -> dict[str, Any]:
    """The student's builder overrides: `cfg.student` if given, else shrunk by depth and width."""
    if cfg.student:
        return dict(cfg.student)
    hf = hf_config(teacher)
    if hf is not None:
        over: dict[str, Any] = {"num_hidden_layers": max(1, round(hf.num_hidden_layers * cfg.depth))}
        if cfg.width != 1:
            over["intermediate_size"] = _round8(hf.intermediate_size * cfg.width)
        return over
    stages = resnet_stages(teacher)
    if stages is not None:
        return _resnet_student(getattr(teacher, "net", teacher), stages, cfg)
    raise ConfigError(f"{owner} derives students from depth/width for timm ResNets and transformers encoders only; "
                      f"give this model's student as builder arguments (student={{...}} in a config file or JSON)")


def _resnet_student(net: nn.Module, stages: list[nn.Module], cfg: "StudentConfig") -> dict[str, Any]:
    """timm ResNet overrides: `layers` by depth, `channels` by width and, for deep stems (whose width
    timm takes as `stem_width`: the second stem conv's, the stem emitting twice that), `stem_width`
    by width. A first stage that adds straight onto the stem's output (no projection shortcut)
    keeps doing so: its width follows the student's stem, not its own rounding."""
    over: dict[str, Any] = {"layers": [max(1, round(len(st) * cfg.depth)) for st in stages],
                            "channels": [_round8(st[0].conv1.out_channels * cfg.width) for st in stages]}
    deep = isinstance(net.conv1, nn.Sequential)
    if deep:
        convs = [m for m in net.conv1 if isinstance(m, nn.Conv2d)]
        over["stem_width"] = _round8(convs[1].out_channels * cfg.width)
        stem_out = 2 * over["stem_width"]
    else:  # a plain 7x7 stem always emits 64 channels in timm: nothing to scale
        stem_out = net.conv1.out_channels
    first = stages[0][0]
    if getattr(first, "downsample", None) is None:
        over["channels"][0] = stem_out // getattr(type(first), "expansion", 1)
    return over


def build_student(ctx, cfg: "StudentConfig", owner: str) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """(student on the run's device, its builder overrides, what the run records about it)."""
    teacher = ctx.teacher
    over = derive(teacher, cfg, owner)
    try:
        student = ctx.build_model(**over)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{owner}: the task's model builder rejected student={over}: {exc}") from exc
    mapping = layer_map(teacher, student, cfg.layer_map, owner)
    student.to(ctx.device)
    info: dict[str, Any] = {"student": over}
    if mapping:
        info["layer_map"] = mapping
    if cfg.init != "scratch":
        source, how = (teacher, "leading slices") if cfg.init == "leading" else \
            ranked(teacher, student, {k: v.to(ctx.device) for k, v in ctx.example_inputs(2).items()})
        info.update(inherit(student, source, mapping), inherited=how)
    n_s, n_t = (sum(p.numel() for p in m.parameters()) for m in (student, teacher))
    info.update(student_params=n_s, teacher_params=n_t, params_ratio=round(n_t / n_s, 3))
    if n_s > n_t:
        info["note"] = f"student larger than its teacher ({n_s:,} vs {n_t:,} parameters)"
    return student, over, info


def input_student(model: nn.Module, ctx) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """`student=input`: the model `compress` was given (a private copy) is the student, as it is, on
    the run's device: its architecture is the input's, so there are no builder overrides."""
    student = model.to(ctx.device)
    n_s, n_t = (sum(p.numel() for p in m.parameters()) for m in (student, ctx.teacher))
    return student, {}, {"student": "input", "student_params": n_s, "teacher_params": n_t,
                         "params_ratio": round(n_t / n_s, 3)}
