"""Pipelines: methods chained in order, `--method "distill.kd+prune.magnitude:sparsity=0.5+quant.minmax:bits=8"`.

Each stage compresses the model the previous one returned, on its own share of the task's budgets
(`stage[0.5]`: half the fine-tuning steps and half the search candidates; without shares the
budget is split evenly), with the task's trained baseline as the teacher throughout. A stage may
follow another only if the earlier one's result is plain float layers (`Method.followable`:
distillation, architecture search, pruning, whose sparse layers are densified with their zeros);
a packed format (quantization, low-rank factors, a cast) ends a pipeline. A stage that starts from
the teacher rather than its input (`Method.starts_from`: architecture search, distillation of a
derived student) may only come first: later, it would spend its share and discard the earlier
stages' result (`distill.*:student=input` trains the incoming model instead). An order that breaks
either rule is rejected before any work. The run is one run: its artifact is the last stage's,
reloaded alone onto a freshly built model (with the builder arguments and layer sizes the earlier
stages left, recorded in its meta), and `method_metrics.stages` holds each stage's own figures,
steps and validation accuracy.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slimbench.core.config import ConfigError, MethodConfig, build, parse_spec, setting
from slimbench.methods.base import Compressed, CompressionContext, Method, as_compressed, create_single

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

NAME = "pipeline"
_SHARE = re.compile(r"^(?P<spec>.*?)\s*\[\s*(?P<share>[^\]]*?)\s*\]\s*$", re.S)
_NUMBER = re.compile(r"1(\.0*)?|0?\.\d+|0(\.\d*)?")  # a share in [0, 1]; "[12]" is a glob, not a share


@dataclass(frozen=True)
class PipelineConfig(MethodConfig):
    stages: tuple[str, ...] = setting((), "the stages' method specs, in order")
    shares: tuple[float, ...] = setting((), "each stage's share of the fine-tuning and search budgets", ge=0, le=1)
    versions: tuple[int, ...] = setting((), "each stage's algorithm version (part of the run key)")


def split(spec: str) -> list[str]:
    """The stage specs of `a+b+c`, splitting on '+' outside JSON braces and brackets."""
    parts, depth, cur = [], 0, []
    for ch in spec:
        depth += ch in "{[" and 1 or ch in "}]" and -1 or 0
        if ch == "+" and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def is_pipeline(spec: str) -> bool:
    return len(split(spec)) > 1


def create(spec: str) -> Method:
    """The front door for every method spec: one method, or a pipeline of them."""
    return Pipeline.from_spec(spec) if is_pipeline(spec) else create_single(spec)


class Pipeline(Method):
    """Methods in order, each on its share of the budget; see the module docstring."""

    name = NAME
    family = "pipeline"
    config_cls = PipelineConfig
    description = "Compression methods chained in order, each on its own share of the budget; one artifact."

    def __init__(self, config: PipelineConfig | None = None):
        """Built from a spec by `from_spec` (`create_method("a+b")`); the config holds every stage's
        canonical spec, share and version, so the run key changes when any of them does."""
        super().__init__(config)
        c = self.config
        if len(c.stages) < 2:
            raise ConfigError(f"a pipeline needs two or more stages joined by '+'; got {list(c.stages)!r}")
        self.stages = [create_single(s) for s in c.stages]
        if len(c.shares) != len(self.stages):
            raise ConfigError(f"{len(c.shares)} budget shares for {len(self.stages)} stages")
        if sum(c.shares) > 1 + 1e-6:
            raise ConfigError(f"the stages' budget shares add up to {sum(c.shares):g}; together they may use at "
                              "most the whole budget (1)")
        for i, (a, b) in enumerate(zip(self.stages, self.stages[1:])):
            if not a.followable:
                raise ConfigError(f"stage {i + 2} ({b.name}) cannot follow {a.name}: {a.name}'s result is not plain "
                                  f"float layers (a {a.family} format another method cannot take); put {a.name} "
                                  "last, after distillation, architecture search or pruning")
        for i, m in enumerate(self.stages[1:], start=2):
            if m.starts_from == "teacher":
                raise ConfigError(_teacher_stage(i, m))
        versions = tuple(m.version for m in self.stages)
        if c.versions != versions:
            raise ConfigError(f"stage versions {list(c.versions)} are not this code's {list(versions)}")
        self.default_seeds = max(m.default_seeds for m in self.stages)
        self.simulated = any(m.simulated for m in self.stages)  # one simulated stage makes the result simulated

    @classmethod
    def from_spec(cls, spec: str) -> "Pipeline":
        stages, shares = [], []
        for part in split(spec):
            m = _SHARE.match(part)
            text, share = (m["spec"], m["share"]) if m else (part, None)
            if share is not None and not _NUMBER.fullmatch(share) and ":" in text:
                text, share = part, None  # brackets inside a setting (a glob such as *.fc[12])
            if not text:
                raise ConfigError(f"empty stage in pipeline {spec!r}; expected METHOD[:settings][[share]]+...")
            if parse_spec(text)[0] == NAME or is_pipeline(text):
                raise ConfigError("a pipeline cannot hold a pipeline")
            stages.append(create_single(text).spec)
            if share is not None:
                try:
                    shares.append(float(share))
                except ValueError:
                    raise ConfigError(f"budget share {share!r} of stage {text!r} is not a number in [0, 1]") from None
        if shares and len(shares) != len(stages):
            raise ConfigError(f"give a [share] to every stage of {spec!r} or to none (even split)")
        shares = shares or [round(1 / len(stages), 6)] * len(stages)
        versions = [create_single(s).version for s in stages]
        return cls(build(PipelineConfig, {"stages": stages, "shares": shares, "versions": versions}, owner=NAME))

    @property
    def spec(self) -> str:
        return "+".join(f"{s}[{share:g}]" for s, share in zip(self.config.stages, self.config.shares))

    @property
    def label(self) -> str:
        return " + ".join(m.label for m in self.stages)

    @property
    def starts_from(self) -> str:  # type: ignore[override]
        return self.stages[0].starts_from

    def supports(self, task, device):
        return next((f"{m.name}: {r}" for m in self.stages if (r := m.supports(task, device))), None)

    def compress(self, model: "nn.Module", ctx: CompressionContext) -> Compressed:
        overrides: dict[str, Any] = {}
        stages: list[dict[str, Any]] = []
        entering: dict[str, tuple[int, ...]] = {}
        result = None
        for i, (method, share) in enumerate(zip(self.stages, self.config.shares)):
            last = i == len(self.stages) - 1
            if last:
                entering = _resized(model, ctx.build_model(**overrides))
            sub = ctx.stage(method.name, share)
            t0 = time.perf_counter()
            result = as_compressed(method.compress(model, sub))
            overrides.update(result.build_overrides)
            model = result.model if last else method.densify(result.model)
            if not last:
                _check_plain(model, method.name)
            stages.append({"method": method.spec, "share": share, "budget": sub.ledger.summary(),
                           "seconds": round(time.perf_counter() - t0, 3), "metrics": result.metrics,
                           f"val_{ctx.task.metric or 'accuracy'}":
                               ctx.val_metric(model) if ctx.evaluator is not None else None})
        meta = {"stage_meta": result.meta, "resized": {k: list(v) for k, v in entering.items()}}
        metrics = {"stages": stages, **result.metrics}
        if isinstance(result.metrics.get("control"), dict):
            metrics["control"] = self._control(result.metrics["control"])
        return Compressed(model, meta=meta, metrics=metrics, build_overrides=overrides)

    def _control(self, last: dict[str, Any]) -> dict[str, Any]:
        """The row the last stage's control stands for here: the same earlier stages and shares, then the
        control (prune + distill.kd:student=input is read against prune + distill.scratch:student=input,
        not against a scratch student trained from the unpruned baseline)."""
        import json

        spec = create_single(f"{last['method']}:{json.dumps(last.get('config') or {})}").spec
        return {"method": NAME, "config": {"stages": [*self.config.stages[:-1], spec],
                                           "shares": list(self.config.shares)}}

    def restore(self, model: "nn.Module", tensors: dict, meta: dict[str, Any]) -> "nn.Module":
        import torch

        from slimbench.methods.common.resize import fit_to_tensors

        fit_to_tensors(model, {k: torch.empty(v) for k, v in (meta.get("resized") or {}).items()})
        for stage in self.stages[:-1]:  # e.g. head counts after pruned attention
            model = stage.after_resize(model)
        return self.stages[-1].restore(model, tensors, meta.get("stage_meta") or {})


def _teacher_stage(position: int, m: Method) -> str:
    """Why a stage that starts from the teacher cannot come after another, and what to do."""
    fix = f"put {m.name} first"
    if m.family == "distillation":
        fix += f", or train the incoming model as the student: {m.name}:student=input"
    return (f"stage {position} ({m.spec}) starts from the teacher, not from the model the stages before it hand "
            f"on: it would spend its budget share and discard the earlier stages' result; {fix}")


def _resized(model: "nn.Module", fresh: "nn.Module") -> dict[str, tuple[int, ...]]:
    """State-dict entries whose shape differs from a freshly built model's (a pruned or narrowed layer),
    so a restore can size the fresh skeleton before the last stage rebuilds its layers."""
    theirs = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    layers = {k.rpartition(".")[0] for k, shape in ours.items() if theirs.get(k, shape) != shape}
    return {k: shape for k, shape in ours.items() if k.rpartition(".")[0] in layers}  # a layer's bias and stats too


def _check_plain(model: "nn.Module", after: str) -> None:
    """After a non-final stage, every layer must be one another method can take (no packed twin)."""
    own = [f"{n} ({type(m).__name__})" for n, m in model.named_modules() if type(m).__module__.startswith("slimbench.methods")]
    if own:
        raise RuntimeError(f"after {after}, layers are still in a compressed format the next stage cannot take: "
                           f"{', '.join(own[:3])}")

