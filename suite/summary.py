"""Result rows as a table: the end-of-run summary and `slimbench results` share this code.

Rows are the leaderboard's (`leaderboard.rows.aggregate`): one per method configuration and
section (task, profile, device), seeds aggregated, Δ and speedup against the section's baseline,
so the terminal and the published board never disagree. The terminal shows each configuration
at batch size 1 (CPU first: the device every machine has); runs that did not finish get a row
of their own with their status and error.
"""
from __future__ import annotations

from typing import Any, Iterable


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def _pick(rows: list) -> Any:
    """The row shown for a configuration: batch 1 on the CPU, else batch 1, else the first."""
    return min(rows, key=lambda r: (r.batch_size != 1, r.device != "cpu", r.device, r.batch_size or 0))


def rows_from_records(records: Iterable[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Run records -> one summary row per configuration (finished) or per run (not finished)."""
    from slimbench.core.record import RunRecord
    from slimbench.leaderboard.export import kernels_text
    from slimbench.leaderboard.rows import aggregate

    board = aggregate([RunRecord.from_dict(r).to_dict() for r in records if r])
    out = []
    for sec in board.sections:
        task, profile, device_label, definition = sec.key
        configs: dict[tuple, list] = {}
        for row in (*sec.real, *sec.simulated):
            configs.setdefault((row.kind, row.label, tuple(row.run_ids)), []).append(row)
        for rows in configs.values():
            r = _pick(rows)
            out.append({
                "task": task, "profile": profile, "device": device_label, "task_definition": definition,
                "method": r.label, "family": r.family,
                "seeds": r.seeds, "status": "FINISHED", "simulated": r.kind == "simulated",
                "metric": r.metric, "quality": r.quality, "quality_ci": r.quality_ci, "delta_quality": r.quality_delta,
                "accuracy": r.accuracy, "accuracy_ci": r.accuracy_ci, "balanced_accuracy": r.balanced_accuracy,
                "delta_accuracy": r.accuracy_delta, "size_bytes": r.size_bytes, "compression": r.compression,
                "flops_dense": r.flops_dense, "flops_effective": r.flops_effective, "bops": r.bops,
                "latency_device": r.device if r.latency_median_ms is not None else None,
                "latency_bs1_ms": r.latency_median_ms if r.batch_size == 1 else None,
                "speedup_bs1": r.speedup if r.batch_size == 1 else None,
                "kernels": kernels_text(r) or None,
                "run_ids": r.run_ids, "error": None})
        for f in sec.failed:
            out.append({"task": task, "profile": profile, "device": device_label, "task_definition": definition,
                        "method": f.label,
                        "family": f.family, "seeds": [f.seed], "status": f.status, "simulated": f.simulated,
                        "metric": sec.metric, "quality": None,
                        "quality_ci": None, "delta_quality": None,
                        "accuracy": None, "accuracy_ci": None, "balanced_accuracy": None, "delta_accuracy": None,
                        "size_bytes": None, "compression": None, "flops_dense": None, "flops_effective": None,
                        "bops": None, "latency_device": None, "latency_bs1_ms": None, "speedup_bs1": None,
                        "kernels": None,
                        "run_ids": [f.run_id], "error": f.error})
    return out


def render(rows: list[dict[str, Any]], title: str = "slimbench results") -> None:
    """Print rows as a rich table on stdout: quality is each task's metric (`91.2%` accuracy, `ppl 4.312`
    perplexity, lower better), Δ against the baseline in the metric's terms (pp, or relative %)."""
    from slimbench.core.metrics import get_metric
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title)
    for col in ("task", "method", "seeds", "status", "quality", "Δ", "size", "×smaller",
                "latency bs1", "speedup"):
        t.add_column(col, justify="left" if col in ("task", "method", "status") else "right",
                     no_wrap=col != "method")
    for r in rows:
        pct = (lambda v: "—" if v is None else f"{100 * v:.1f}")
        status = r["status"] + (" (simulated)" if r["simulated"] else "")
        lat = "—" if r["latency_bs1_ms"] is None else f"{r['latency_bs1_ms']:.2f} ms {r['latency_device']}"
        if (r.get("kernels") or "").startswith("reference"):
            lat += " (ref)"  # a reference path ran: the number measures a missing kernel
        metric = get_metric(r.get("metric"))
        quality = "—" if r.get("quality") is None else (
            f"{pct(r['quality'])}%" if metric.percent else f"{metric.short} {r['quality']:.3f}")
        if r.get("quality_ci"):
            quality += f" ±{100 * r['quality_ci']:.1f}" if metric.percent else f" ±{r['quality_ci']:.3f}"
        delta = "—" if r.get("delta_quality") is None else metric.fmt_delta(r["delta_quality"], 1)
        t.add_row(escape(r["task"]), escape(r["method"]), str(len(r["seeds"])), status, quality, delta,
                  fmt_bytes(r["size_bytes"]),
                  "—" if r["compression"] is None else f"{r['compression']:.2f}", lat,
                  "—" if r["speedup_bs1"] is None else f"{r['speedup_bs1']:.2f}")
    if any((r.get("kernels") or "").startswith("reference") for r in rows):
        t.caption = ("(ref): some layers ran a slimbench reference path (e.g. dequantize + dense), so that latency "
                     "measures a missing kernel, not the method; the leaderboard's Kernels column and run pages say which")
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 140))
    console.print(t)
