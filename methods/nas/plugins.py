"""The registered search methods: one per strategy, all sharing the space, constraints, proxy
training and final training (`procedure`). Torch-free at import."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from slimbench.methods.base import Method, register_method
from slimbench.methods.nas.configs import BOConfig, EvolutionConfig, RandomConfig, RLConfig

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from slimbench.core.task import TaskSpec
    from slimbench.methods.base import CompressionContext


class SearchMethod(Method):
    """Architecture search on the task's search budget (candidates x proxy steps), then the best
    architecture trained with the task's fine-tuning budget and measured like any row."""

    family = "nas"
    followable = True  # a dense architecture
    starts_from = "teacher"  # children are built from the trained model (ctx.teacher), not from the input
    strategy: ClassVar[str] = "random"

    def options(self) -> dict[str, Any]:
        """The strategy's settings (capped for the budget by `strategies.budgeted`, recorded)."""
        return {}

    def supports(self, task: "TaskSpec", device: Any) -> str | None:
        b = task.search
        if b.candidates < 1 or b.proxy_steps < 1:
            return (f"the task grants no search budget in profile {task.profile!r} (search: {b.candidates} "
                    f"candidates x {b.proxy_steps} proxy steps; at least one candidate of one step is needed)")
        return self.model_reason(task)

    def model_unsupported(self, model: "nn.Module") -> str | None:
        from slimbench.methods.common.children import model_kind
        if self.config.space == "auto" and model_kind(model) is None:
            return ("space=auto knows timm ResNets and transformers encoders only; give this model's search space "
                    "as a YAML file (space=path.yaml)")
        return None

    def compress(self, model: "nn.Module", ctx: "CompressionContext"):
        from slimbench.methods.nas.procedure import run_search
        from slimbench.methods.nas.strategies import budgeted
        options = budgeted(self.strategy, ctx.search.candidates, **self.options())
        return run_search(ctx, self.config, self.strategy, options, self.name)


@register_method("nas.random")
class RandomNAS(SearchMethod):
    description = "architecture search, the control: uniform random samples of the space"
    config_cls = RandomConfig
    strategy = "random"


@register_method("nas.evolution")
class EvolutionNAS(SearchMethod):
    description = "architecture search by regularised (aging) evolution: tournament selection, one-dim mutations"
    config_cls = EvolutionConfig
    strategy = "evolution"

    def options(self) -> dict[str, Any]:
        return {"population": self.config.population, "sample": self.config.sample}


@register_method("nas.rl")
class ReinforceNAS(SearchMethod):
    description = "architecture search by REINFORCE: a factorised categorical controller, moving-average baseline"
    config_cls = RLConfig
    strategy = "rl"

    def options(self) -> dict[str, Any]:
        return {"lr": self.config.lr, "decay": self.config.decay}


@register_method("nas.bo")
class OptunaNAS(SearchMethod):
    description = "architecture search by Bayesian optimisation: Optuna's TPE, or NSGA-II on accuracy and latency"
    config_cls = BOConfig

    @property
    def strategy(self) -> str:  # type: ignore[override]
        return self.config.sampler

    def options(self) -> dict[str, Any]:
        return {"startup": self.config.startup}
