"""Search strategies over a resolved space, in ask/tell form, so the same code drives a live
search (each candidate trained for the proxy budget) and a table lookup (`slimbench nas-table`).

- `random`: uniform samples (the control every strategy is compared with);
- `evolution`: regularised (aging) evolution: a population of the last P feasible candidates,
  each new child a one-dim mutation of the best of S sampled members; the oldest member dies;
- `rl`: REINFORCE on a factorised categorical policy (one softmax per dim) with a moving-average
  reward baseline;
- `tpe`, `nsga2`: Optuna's TPE and NSGA-II samplers (ask/tell; constraints through Optuna's
  trial constraints). NSGA-II is multi-objective: validation accuracy up, latency down.

A candidate that breaks a constraint is told with `score=None`: strategies treat it as the worst.
Numpy and Optuna only; every random draw comes from the strategy's own seeded generator.

Strategies are registered by name like methods (`@register_strategy("name")` on a `Strategy`
subclass taking `(cards, seed, **options)`), so a new one is a class, not an edit to a dispatcher;
`make_strategy` looks them up, an unknown name failing with the valid choices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from slimbench.core.registry import Registry
from slimbench.methods.nas.configs import STRATEGIES  # noqa: F401  (the built-in names, torch- and numpy-free)
from slimbench.methods.nas.space import Arch


class Strategy:
    """Proposes architectures (`ask`) and learns from their scores (`tell`)."""

    def __init__(self, cards: tuple[int, ...], seed: int):
        self.cards = cards
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Arch:
        return tuple(int(self.rng.integers(n)) for n in self.cards)

    def ask(self) -> Arch:
        raise NotImplementedError

    def tell(self, arch: Arch, score: float | None, latency_ms: float | None = None) -> None:
        pass

    @classmethod
    def capped(cls, candidates: int, options: dict[str, Any]) -> dict[str, Any]:
        """The strategy's `options` for a search of `candidates` (default: as given); see `budgeted`."""
        return options


def _adopt(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"search strategy {name!r} must be a subclass of Strategy, got {cls!r}")


STRATEGY_REGISTRY: Registry[type[Strategy]] = Registry("search strategy", on_register=_adopt)


def register_strategy(name: str):
    """Class decorator: register a `Strategy` subclass under `name` (what `make_strategy` and a
    search method's `strategy` name)."""
    return STRATEGY_REGISTRY.register(name)


@register_strategy("random")
class RandomSearch(Strategy):
    def ask(self) -> Arch:
        return self.sample()


@register_strategy("evolution")
class Evolution(Strategy):
    """Regularised evolution (Real et al. 2019): tournament of `sample` out of the last `population`."""

    def __init__(self, cards: tuple[int, ...], seed: int, population: int = 8, sample: int = 3):
        super().__init__(cards, seed)
        self.population, self.tournament = population, sample
        self.members: list[tuple[Arch, float]] = []
        self.told = 0

    @classmethod
    def capped(cls, candidates: int, options: dict[str, Any]) -> dict[str, Any]:
        population = min(options.get("population", 8), max(2, candidates // 2))
        return {**options, "population": population, "sample": min(options.get("sample", 3), population)}

    def ask(self) -> Arch:
        if self.told < self.population or not self.members:
            return self.sample()
        picks = self.rng.choice(len(self.members), size=min(self.tournament, len(self.members)), replace=False)
        parent = max((self.members[i] for i in picks), key=lambda m: m[1])[0]
        return self.mutate(parent)

    def mutate(self, arch: Arch) -> Arch:
        dims = [d for d, n in enumerate(self.cards) if n > 1]
        d = int(self.rng.choice(dims))
        new = int(self.rng.integers(self.cards[d] - 1))
        child = list(arch)
        child[d] = new if new < arch[d] else new + 1  # any other value of that dim
        return tuple(child)

    def tell(self, arch: Arch, score: float | None, latency_ms: float | None = None) -> None:
        if score is None:  # broke a constraint: never a member (it would age out a feasible one)
            return
        self.told += 1
        self.members.append((arch, score))
        if len(self.members) > self.population:
            self.members.pop(0)  # aging: the oldest dies, not the worst


@register_strategy("rl")
class Reinforce(Strategy):
    """REINFORCE with a moving-average baseline on independent per-dim softmax policies (a
    factorised controller: cheap, and with budgets of tens of candidates an LSTM has nothing to
    learn its correlations from). Rewards are validation accuracy in percent; a candidate that
    breaks a constraint earns the baseline minus `penalty` points (nothing is learnt from one
    before the first feasible candidate has set a baseline: a reward of 0 then would make the
    first feasible one look 90 points better than anything and collapse the policy onto it)."""

    def __init__(self, cards: tuple[int, ...], seed: int, lr: float = 0.02, decay: float = 0.8,
                 penalty: float = 5.0):
        super().__init__(cards, seed)
        self.logits = [np.zeros(n) for n in cards]
        self.lr, self.decay, self.penalty = lr, decay, penalty
        self.baseline: float | None = None

    def probs(self) -> list[np.ndarray]:
        return [np.exp(z - z.max()) / np.exp(z - z.max()).sum() for z in self.logits]

    def ask(self) -> Arch:
        return tuple(int(self.rng.choice(len(p), p=p)) for p in self.probs())

    def tell(self, arch: Arch, score: float | None, latency_ms: float | None = None) -> None:
        if self.baseline is None:
            if score is not None:
                self.baseline = 100 * score
            return
        reward = 100 * score if score is not None else self.baseline - self.penalty
        advantage = reward - self.baseline
        for z, p, a in zip(self.logits, self.probs(), arch):
            grad = -p
            grad[a] += 1.0  # d log softmax(z)[a] / dz
            z += self.lr * advantage * grad
        self.baseline = self.decay * self.baseline + (1 - self.decay) * reward


class OptunaSearch(Strategy):
    """Optuna's TPE (accuracy) or NSGA-II (accuracy and latency) through its ask/tell interface."""

    def __init__(self, cards: tuple[int, ...], seed: int, sampler: str = "tpe", startup: int = 4):
        super().__init__(cards, seed)
        import optuna
        from optuna.distributions import CategoricalDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if sampler == "tpe":
            s = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
            self.study = optuna.create_study(direction="maximize", sampler=s)
        else:
            s = optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, startup))
            self.study = optuna.create_study(directions=["maximize", "minimize"], sampler=s)
        self.multi = sampler != "tpe"
        self.dists = {f"d{i}": CategoricalDistribution(list(range(n))) for i, n in enumerate(cards)}
        self.pending: dict[Arch, list[Any]] = {}

    @classmethod
    def capped(cls, candidates: int, options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "startup": min(options.get("startup", 4), max(1, candidates // 2))}

    def ask(self) -> Arch:
        trial = self.study.ask(self.dists)
        arch = tuple(int(trial.params[f"d{i}"]) for i in range(len(self.cards)))
        self.pending.setdefault(arch, []).append(trial)
        return arch

    def tell(self, arch: Arch, score: float | None, latency_ms: float | None = None) -> None:
        trial = self.pending[arch].pop(0)
        trial.set_constraint("constraints", 0.0 if score is not None else 1.0)  # > 0: infeasible
        acc = 0.0 if score is None else score
        lat = latency_ms if latency_ms is not None else 0.0
        self.study.tell(trial, [acc, lat] if self.multi else acc)


@register_strategy("tpe")
class TPESearch(OptunaSearch):
    def __init__(self, cards: tuple[int, ...], seed: int, startup: int = 4):
        super().__init__(cards, seed, sampler="tpe", startup=startup)


@register_strategy("nsga2")
class NSGA2Search(OptunaSearch):
    def __init__(self, cards: tuple[int, ...], seed: int, startup: int = 4):
        super().__init__(cards, seed, sampler="nsga2", startup=startup)


def budgeted(name: str, candidates: int, **options: Any) -> dict[str, Any]:
    """A strategy's settings for a search of `candidates`: evolution's random first population and
    TPE's random start are capped at half the budget (at least 2 and 1), so even a small search
    breeds or models something (a population as large as the budget would be random search)."""
    return STRATEGY_REGISTRY.get(name).capped(candidates, dict(options))


def make_strategy(name: str, cards: tuple[int, ...], seed: int, candidates: int | None = None,
                  **options: Any) -> Strategy:
    """A registered strategy by name; `options` are its own settings (population, sample, lr, decay,
    startup), capped for a search of `candidates` when given (`budgeted`)."""
    cls = STRATEGY_REGISTRY.get(name)
    return cls(cards, seed, **(cls.capped(candidates, dict(options)) if candidates is not None else options))


@dataclass
class Outcome:
    """What evaluating one architecture gave: None accuracy when it broke a constraint (untrained)."""

    accuracy: float | None
    latency_ms: float | None = None
    trained: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    arch: Arch
    outcome: Outcome
    repeat: bool  # proposed again: scored from memory, no cost


def search(strategy: Strategy, evaluate: Callable[[Arch, int], Outcome], candidates: int,
           max_proposals: int | None = None) -> list[Step]:
    """Ask/evaluate/tell until `candidates` architectures were trained (a repeat costs nothing
    and is answered from memory; one that breaks a constraint is not trained), every architecture
    of the space has been seen, or the strategy has made `max_proposals` proposals (default 50 per
    candidate: a constraint almost nothing meets)."""
    limit = max_proposals if max_proposals is not None else 50 * candidates + 100
    size = math.prod(strategy.cards)
    seen: dict[Arch, Outcome] = {}
    steps: list[Step] = []
    trained = 0
    while trained < candidates and len(steps) < limit and len(seen) < size:
        arch = strategy.ask()
        repeat = arch in seen
        outcome = seen[arch] if repeat else evaluate(arch, trained)
        seen[arch] = outcome
        trained += (not repeat) and outcome.trained
        strategy.tell(arch, outcome.accuracy, outcome.latency_ms)
        steps.append(Step(arch, outcome, repeat))
    return steps
