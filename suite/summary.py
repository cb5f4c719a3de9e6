"""Result rows as a table: the end-of-run summary and `slimbench results` share this code."""
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


def rows_from_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten run.json records into table rows with deltas vs the task's baseline.

    The baseline is the `baseline` method's run on the same task, profile and device type.
    """
    from slimbench.suite.tracking import latest_per_key

    records = latest_per_key([r for r in records if r])
    base: dict[tuple, dict] = {}
    for r in records:
        if r["method"]["name"] == "baseline" and r["status"] == "FINISHED":
            base.setdefault(_group(r), r)
    rows = []
    for r in records:
        b = base.get(_group(r))
        m, bm = r.get("metrics", {}), (b or {}).get("metrics", {})
        lat = _latency(r, bs=1)
        blat = _latency(b, bs=1) if b else None
        row = {
            "task": r["task"]["name"], "method": r["method"]["label"], "family": r["method"]["family"],
            "seed": r["seed"], "status": r["status"], "simulated": r["method"].get("simulated", False),
            "accuracy": m.get("accuracy"), "balanced_accuracy": m.get("balanced_accuracy"),
            "delta_accuracy": _sub(m.get("accuracy"), bm.get("accuracy")),
            "size_bytes": m.get("size_bytes"),
            "compression": _div(bm.get("size_bytes"), m.get("size_bytes")),
            "flops_dense": m.get("flops_dense"), "flops_effective": m.get("flops_effective"),
            "latency_device": lat[0] if lat else None, "latency_bs1_ms": lat[1] if lat else None,
            "speedup_bs1": _div(blat[1], lat[1]) if lat and blat and lat[0] == blat[0] else None,
            "profile": r["task"]["profile"], "run_id": r.get("provenance", {}).get("mlflow_run_id"),
            "error": r.get("error"),
        }
        rows.append(row)
    return rows


def _group(r: dict) -> tuple:
    return (r["task"]["name"], r["task"]["profile"], r["device"]["type"])


def _latency(r: dict | None, bs: int) -> tuple[str, float] | None:
    if not r:
        return None
    lats = [x for x in r.get("latency", []) if x["batch_size"] == bs]
    lats.sort(key=lambda x: x["device"] != "cpu")  # CPU first: the device every machine has
    return (lats[0]["device"], lats[0]["median_ms"]) if lats else None


def _sub(a, b):
    return None if a is None or b is None else a - b


def _div(a, b):
    return None if not a or not b else a / b


def render(rows: list[dict[str, Any]], title: str = "slimbench results") -> None:
    """Print rows as a rich table on stdout."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title)
    for col in ("task", "method", "seed", "status", "acc %", "Δacc", "size", "×smaller",
                "latency bs1", "speedup"):
        t.add_column(col, justify="left" if col in ("task", "method", "status") else "right",
                     no_wrap=col != "method")
    for r in rows:
        pct = (lambda v: "—" if v is None else f"{100 * v:.1f}")
        status = r["status"] + (" (simulated)" if r["simulated"] else "")
        lat = "—" if r["latency_bs1_ms"] is None else f"{r['latency_bs1_ms']:.2f} ms {r['latency_device']}"
        t.add_row(escape(r["task"]), escape(r["method"]), str(r["seed"]), status, pct(r["accuracy"]),
                  "—" if r["delta_accuracy"] is None else f"{100 * r['delta_accuracy']:+.1f}",
                  fmt_bytes(r["size_bytes"]),
                  "—" if r["compression"] is None else f"{r['compression']:.2f}", lat,
                  "—" if r["speedup_bs1"] is None else f"{r['speedup_bs1']:.2f}")
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 140))
    console.print(t)
