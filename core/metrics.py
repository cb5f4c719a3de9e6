"""A task's quality metric and its direction: the one place that says which way is better.

Accuracy is higher-is-better and its deltas against the baseline are absolute (percentage points);
perplexity is lower-is-better, has no classes, and its deltas are relative (a perplexity 10% above
the baseline's reads the same on a model at 8 as at 30). Everything that compares, sorts or
selects on quality (summary, `slimbench results`, Pareto fronts, NAS and rank selection, the
leaderboard) goes through `Metric.score`, which is higher-is-better for every metric, so nothing
else needs to know the direction. Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from slimbench.core.config import ConfigError


@dataclass(frozen=True)
class Metric:
    """How a task's quality number is read.

    Attributes:
        name: the key of the value in a run's `metrics` (`accuracy`, `perplexity`).
        higher_is_better: the direction of the raw value.
        relative_delta: deltas against the baseline as a fraction of it (perplexity) rather than a
            difference (accuracy).
        percent: the value is a fraction shown as a percentage.
        label: how tables and axes name it; `short`: in narrow columns.
    """

    name: str
    higher_is_better: bool
    relative_delta: bool
    percent: bool
    label: str
    short: str = ""

    def score(self, value: float | None) -> float:
        """Higher is better for every metric (accuracy as is, perplexity negated); missing -> -inf."""
        if value is None or not isinstance(value, (int, float)) or math.isnan(value):
            return -math.inf
        return float(value) if self.higher_is_better else -float(value)

    def unscore(self, score: float) -> float:
        """The metric's value back from a `score`."""
        return score if self.higher_is_better else -score

    def delta(self, value: float | None, baseline: float | None) -> float | None:
        """`value - baseline` (accuracy), or `value / baseline - 1` (perplexity); None if either is missing."""
        if value is None or baseline is None:
            return None
        if self.relative_delta:
            return value / baseline - 1 if baseline else None
        return value - baseline

    def fmt(self, value: float | None, digits: int = 2) -> str:
        """`91.23%` for accuracy, `12.34` for perplexity, `-` when missing."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{100 * value:.{digits}f}%" if self.percent else f"{value:.{digits}f}"

    def fmt_delta(self, delta: float | None, digits: int = 2) -> str:
        """`+0.41 pp` (absolute, accuracy) or `+3.1%` (relative, perplexity)."""
        if delta is None or (isinstance(delta, float) and math.isnan(delta)):
            return "-"
        if self.relative_delta:
            return f"{100 * delta:+.1f}%"
        return f"{100 * delta:+.{digits}f} pp" if self.percent else f"{delta:+.{digits}f}"

    @property
    def arrow(self) -> str:
        """`↑` or `↓`: which way is better, for column headers."""
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", higher_is_better=True, relative_delta=False, percent=True, label="accuracy",
                       short="acc"),
    "perplexity": Metric("perplexity", higher_is_better=False, relative_delta=True, percent=False,
                         label="perplexity", short="ppl"),
}


def get_metric(name: str | None) -> Metric:
    """The metric called `name` (None or empty: accuracy, what records before metrics had mean)."""
    key = name or "accuracy"
    try:
        return METRICS[key]
    except KeyError:
        raise ConfigError(f"unknown metric {key!r}; choose one of {', '.join(METRICS)}") from None
