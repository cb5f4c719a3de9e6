"""Configs of the architecture-search methods: typed, torch-free, checked when built (the search
space file too), so a bad space or strategy setting fails before any baseline is trained.

The budget is the task's (`search: {candidates, proxy_steps}` per profile, the same for every
strategy); what a config chooses is the space, the constraints and the strategy's own knobs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from slimbench.core.config import MethodConfig, check, setting

STRATEGIES = ("random", "evolution", "rl", "tpe", "nsga2")  # the built-in strategies (registered in `strategies`)

SPACE_HELP = ("the search space: 'auto' (the built-in space of the task's model kind: resnet or transformer), "
              "a built-in space name (resnet, transformer, resnet-table, transformer-table, ...), a YAML file path, "
              "or the space itself as a mapping in a method config file (dims: {builder_arg[.index]: [choices]}; "
              "choices absolute or relative to the trained model, '0.5x')")


@dataclass(frozen=True)
class SearchConfig(MethodConfig):
    """What every strategy shares: the space, the hardware constraints, how candidates are trained."""

    space: str | dict[str, Any] = setting("auto", SPACE_HELP)
    max_params: int | None = setting(None, "constraint: at most this many parameters (candidates above it are "
                                           "not trained)", ge=1)
    max_mflops: float | None = setting(None, "constraint: at most this many MFLOPs per example (batch 1, "
                                             "torch.utils.flop_counter)", gt=0)
    max_latency_ms: float | None = setting(None, "constraint: at most this latency in ms at `latency_batch` on the "
                                                 "run's device, from the suite's latency table (measured once per "
                                                 "architecture and device, cached)", gt=0)
    max_mflops_ratio: float | None = setting(0.8, "constraint: at most this fraction of the trained model's own "
                                                   "MFLOPs (the default asks the search for a smaller model, as a "
                                                   "compression method should; None: off)", gt=0)
    max_latency_ratio: float | None = setting(None, "constraint: at most this fraction of the trained model's own "
                                                    "latency, measured the same way (cost table)", gt=0)
    latency_batch: int = setting(1, "batch size of the latency the constraint and the Pareto front use", ge=1)
    distill: bool = setting(False, "proxy and final training learn from the baseline's logits as well as the "
                                   "labels (Hinton KD, T=4, alpha=0.9) rather than the labels alone")
    init: Literal["baseline", "scratch"] = setting(
        "baseline", "baseline: each child starts from the trained model's weights (evenly spaced layers, "
                    "channels / FFN neurons of largest L1 norm, leading slices); scratch: the builder's fresh init")

    def validate(self) -> None:
        if self.space != "auto":
            from slimbench.methods.nas.space import load_space
            load_space(self.space)


@dataclass(frozen=True)
class RandomConfig(SearchConfig):
    """Uniform samples: the control."""


@dataclass(frozen=True)
class EvolutionConfig(SearchConfig):
    population: int = setting(8, "P: the last P feasible candidates form the population (the first P are random); "
                                 "capped at half the budget's candidates (at least 2), so children are bred", ge=2)
    sample: int = setting(3, "S: tournament size; the best of S random members is mutated in one dim", ge=1)

    def validate(self) -> None:
        super().validate()
        check(self.sample <= self.population, f"sample={self.sample} must be <= population={self.population}")


@dataclass(frozen=True)
class RLConfig(SearchConfig):
    lr: float = setting(0.02, "policy learning rate per percentage point of advantage (a 5-point better candidate "
                              "moves each of its choices' logits by 0.1 x (1 - its probability))", gt=0)
    decay: float = setting(0.8, "moving-average decay of the reward baseline", ge=0, lt=1)


@dataclass(frozen=True)
class BOConfig(SearchConfig):
    sampler: Literal["tpe", "nsga2"] = setting(
        "tpe", "tpe: Optuna's TPE on validation accuracy; nsga2: Optuna's NSGA-II on accuracy and latency "
               "(multi-objective; the Pareto front is recorded)")
    startup: int = setting(4, "random trials before TPE models the space (NSGA-II: its population size); capped "
                              "at half the budget's candidates", ge=1)
