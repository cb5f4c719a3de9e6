"""What the leaderboard is rendered from: rows, failed runs, sections and the board.

Kept apart from the aggregation (`rows`) so the renderers (site, exports, the configuration
table) and the terminal summary share one vocabulary without pulling in how it is computed.
A `Row` is one configuration at one latency (device, batch size): the long form the CSV/JSON
exports and `suite.summary` read; the HTML and Markdown tables pivot a configuration's rows into
one line (`table`). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slimbench.core.config import ConfigError
from slimbench.core.metrics import Metric, get_metric
from slimbench.core.record import REFERENCE_PATH, device_label as _device_label

BASELINE = "baseline"
HALF = "half"
VERIFIED, MISMATCH, UNVERIFIED = "verified", "mismatch", "unverified"
SectionKey = tuple[str, str, str, str]  # (task, profile, run device, task definition)


def get(d: Any, *path: str, default: Any = None) -> Any:
    """Nested lookup that tolerates missing or mistyped levels (run.json from any version)."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return default if d is None else d


def device_label(run: dict[str, Any]) -> str:
    """`cpu (AMD EPYC ... · AVX2)`: latency is only comparable on the same hardware and instruction set,
    so rows of different capabilities never share a section."""
    return _device_label(get(run, "device", default={}))


def section_key(run: dict[str, Any]) -> SectionKey:
    """Runs are compared only with runs of the same task definition (its baseline key: model,
    data, recipe), profile and device: a changed split or recipe starts a section of its own."""
    return (str(get(run, "task", "name", default="?")),
            str(get(run, "task", "profile", default="")), device_label(run),
            str(get(run, "baseline", "key", default="")))


def metric_named(name: str | None) -> Metric:
    """The metric called `name`; one this version does not know (a record from a newer slimbench)
    is shown as a plain higher-is-better number rather than breaking the whole board."""
    try:
        return get_metric(name)
    except ConfigError:
        return Metric(str(name), higher_is_better=True, relative_delta=False, percent=False, label=str(name))


def run_metric(run: dict[str, Any]) -> str:
    """The name of a run's task metric (records before metrics had one: accuracy)."""
    return str(get(run, "task", "metric", default="") or "accuracy")


@dataclass
class Row:
    """One aggregated leaderboard row (flat on purpose: it is also the CSV/JSON export).

    `quality*` are the task metric's (`metric`: accuracy, perplexity...), read through
    `core.metrics`; `accuracy*` stay for readers of accuracy (None on a task without it)."""

    kind: str  # real | simulated
    task: str
    profile: str
    section_device: str
    metric: str
    method: str
    family: str
    label: str
    description: str
    config: dict[str, Any]
    is_baseline: bool
    seeds: list[Any]
    pages: list[str]
    run_ids: list[str]
    accuracy: float | None
    accuracy_ci: float | None
    accuracy_delta: float | None
    balanced_accuracy: float | None
    size_bytes: float | None
    compression: float | None
    flops_dense: float | None
    flops_effective: float | None
    bops: float | None
    sparsity: float | None  # share of zeros in the weights the reloaded model computes with, measured by the suite
    note: str  # a caveat the method recorded (e.g. "sparse storage is larger than dense here")
    control: dict[str, Any] | None  # the run's control row: {"method": name, "config": fields it shares}
    device: str
    batch_size: int | None
    latency_median_ms: float | None
    latency_p90_ms: float | None
    speedup: float | None
    peak_bytes: float | None
    speedup_half: float | None = None  # CUDA: the `half` row's median latency / this one's (same device, batch)
    paths: dict[str, int] | None = None  # the weight layers' execution paths on this device: {path: layers}
    verification: str = UNVERIFIED  # verified | mismatch | unverified: see `rows._verification`
    quality: float | None = None  # the task metric's mean over seeds
    quality_ci: float | None = None  # its 95% CI half-width (>= 2 seeds)
    quality_delta: float | None = None  # `Metric.delta` vs the baseline: absolute (accuracy), relative (perplexity)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def scorer(self) -> Metric:
        """How this row's quality is read (direction, format, deltas)."""
        return metric_named(self.metric)

    @property
    def score(self) -> float:
        """Higher is better, whatever the metric: what sorting and "best" picks compare."""
        return self.scorer.score(self.quality)


@dataclass
class FailedRun:
    """A run that did not finish (failed, unsupported, killed): listed, never aggregated."""

    task: str
    profile: str
    section_device: str
    method: str
    family: str
    label: str
    seed: Any
    status: str
    error: str
    simulated: bool
    page: str
    run_id: str


@dataclass
class Section:
    """One task on one device and profile: the unit of the index and the Markdown report."""

    key: SectionKey
    note: str = ""  # set when the task has sections for several definitions (which one this is)
    real: list[Row] = field(default_factory=list)
    simulated: list[Row] = field(default_factory=list)
    failed: list[FailedRun] = field(default_factory=list)
    # search runs' traces, "label · seed N" -> [(search steps used, best validation score so far)]
    traces: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    metric: str = "accuracy"  # the task's metric: one per task, so one per section

    @property
    def scorer(self) -> Metric:
        return metric_named(self.metric)


@dataclass
class Board:
    """Everything the site and the exports are rendered from."""

    sections: list[Section]
    pages: list[tuple[str, dict[str, Any]]]  # (relative page path, run.json), one per run

    def rows(self) -> list[Row]:
        return [r for s in self.sections for r in (*s.real, *s.simulated)]

    def failed(self) -> list[FailedRun]:
        return [f for s in self.sections for f in s.failed]


def reference_share(row: Row) -> tuple[int, int] | None:
    """(layers on a reference path, weight layers) of a row, or None when not recorded."""
    if not row.paths:
        return None
    return sum(n for p, n in row.paths.items() if p.startswith(REFERENCE_PATH)), sum(row.paths.values())
