"""The results table as readers see it: one line per configuration, batch sizes as columns.

A configuration's figures that do not depend on the batch (quality, size, FLOPs) are shown once;
latency, speedups and memory get one sub-column per (device, batch size) the section timed, so a
table fits a laptop-wide window instead of repeating each method once per batch size. The HTML
(`site`) and the Markdown (`export`) lay out the same columns from here, so they never disagree;
the CSV/JSON exports keep the long form (one `Row` per device and batch), which scripts want.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from slimbench.core.metrics import Metric
from slimbench.leaderboard import fmt
from slimbench.leaderboard.board import Row, reference_share

Key = tuple[str, "int | None"]  # (latency device, batch size)
MARKS = {"verified": "✓", "mismatch": "✗"}
PLAIN, PER_BATCH, PER_DEVICE = "", "batch", "device"


@dataclass(frozen=True)
class Column:
    """A table column: its sortable value, its displayed text, and (`per`) whether it splits into
    one sub-column per (device, batch) or per device. `optional` columns are left out of a table
    where no line has a value (vs half on a CPU, Verified before anyone verified)."""

    title: str
    key: str
    numeric: bool
    value: Callable[[Row], Any]
    text: Callable[[Row], str]
    per: str = PLAIN
    optional: bool = False
    tip: Callable[[Row], str] | None = None
    html: bool = True  # False: Markdown only (the HTML shows it inside the Method cell)


@dataclass
class Line:
    """One configuration: `head` carries what does not depend on the batch, `at` its rows."""

    head: Row
    at: dict[Key, Row]

    def cell(self, col: Column, sub: Key | None) -> Row | None:
        """The row a cell reads: the head, the row at (device, batch), or any row of the device."""
        if col.per == PER_BATCH and sub is not None:
            return self.at.get(sub)
        if col.per == PER_DEVICE and sub is not None:
            return next((r for k, r in self.at.items() if k[0] == sub[0]), None)
        return self.head


@dataclass
class Laid:
    """A column as one table lays it out: its sub-columns (empty for a plain column)."""

    col: Column
    subs: list[Key]


def kernels_text(r: Row) -> str:
    share = reference_share(r)
    if share is None:
        return ""
    return f"reference {share[0]}/{share[1]}" if share[0] else "real"


def quality_text(metric: Metric, v: float | None) -> str:
    """The metric's value as a cell (the header carries the % of a percent metric)."""
    return fmt.MISSING if v is None else metric.fmt(v).removesuffix("%")


def quality_ci_text(metric: Metric, mean: float | None, ci: float | None) -> str:
    """`90.00 ± 1.24` (accuracy, %) or `12.34 ± 0.56` (perplexity); the CI when >= 2 seeds."""
    if mean is None:
        return fmt.MISSING
    return quality_text(metric, mean) + (f" ± {quality_text(metric, ci)}" if ci is not None else "")


def quality_title(metric: Metric) -> str:
    """`Accuracy % ↑`, `Perplexity ↓`: the metric, its unit and which way is better."""
    return f"{metric.label[:1].upper()}{metric.label[1:]}{' %' if metric.percent else ''} {metric.arrow}"


def delta_title(metric: Metric) -> str:
    return "Δ acc" if metric.name == "accuracy" else f"Δ {metric.label}"


def columns(metric: Metric) -> tuple[Column, ...]:
    """The columns of a section whose task is scored by `metric`."""
    return (
        Column("Method", "label", False, lambda r: r.label, lambda r: r.label),
        Column("Family", "family", False, lambda r: r.family, lambda r: r.family, html=False),
        Column("Seeds", "n_seeds", True, lambda r: r.n_seeds, lambda r: str(r.n_seeds)),
        Column(quality_title(metric), "quality", True, lambda r: r.quality,
               lambda r: quality_ci_text(metric, r.quality, r.quality_ci)),
        Column(delta_title(metric), "quality_delta", True, lambda r: r.quality_delta,
               lambda r: metric.fmt_delta(r.quality_delta) if r.quality_delta is not None else fmt.MISSING),
        Column("Size", "size_bytes", True, lambda r: r.size_bytes, lambda r: fmt.size(r.size_bytes)),
        Column("Ratio", "compression", True, lambda r: r.compression, lambda r: fmt.times(r.compression)),
        Column("Sparsity", "sparsity", True, lambda r: r.sparsity, lambda r: fmt.pct(r.sparsity), optional=True),
        # the unit is in the header: "1.6 G" under FLOPs, not "1.6 GFLOPs" on every line
        Column("FLOPs dense", "flops_dense", True, lambda r: r.flops_dense, lambda r: fmt.si(r.flops_dense, "").strip(),
               tip=lambda r: fmt.flops(r.flops_dense)),
        Column("FLOPs eff.", "flops_effective", True, lambda r: r.flops_effective,
               lambda r: fmt.si(r.flops_effective, "").strip(), tip=lambda r: fmt.flops(r.flops_effective)),
        Column("BOPs", "bops", True, lambda r: r.bops, lambda r: fmt.si(r.bops, "").strip(), optional=True,
               tip=lambda r: fmt.bops(r.bops)),
        Column("Latency (median)", "latency_median_ms", True, lambda r: r.latency_median_ms,
               lambda r: fmt.ms(r.latency_median_ms), PER_BATCH, optional=True,
               tip=lambda r: f"median {fmt.ms(r.latency_median_ms)}, p90 {fmt.ms(r.latency_p90_ms)}"),
        Column("Speedup", "speedup", True, lambda r: r.speedup, lambda r: fmt.times(r.speedup), PER_BATCH,
               optional=True),
        Column("vs half", "speedup_half", True, lambda r: r.speedup_half, lambda r: fmt.times(r.speedup_half),
               PER_BATCH, optional=True),
        Column("Peak memory", "peak_bytes", True, lambda r: r.peak_bytes, lambda r: fmt.size(r.peak_bytes),
               PER_BATCH, optional=True),
        Column("Kernels", "kernels", False, kernels_text, kernels_text, PER_DEVICE, optional=True),
        Column("Verified", "verification", False, lambda r: r.verification,
               lambda r: MARKS.get(r.verification, ""), optional=True, html=False),  # HTML: a badge by the name
        Column("Note", "note", False, lambda r: r.note, lambda r: r.note, optional=True),
    )


def lines(rows: list[Row]) -> list[Line]:
    """A configuration's rows (same runs) folded into one line, in the rows' order (best first)."""
    out: dict[tuple[str, ...], Line] = {}
    for r in rows:
        line = out.setdefault(tuple(r.pages), Line(head=r, at={}))
        if r.batch_size is not None:
            line.at.setdefault((r.device, r.batch_size), r)
        elif r.paths:  # no latency point, but execution paths on its device
            line.at.setdefault((r.device, None), r)
    return list(out.values())


def _has(col: Column, line: Line, sub: Key | None) -> bool:
    r = line.cell(col, sub)
    if r is None:
        return False
    v = col.value(r)
    return v not in (None, "", "unverified")


def layout(lines_: list[Line], metric: Metric, primary: str = "cpu", html: bool = False) -> list[Laid]:
    """The columns of one table: optional ones only where a line has a value, and a split column's
    sub-columns only where it has one: vs half shows CUDA's batches only. `primary` (the section's
    device) comes first among devices; `html` leaves out what the page shows inside another cell."""
    keys = sorted({k for ln in lines_ for k in ln.at},
                  key=lambda k: (k[0] != primary, k[0], k[1] if isinstance(k[1], int) else -1))
    out = []
    for col in columns(metric):
        if html and not col.html:
            continue
        if col.per == PER_BATCH:
            subs = [k for k in keys if k[1] is not None and any(_has(col, ln, k) for ln in lines_)]
        elif col.per == PER_DEVICE:
            subs = [(d, None) for d in dict.fromkeys(k[0] for k in keys)
                    if any(_has(col, ln, (d, None)) for ln in lines_)]
        else:
            subs = []
        if col.per and not subs:
            continue
        if col.optional and not col.per and not any(_has(col, ln, None) for ln in lines_):
            continue
        out.append(Laid(col, subs))
    return out


def sub_title(laid: list[Laid], sub: Key, per: str) -> str:
    """`bs1`, or `cpu bs1` where the table times several devices; a device alone for per-device columns."""
    if per == PER_DEVICE:
        return sub[0]
    devices = {k[0] for la in laid for k in la.subs if la.col.per == PER_BATCH}
    return f"{sub[0]} bs{sub[1]}" if len(devices) > 1 else f"bs{sub[1]}"
