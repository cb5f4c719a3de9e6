"""From run.json dicts to leaderboard rows: grouped over seeds, compared with the baseline.

Loading (MLflow) is kept apart from aggregation (pure), so the site can be built, tested
and benchmarked from plain dicts. A row is one method configuration on one task, profile
and run device, at one latency (device, batch size): the long form the exports and the
terminal summary read (`table` pivots a configuration's rows into one line for the pages).

Quality is the task's metric (`core.metrics`: accuracy, perplexity...): its mean and CI over
seeds, its delta against the baseline (`Metric.delta`) and every order or pick by `Metric.score`,
so nothing here knows which way a metric goes. Finished runs of simulated methods go to their own
rows (`kind="simulated"`), and runs that did not finish go to `FailedRun`s, so neither can be
mistaken for real results. Runs arrive as record dicts read by the suite's one reader
(`Tracker.read_records`: search candidates are never rows).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from slimbench.leaderboard.board import (BASELINE, HALF, MISMATCH, UNVERIFIED, VERIFIED, Board,  # noqa: F401
                                         FailedRun, Row, Section, SectionKey, device_label, get,
                                         metric_named, reference_share, run_metric, section_key)
from slimbench.leaderboard.stats import mean_ci, median


def _page_names(runs: list[dict[str, Any]]) -> list[str]:
    """A stable, filesystem-safe, unique page per run (MLflow id, else run key)."""
    used: set[str] = set()
    out = []
    for i, run in enumerate(runs):
        raw = str(get(run, "provenance", "mlflow_run_id", default="") or run.get("run_key") or f"run-{i}")
        base = re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:80] or f"run-{i}"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name)
        out.append(f"runs/{name}.html")
    return out


def _num(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den not in (None, 0) else None


@dataclass
class _Group:
    """The finished runs of one configuration in one section."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)

    def metric(self, name: str, table: str = "metrics") -> list[float | None]:
        return [_num(get(r, table, name)) for r in self.runs]

    def per_batch(self, table: str, stat: str) -> dict[tuple[str, int | None], float | None]:
        """Median over seeds of `stat` in the run.json `table` (latency | memory), per (device, batch);
        CUDA-graph replays are their own device, `cuda-graph`, beside eager `cuda`."""
        vals: dict[tuple[str, int | None], list[float | None]] = {}
        for r in self.runs:
            for entry in get(r, table, default=[]) or []:
                if isinstance(entry, dict):
                    bs = _num(entry.get("batch_size"))
                    where = str(entry.get("device", "?")) + ("-graph" if entry.get("graph") is True else "")
                    key = (where, int(bs) if bs is not None and bs.is_integer() else None)
                    vals.setdefault(key, []).append(_num(entry.get(stat)))
        return {k: median(v) for k, v in vals.items()}


def _config(run: dict[str, Any]) -> dict[str, Any]:
    cfg = get(run, "method", "config", default={})
    return cfg if isinstance(cfg, dict) else {"value": cfg}


def _group_key(run: dict[str, Any]) -> tuple[Any, ...]:
    cfg = json.dumps(_config(run), sort_keys=True, default=str)
    return (str(get(run, "method", "name", default="?")), str(get(run, "method", "label", default="")),
            cfg, bool(get(run, "method", "simulated", default=False)))


def _verification(runs: list[dict[str, Any]]) -> str:
    """`mismatch` if any run's re-measurement contradicted its record, `verified` if every run was
    re-measured and matched, else `unverified`. The verdicts are `provenance.verification`, which
    the suite attaches from a verification record the site's builder made (`suite.verdicts.attach`;
    a bundle's own is dropped on reading): the leaderboard only shows them."""
    verdicts = [get(r, "provenance", "verification", "verdict") for r in runs]
    if MISMATCH in verdicts:
        return MISMATCH
    return VERIFIED if verdicts and all(v == VERIFIED for v in verdicts) else UNVERIFIED


def _rows(group: _Group, base: _Group | None, kind: str) -> list[Row]:
    first = group.runs[0]
    metric = run_metric(first)
    scorer = metric_named(metric)
    acc, ci = mean_ci(group.metric("accuracy"))
    quality, quality_ci = mean_ci(group.metric(metric))  # the CI is the metric's own, in its units
    size = median(group.metric("size_bytes"))
    lat_med, lat_p90 = group.per_batch("latency", "median_ms"), group.per_batch("latency", "p90_ms")
    mem = group.per_batch("memory", "peak_bytes")
    b_acc = mean_ci(base.metric("accuracy"))[0] if base else None
    b_quality = mean_ci(base.metric(metric))[0] if base else None
    b_size = median(base.metric("size_bytes")) if base else None
    b_lat = base.per_batch("latency", "median_ms") if base else {}
    keys = sorted(set(lat_med) | set(mem), key=lambda k: (k[0], k[1] if isinstance(k[1], int) else -1))
    if not keys:
        keys = [(str(get(first, "device", "type", default="?")), None)]
    name = str(get(first, "method", "name", default="?"))
    return [Row(
        kind=kind, task=str(get(first, "task", "name", default="?")),
        profile=str(get(first, "task", "profile", default="")), section_device=device_label(first),
        metric=metric, method=name,
        family=str(get(first, "method", "family", default="")),
        label=str(get(first, "method", "label", default="") or name),
        description=str(get(first, "method", "description", default="")),
        config=_config(first), is_baseline=group is base,
        seeds=[r.get("seed") for r in group.runs], pages=list(group.pages),
        run_ids=[str(get(r, "provenance", "mlflow_run_id", default="")) for r in group.runs],
        accuracy=acc, accuracy_ci=ci,
        accuracy_delta=acc - b_acc if acc is not None and b_acc is not None else None,
        balanced_accuracy=mean_ci(group.metric("balanced_accuracy"))[0],
        quality=quality, quality_ci=quality_ci, quality_delta=scorer.delta(quality, b_quality),
        size_bytes=size, compression=_ratio(b_size, size),
        flops_dense=median(group.metric("flops_dense")),
        flops_effective=median(group.metric("flops_effective")),
        bops=median(group.metric("bops")),
        sparsity=median(group.metric("sparsity")),  # the suite's measurement; a method's own figure is not shown
        note="; ".join(dict.fromkeys(str(n) for r in group.runs if (n := get(r, "method_metrics", "note")))),
        control=ctl if isinstance(ctl := get(first, "method_metrics", "control"), dict) else None, device=dev, batch_size=bs, latency_median_ms=lat_med.get((dev, bs)),
        latency_p90_ms=lat_p90.get((dev, bs)),
        speedup=_ratio(b_lat.get((dev, bs)), lat_med.get((dev, bs))),
        peak_bytes=mem.get((dev, bs)), verification=_verification(group.runs),
        paths=_paths(first, dev)) for dev, bs in keys]


def _paths(run: dict[str, Any], device: str) -> dict[str, int] | None:
    """{path: number of weight layers} on `device` (cuda-graph rows: the cuda paths); None when the
    run predates path recording."""
    layers = get(run, "execution_paths", device.split("-")[0])
    if not isinstance(layers, dict) or not layers:
        return None
    counts: dict[str, int] = {}
    for path in layers.values():
        counts[str(path)] = counts.get(str(path), 0) + 1
    return counts


def _control_notes(rows: list[Row]) -> None:
    """A row that names its control (a KD student names the no-teacher student of the same shape)
    gets a note saying whether it beat it, by how much (`Metric.fmt_delta`), over how many seeds
    each; said plainly when it did not, and "within seed noise" when the gap is inside the two
    rows' 95% CIs added (relative to the control's value where the metric's deltas are)."""
    for row in rows:
        ctl = row.control
        if not ctl or row.quality is None:
            continue
        shared = ctl.get("config") or {}
        match = [c for c in rows if c.method == ctl.get("method") and c.device == row.device
                 and c.batch_size == row.batch_size and c.quality is not None
                 and all(c.config.get(k) == v for k, v in shared.items())]
        if not match:
            continue
        c = max(match, key=lambda c: c.n_seeds)
        m = row.scorer
        diff = m.delta(row.quality, c.quality)
        noise = (row.quality_ci or 0) + (c.quality_ci or 0)
        if m.relative_delta and c.quality:
            noise /= abs(c.quality)
        beat = row.score > c.score
        if row.quality_ci is None or c.quality_ci is None:
            verdict = ("beat" if beat else "did not beat") + " (no seed CI: one seed)"
        elif diff is not None and abs(diff) <= noise:
            verdict = "within seed noise of"
        else:
            verdict = "beat" if beat else "did not beat"
        text = (f"{verdict} the control {c.label} ({m.fmt_delta(diff)}; {row.n_seeds} vs {c.n_seeds} seed"
                f"{'s' if c.n_seeds != 1 else ''})")
        row.note = f"{row.note}; {text}" if row.note else text


def _half_speedups(rows: list[Row]) -> None:
    """On CUDA the bar a compressed model must clear is fp16, not fp32: each CUDA row gets its
    speedup over the `half` row (default config; else the one with most seeds) of the same device
    and batch size."""
    def rank(r: Row) -> tuple[bool, int]:
        return (r.config.get("dtype") not in (None, "auto", "fp16"), -r.n_seeds)

    halves: dict[tuple[str, int | None], Row] = {}
    for r in rows:
        if r.method == HALF and r.latency_median_ms is not None:
            key = (r.device, r.batch_size)
            if key not in halves or rank(r) < rank(halves[key]):
                halves[key] = r
    for r in rows:
        h = halves.get((r.device, r.batch_size))
        if r.device.startswith("cuda") and h is not None:
            r.speedup_half = _ratio(h.latency_median_ms, r.latency_median_ms)


def _traces(groups: Iterable[_Group]) -> dict[str, list[tuple[float, float]]]:
    """Search traces of the finished search runs (their candidates are never rows: they are these
    curves): best validation score so far against the search steps used, one per run."""
    out: dict[str, list[tuple[float, float]]] = {}
    for g in groups:
        for run in g.runs:
            trace = get(run, "method_metrics", "trace")
            if not isinstance(trace, list):
                continue
            pts = [(float(t["steps"]), float(t["best"])) for t in trace
                   if isinstance(t, dict) and _num(t.get("steps")) is not None and _num(t.get("best")) is not None]
            if pts:
                label = str(get(run, "method", "label", default="") or get(run, "method", "name", default="?"))
                out[f"{label} · seed {run.get('seed')}"] = pts
    return out


def _seed_key(seed: Any) -> tuple[int, float, str]:
    """Seeds in numeric order, whatever their JSON type (killed-run stand-ins may hold strings)."""
    num = _num(seed)
    return (0, num, "") if num is not None else (1, 0.0, str(seed))


def _sort_key(row: Row) -> tuple[Any, ...]:
    """Baseline first, then best first by the metric's score (missing last)."""
    return (not row.is_baseline, -row.score,
            row.label, row.device, row.batch_size if row.batch_size is not None else -1)


def aggregate(runs: Iterable[dict[str, Any]]) -> Board:
    """Group finished runs over seeds per section and configuration; set failed runs apart."""
    runs = [r for r in runs if isinstance(r, dict)]
    pages = _page_names(runs)
    groups: dict[SectionKey, dict[tuple[Any, ...], _Group]] = {}
    failed: dict[SectionKey, list[FailedRun]] = {}
    metrics: dict[SectionKey, str] = {}
    for run, page in zip(runs, pages):
        key = section_key(run)
        metrics.setdefault(key, run_metric(run))
        if str(run.get("status", "FAILED")).upper() == "FINISHED":
            g = groups.setdefault(key, {}).setdefault(_group_key(run), _Group())
            g.runs.append(run)
            g.pages.append(page)
            continue
        failed.setdefault(key, []).append(FailedRun(
            task=key[0], profile=key[1], section_device=key[2],
            method=str(get(run, "method", "name", default="?")),
            family=str(get(run, "method", "family", default="")),
            label=str(get(run, "method", "label", default="") or get(run, "method", "name", default="?")),
            seed=run.get("seed"), status=str(run.get("status", "FAILED")),
            error=str(run.get("error") or ""), simulated=bool(get(run, "method", "simulated", default=False)),
            page=page, run_id=str(get(run, "provenance", "mlflow_run_id", default=""))))
    for key in [k for k in failed if k not in groups]:
        # A stand-in for a killed run from a store written before runs carried their whole device as a tag
        # may lack the device name or the task definition: join its task's section.
        kind = key[2].split(" ", 1)[0]
        near = [k for k in groups if k[:2] == key[:2] and k[2].split(" ", 1)[0] == kind
                and (not key[3] or k[3] == key[3])]
        if len(near) == 1:
            for f in failed.pop(key):
                f.section_device = near[0][2]
                failed.setdefault(near[0], []).append(f)
    keys = sorted(set(groups) | set(failed))
    definitions: dict[tuple, set[str]] = {}
    for key in keys:
        definitions.setdefault(key[:3], set()).add(key[3])
    sections = []
    for key in keys:
        sec = Section(key, failed=sorted(failed.get(key, []), key=lambda f: (f.label, _seed_key(f.seed))),
                      metric=metrics.get(key, "accuracy"))
        if len(definitions[key[:3]]) > 1:
            sec.note = f"task definition {key[3][:8] or 'unknown'}"
        by_cfg = groups.get(key, {})
        bases = [g for (name, _, _, sim), g in by_cfg.items() if name == BASELINE and not sim]
        base = max(bases, key=lambda g: len(g.runs)) if bases else None
        for (_, _, _, sim), g in by_cfg.items():
            pairs = sorted(zip(g.runs, g.pages), key=lambda rp: _seed_key(rp[0].get("seed")))
            g.runs, g.pages = [r for r, _ in pairs], [p for _, p in pairs]
            (sec.simulated if sim else sec.real).extend(_rows(g, base, "simulated" if sim else "real"))
        _control_notes(sec.real)
        _half_speedups(sec.real)
        sec.traces = _traces(g for (_, _, _, sim), g in by_cfg.items() if not sim)
        sec.real.sort(key=_sort_key)
        sec.simulated.sort(key=_sort_key)
        sections.append(sec)
    return Board(sections=sections, pages=list(zip(pages, runs)))
