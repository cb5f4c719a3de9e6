"""Markdown, CSV and JSON exports of the leaderboard rows, and the column definitions.

The columns are defined once here, so the HTML tables, the README-ready Markdown and the
exports show the same numbers with the same formatting.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from slimbench.leaderboard import fmt
from slimbench.leaderboard.rows import Board, FailedRun, Row, Section, reference_share

SIMULATED_TITLE = "Simulated (not real compression)"
FAILED_TITLE = "Failed runs"
UNSUPPORTED_TITLE = "Unsupported (not failures: the method has nothing to offer here, for the reason given)"
UNSUPPORTED = "UNSUPPORTED"


def split_failed(failed: list[FailedRun]) -> tuple[list[FailedRun], list[FailedRun]]:
    """(runs that failed or were killed, runs the method declined as unsupported): listed apart,
    because a method that says "not here, because..." has not failed."""
    return [f for f in failed if f.status != UNSUPPORTED], [f for f in failed if f.status == UNSUPPORTED]
NOTES = ("Accuracy: mean over seeds in %, ± the 95% confidence interval (Student t). "
         "Δ: accuracy minus the task's baseline on the same device and profile, in percentage points. "
         "Ratio: baseline size / size. Speedup: baseline median latency / median latency on the "
         "same device and batch size; vs half (CUDA): the same over the half (fp16) row. Device cuda-graph: "
         "replays of one captured CUDA graph; cuda: eager calls. A section marked torch.compile timed every "
         "row as torch.compile(model). FLOPs per forward pass at batch size 1. "
         "Simulated (fake-quant) results, failed runs and unsupported ones are listed apart and never ranked. "
         "Verified: ✓ every run of the row was re-measured from its artifact by `slimbench verify` and matched "
         "its record; ✗ a run did not (claimed vs measured on its run page); blank: not re-measured. "
         "Kernels: reference n/m: n of the model's m weight layers ran a slimbench reference path on that device "
         "(e.g. dequantize + dense every call), so its latency measures a missing kernel, not the method; "
         "real: every weight layer ran a real kernel (each layer's path is on the run page); blank: not recorded.")
MARKS = {"verified": "✓", "mismatch": "✗"}


@dataclass(frozen=True)
class Column:
    """A table column: its sortable value and its displayed text."""

    title: str
    key: str
    numeric: bool
    value: Callable[[Row], Any]
    text: Callable[[Row], str]


def kernels_text(r: Row) -> str:
    share = reference_share(r)
    if share is None:
        return ""
    return f"reference {share[0]}/{share[1]}" if share[0] else "real"


def _batch(r: Row) -> str:
    return fmt.MISSING if r.batch_size is None else str(r.batch_size)


COLUMNS: tuple[Column, ...] = (
    Column("Method", "label", False, lambda r: r.label, lambda r: r.label),
    Column("Family", "family", False, lambda r: r.family, lambda r: r.family),
    Column("Seeds", "n_seeds", True, lambda r: r.n_seeds, lambda r: str(r.n_seeds)),
    Column("Accuracy %", "accuracy", True, lambda r: r.accuracy, lambda r: fmt.acc_ci(r.accuracy, r.accuracy_ci)),
    Column("Δ acc", "accuracy_delta", True, lambda r: r.accuracy_delta, lambda r: fmt.delta_pp(r.accuracy_delta)),
    Column("Size", "size_bytes", True, lambda r: r.size_bytes, lambda r: fmt.size(r.size_bytes)),
    Column("Ratio", "compression", True, lambda r: r.compression, lambda r: fmt.times(r.compression)),
    Column("Sparsity", "sparsity", True, lambda r: r.sparsity, lambda r: fmt.pct(r.sparsity)),
    Column("FLOPs dense", "flops_dense", True, lambda r: r.flops_dense, lambda r: fmt.flops(r.flops_dense)),
    Column("FLOPs eff.", "flops_effective", True, lambda r: r.flops_effective,
           lambda r: fmt.flops(r.flops_effective)),
    Column("BOPs", "bops", True, lambda r: r.bops, lambda r: fmt.bops(r.bops)),
    Column("Device", "device", False, lambda r: r.device, lambda r: r.device),
    Column("Batch", "batch_size", True, lambda r: r.batch_size, _batch),
    Column("Latency median", "latency_median_ms", True, lambda r: r.latency_median_ms,
           lambda r: fmt.ms(r.latency_median_ms)),
    Column("Latency p90", "latency_p90_ms", True, lambda r: r.latency_p90_ms, lambda r: fmt.ms(r.latency_p90_ms)),
    Column("Kernels", "kernels", False, kernels_text, kernels_text),
    Column("Speedup", "speedup", True, lambda r: r.speedup, lambda r: fmt.times(r.speedup)),
    Column("vs half", "speedup_half", True, lambda r: r.speedup_half, lambda r: fmt.times(r.speedup_half)),
    Column("Peak memory", "peak_bytes", True, lambda r: r.peak_bytes, lambda r: fmt.size(r.peak_bytes)),
    Column("Verified", "verification", False, lambda r: r.verification, lambda r: MARKS.get(r.verification, "")),
    Column("Note", "note", False, lambda r: r.note, lambda r: r.note),
)

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_cell(text: Any) -> str:
    """Markdown- and HTML-inert cell text: renderers that allow inline HTML show it literally."""
    s = " ".join(str(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def section_title(sec: Section) -> str:
    task, profile, device, _ = sec.key
    return f"{task} · {device}" + (f" · {profile}" if profile else "") + (f" · {sec.note}" if sec.note else "")


def _md_table(headers: list[str], numeric: list[bool], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(md_cell(h) for h in headers) + " |",
           "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return out


def _md_rows(rows: list[Row]) -> list[str]:
    return _md_table([c.title for c in COLUMNS], [c.numeric for c in COLUMNS],
                     [[c.text(r) for c in COLUMNS] for r in rows])


def _md_failed(failed: list[FailedRun]) -> list[str]:
    return _md_table(["Method", "Seed", "Status", "Error"], [False, True, False, False],
                     [[f.label, str(f.seed), f.status, _first_line(f.error, 160)] for f in failed])


def _first_line(text: str, limit: int) -> str:
    line = next((ln for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 1] + "…"


def to_markdown(board: Board, title: str = "slimbench leaderboard") -> str:
    """README-ready Markdown: one section per task and device, then simulated and failed runs."""
    out = [f"# {md_cell(title)}", "", NOTES, ""]
    for sec in board.sections:
        out += [f"## {md_cell(section_title(sec))}", ""]
        out += (_md_rows(sec.real) if sec.real else ["No finished real runs."]) + [""]
        if sec.simulated:
            out += [f"### {SIMULATED_TITLE}", ""] + _md_rows(sec.simulated) + [""]
        failed, unsupported = split_failed(sec.failed)
        if failed:
            out += [f"### {FAILED_TITLE}", ""] + _md_failed(failed) + [""]
        if unsupported:
            out += [f"### {UNSUPPORTED_TITLE}", ""] + _md_failed(unsupported) + [""]
    return "\n".join(out)


def _csv_safe(v: Any) -> Any:
    """Flatten lists/dicts and defuse spreadsheet formulas in strings from runs."""
    if isinstance(v, (list, tuple)):
        v = " ".join(str(x) for x in v)
    elif isinstance(v, dict):
        v = json.dumps(v, sort_keys=True, default=str)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def _csv(records: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: _csv_safe(rec.get(k)) for k in fields})
    return buf.getvalue()


def to_csv(board: Board) -> str:
    """Real and simulated rows (told apart by the `kind` column), one line per row."""
    fields = [f.name for f in dataclasses.fields(Row)]
    return _csv([dataclasses.asdict(r) for r in board.rows()], fields)


def failed_csv(board: Board) -> str:
    return _csv([dataclasses.asdict(f) for f in board.failed()], [f.name for f in dataclasses.fields(FailedRun)])


def finite(obj: Any) -> Any:
    """NaN/inf -> None, recursively: strict JSON has no spelling for them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def to_json(board: Board) -> str:
    """Rows and failed runs as JSON (the machine-readable twin of the Markdown)."""
    data = {"schema": 1, "rows": [dataclasses.asdict(r) for r in board.rows()],
            "failed": [dataclasses.asdict(f) for f in board.failed()]}
    return json.dumps(finite(data), indent=1, sort_keys=True, default=str, allow_nan=False)
