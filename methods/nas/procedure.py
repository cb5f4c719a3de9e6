"""A live architecture search: every candidate built by the task's builder, started from the
trained model's weights, trained for the proxy budget on the `search` account and scored on
validation; the best one trained with the task's fine-tuning budget and returned.

Hardware constraints are checked before a candidate is trained (its latency comes from the
suite's cost table, measured once per architecture and device), so a candidate that breaks one
costs no steps. Each candidate is a nested tracked run; a search killed half-way resumes from the
candidates its earlier run tracked (same run key, same seed: the strategy proposes the same
architectures again, and each is answered from the record instead of retrained).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from torch import nn

from slimbench.core.config import ConfigError
from slimbench.core.metrics import get_metric
from slimbench.core.recipe import SEARCH
from slimbench.methods.base import Compressed, Unsupported
from slimbench.methods.common.children import builder_values, child_from, model_kind
from slimbench.methods.nas.space import Arch, Space, load_space, resolve
from slimbench.core.pareto import pareto_front
from slimbench.methods.nas.strategies import Outcome, make_strategy, search

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.base import CompressionContext
    from slimbench.methods.nas.configs import SearchConfig

KD_T, KD_ALPHA = 4.0, 0.9


def space_for(cfg: "SearchConfig", parent: nn.Module, owner: str) -> Space:
    """The configured space, resolved against the trained model (`auto`: by its kind)."""
    kind = model_kind(parent)
    ref = cfg.space
    if ref == "auto":
        if kind is None:
            raise ConfigError(f"{owner}: space=auto knows timm ResNets and transformers encoders; give this model's "
                              f"space as a YAML file (space=path.yaml)")
        ref = kind
    spec = load_space(ref)
    if spec.model != "any" and spec.model != kind:
        raise ConfigError(f"{owner}: search space {spec.name!r} is for {spec.model} models, but this task's model "
                          f"is {kind or 'neither a ResNet nor a transformer'}")
    if cfg.space != "auto":
        return resolve(spec, builder_values(parent))
    try:  # the built-in space of this kind of model may still not fit this model's builder
        return resolve(spec, builder_values(parent))
    except ConfigError as exc:
        raise Unsupported(f"space=auto picked the built-in {spec.name!r} space, which does not fit this model "
                          f"({exc}); give this model's search space as a YAML file (space=path.yaml)") from None


class LiveSearch:
    """Evaluates architectures for real (see the module docstring)."""

    def __init__(self, ctx: "CompressionContext", cfg: "SearchConfig", strategy: str, space: Space, owner: str):
        self.ctx, self.cfg, self.strategy, self.space, self.owner = ctx, cfg, strategy, space, owner
        # candidates are compared on ctx.val_score (higher is better); records keep the metric's value
        self.metric = get_metric(ctx.task.metric)
        self.vkey = f"val_{self.metric.name}"
        self.parent = ctx.teacher
        self.example = {k: v.to(ctx.device) for k, v in ctx.example_inputs(2).items()}
        self.resumed = {(int(c["params"].get("index", -1)), c["params"].get("fingerprint")): c["metrics"]
                        for c in ctx.resumed_candidates()
                        if c.get("metrics", {}).get(self.vkey) is not None}
        self.reused = 0
        self.limits = self._limits()

    def _limits(self) -> dict[str, float]:
        """The constraints as absolute limits: the ratios are of the trained model's own cost,
        measured once through the same cost table as every candidate."""
        cfg = self.cfg
        limits = {k: float(v) for k, v in (("params", cfg.max_params), ("mflops", cfg.max_mflops),
                                           ("latency_ms", cfg.max_latency_ms)) if v is not None}
        if cfg.max_mflops_ratio is not None or cfg.max_latency_ratio is not None:
            own = self.ctx.costs("parent", self.parent, cfg.latency_batch)
            self.parent_cost = {"mflops": own["mflops"], "latency_ms": own["latency_ms"]}
            for key, ratio in (("mflops", cfg.max_mflops_ratio), ("latency_ms", cfg.max_latency_ratio)):
                if ratio is not None:
                    limits[key] = min(limits.get(key, float("inf")), ratio * own[key])
        return limits

    def build(self, arch: Arch) -> nn.Module:
        over = self.space.overrides(arch)
        try:
            child = self.ctx.build_model(**over)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"{self.owner}: the task's model builder rejected {over} from search space "
                              f"{self.space.name!r}: {exc}") from exc
        return child.to(self.ctx.device)

    def fingerprint(self, arch: Arch) -> str:
        """What a candidate's score depends on besides its index: the model built (fixed arguments
        included), the task definition, the proxy recipe and how it is trained. A resumed search
        reuses a tracked score only when this matches (a changed budget or space retrains)."""
        import dataclasses
        import hashlib
        import json

        blob = json.dumps({"model": self.space.model_key(arch), "task": self.ctx.task.key,
                           "proxy": dataclasses.asdict(self.ctx.recipe(steps=self.ctx.search.proxy_steps)),
                           "distill": self.cfg.distill, "init": self.cfg.init}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def costs(self, arch: Arch, child: nn.Module) -> dict[str, Any]:
        c = self.ctx.costs(self.space.model_key(arch), child, self.cfg.latency_batch)
        return {"params": sum(p.numel() for p in child.parameters()), "mflops": c["mflops"],
                "latency_ms": c["latency_ms"]}

    def violations(self, cost: dict[str, Any]) -> list[str]:
        return [f"{key} {cost[key]:,.4g} > {limit:,.4g}" for key, limit in self.limits.items() if cost[key] > limit]

    def check_ends(self) -> None:
        """Before any training: the space's extremes build, and its cheapest architecture can meet
        the constraints (else no candidate can, and the run says so now)."""
        small = self.space.smallest()
        large = tuple(max(range(len(c)), key=lambda i, c=c: c[i]) for c in self.space.choices)
        self.build(large)
        broken = self.violations(self.costs(small, self.build(small)))
        if broken:
            raise Unsupported(f"no architecture of search space {self.space.name!r} meets the constraints: even the "
                              f"smallest ({self.space.values(small)}) has " + "; ".join(broken))

    def train(self, child: nn.Module, steps: int, seed: int, account: str, desc: str) -> None:
        loss = None
        if self.cfg.distill:
            from slimbench.methods.common.losses import teacher_kd
            parent = self.parent
            loss = teacher_kd(lambda inputs: parent(**inputs), KD_T, KD_ALPHA)
        self.ctx.trainer.fit(child, self.ctx.train_batches(), self.ctx.recipe(steps=steps), seed, loss=loss,
                             account=account, desc=desc)

    def fresh(self, arch: Arch, child: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
        """A child ready to train: `child` (the one just built and timed, untouched by timing) or a
        new build, initialised from the parent."""
        child = self.build(arch) if child is None else child
        info = child_from(self.parent, child, self.example) if self.cfg.init == "baseline" else {}
        return child, info

    def __call__(self, arch: Arch, index: int) -> Outcome:
        t0 = time.perf_counter()
        key = self.space.key(arch)
        child = self.build(arch)
        cost = self.costs(arch, child)
        broken = self.violations(cost)
        steps = self.ctx.search.proxy_steps
        params = {"index": index, "arch": key, "strategy": self.strategy, "fingerprint": self.fingerprint(arch),
                  **self.space.values(arch)}
        metrics: dict[str, Any] = {**cost, "feasible": 0.0 if broken else 1.0}
        if broken:
            out = Outcome(None, cost["latency_ms"], trained=False, extra={"violates": broken})
        elif (index, params["fingerprint"]) in self.resumed:
            self.ctx.ledger.charge(steps, SEARCH)  # spent by the killed run: the budget still counts it
            acc = self.metric.score(float(self.resumed[(index, params["fingerprint"])][self.vkey]))
            params["resumed"] = True
            self.reused += 1
            out = Outcome(acc, cost["latency_ms"])
        else:
            child, _ = self.fresh(arch, child)
            self.train(child, steps, self.ctx.seed * 1000 + index, SEARCH, f"candidate {index + 1}")
            acc = self.ctx.val_score(child)
            out = Outcome(acc, cost["latency_ms"])
        seconds = time.perf_counter() - t0
        if out.trained:
            metrics.update({self.vkey: self.metric.unscore(out.accuracy), "proxy_steps": float(steps)})
        metrics.update(seconds=round(seconds, 3), search_steps=float(self.ctx.ledger.used.get(SEARCH, 0)))
        self.ctx.log_candidate(f"{self.strategy}-c{index:03d}" + ("" if out.trained else "-infeasible"),
                               params, metrics, evaluated=out.trained)
        out.extra.update(seconds=seconds, **cost)
        return out


def run_search(ctx: "CompressionContext", cfg: "SearchConfig", strategy: str, options: dict[str, Any],
               owner: str) -> Compressed:
    """Search, pick the best feasible candidate on validation, train it for the fine-tuning budget."""
    budget = ctx.search
    space = space_for(cfg, ctx.teacher, owner)
    live = LiveSearch(ctx, cfg, strategy, space, owner)
    live.check_ends()
    t0 = time.perf_counter()
    steps = search(make_strategy(strategy, space.cardinalities, ctx.seed, **options), live, budget.candidates)
    seconds = time.perf_counter() - t0
    trace, best_acc, used = [], None, 0
    metric, vkey = live.metric, live.vkey

    def value(score: float | None) -> float | None:
        return None if score is None else metric.unscore(score)
    for s in steps:
        o = s.outcome
        if not s.repeat and o.trained:
            used += budget.proxy_steps
            best_acc = o.accuracy if best_acc is None else max(best_acc, o.accuracy)
        if s.repeat:
            continue
        trace.append({"arch": space.key(s.arch), vkey: value(o.accuracy), "best": value(best_acc), "steps": used,
                      "latency_ms": o.extra.get("latency_ms"), "mflops": o.extra.get("mflops"),
                      "params": o.extra.get("params"), "seconds": round(o.extra.get("seconds", 0.0), 3),
                      "feasible": o.trained})
    done = [(s.arch, s.outcome) for s in steps if not s.repeat and s.outcome.trained]
    metrics: dict[str, Any] = {
        "strategy": strategy, "strategy_options": options, "space": space.name, "space_size": space.size,
        "space_choices": {d: list(c) for d, c in zip(space.dims, space.choices)},
        "candidates_trained": len(done), "proposals": len(steps), "repeats": sum(s.repeat for s in steps),
        "infeasible": sum((not s.repeat) and not s.outcome.trained for s in steps), "resumed": live.reused,
        "search_seconds": round(seconds, 2), "trace": trace, **_per_candidate_time(trace),
        "constraints": {k: round(v, 4) for k, v in live.limits.items()}, "latency_batch": cfg.latency_batch,
        "parent_cost": getattr(live, "parent_cost", None),
    }
    if strategy != "random":  # the leaderboard says whether this beat random search on the same terms
        shared = ("space", "max_params", "max_mflops", "max_latency_ms", "max_mflops_ratio", "max_latency_ratio",
                  "latency_batch", "distill", "init")
        metrics["control"] = {"method": "nas.random", "config": {k: getattr(cfg, k) for k in shared}}
    summary = getattr(ctx.cost_table, "summary", None)
    if summary is not None:
        metrics["cost_table"] = summary()
    if not done:
        raise Unsupported(f"no candidate met the constraints ({metrics['constraints']}) in {len(steps)} proposals "
                          f"from search space {space.name!r}", metrics)
    front = pareto_front([(o.accuracy, o.latency_ms) for _, o in done])
    metrics["pareto"] = [{"arch": space.key(a), vkey: value(o.accuracy), "latency_ms": o.latency_ms}
                         for (a, o), on in zip(done, front) if on]
    # ties (few validation examples) go to the fewer FLOPs, then parameters, then the earlier
    # candidate: never to a latency measurement, whose noise would make the result irreproducible
    arch, outcome = max(done, key=lambda d: (d[1].accuracy, -d[1].extra["mflops"], -d[1].extra["params"]))
    model, info = live.fresh(arch)
    live.train(model, ctx.finetune.steps, ctx.seed, "finetune", "final architecture")
    metrics.update({f"best_proxy_{vkey}": value(outcome.accuracy), f"final_{vkey}": ctx.val_metric(model)})
    metrics.update(best_arch=space.values(arch), best_latency_ms=outcome.latency_ms,
                   best_mflops=outcome.extra.get("mflops"), best_params=outcome.extra.get("params"),
                   init=info.get("inherited", "scratch") if cfg.init == "baseline" else "scratch",
                   distill=cfg.distill)
    return Compressed(model.eval(), meta={"search": strategy}, metrics=metrics, build_overrides=space.overrides(arch))


def _per_candidate_time(trace: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per trained candidate, first half vs second half: a search that slows down as
    trials grow shows it here."""
    secs = [t["seconds"] for t in trace if t["feasible"]]
    if not secs:
        return {}
    half = max(1, len(secs) // 2)
    first, second = secs[:half], secs[half:] or secs[:half]
    return {"seconds_per_candidate": round(sum(secs) / len(secs), 3),
            "seconds_per_candidate_first_half": round(sum(first) / len(first), 3),
            "seconds_per_candidate_second_half": round(sum(second) / len(second), 3)}
