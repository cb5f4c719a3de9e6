"""Markdown, CSV and JSON exports of the leaderboard rows.

The tables' columns are `table`'s, so the HTML tables and the README-ready Markdown show the
same numbers with the same formatting (one row per configuration); CSV and JSON keep the long
form, one row per configuration, device and batch size.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from typing import Any

from slimbench.leaderboard.board import Board, FailedRun, Row, Section
from slimbench.leaderboard.table import MARKS, PLAIN, kernels_text, layout, lines, sub_title  # noqa: F401

SIMULATED_TITLE = "Simulated (not real compression)"
FAILED_TITLE = "Failed runs"
UNSUPPORTED_TITLE = "Unsupported (not failures: the method has nothing to offer here, for the reason given)"
UNSUPPORTED = "UNSUPPORTED"


def split_failed(failed: list[FailedRun]) -> tuple[list[FailedRun], list[FailedRun]]:
    """(runs that failed or were killed, runs the method declined as unsupported): listed apart,
    because a method that says "not here, because..." has not failed."""
    return [f for f in failed if f.status != UNSUPPORTED], [f for f in failed if f.status == UNSUPPORTED]


NOTES = ("One row per configuration; latency, speedups and memory per batch size (bs1, bs64...) in columns. "
         "Quality is the task's metric (↑ higher is better, ↓ lower is better): mean over seeds (accuracy in %), "
         "± the 95% confidence interval (Student t). "
         "Δ: against the task's baseline on the same device and profile: accuracy in percentage points, "
         "perplexity relative to the baseline's (+10.0% is 10% worse). "
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


def _md_rows(sec: Section, rows: list[Row]) -> list[str]:
    """One row per configuration, the HTML table's columns; a column split by batch size is one
    cell here, its values joined by " / " in the order its header names (`Latency (median) (bs1 / bs64)`)."""
    folded = lines(rows)
    laid = layout(folded, sec.scorer, sec.key[2].split(" ", 1)[0])
    heads = [la.col.title + (f" ({' / '.join(sub_title(laid, k, la.col.per) for k in la.subs)})"
                             if la.col.per != PLAIN else "") for la in laid]
    cells = []
    for ln in folded:
        cells.append([" / ".join(_md_text(la.col, ln.cell(la.col, k)) for k in la.subs) if la.subs
                      else _md_text(la.col, ln.head) for la in laid])
    return _md_table(heads, [la.col.numeric for la in laid], cells)


def _md_text(col: Any, row: Row | None) -> str:
    return col.text(row) if row is not None else "–"


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
        out += (_md_rows(sec, sec.real) if sec.real else ["No finished real runs."]) + [""]
        if sec.simulated:
            out += [f"### {SIMULATED_TITLE}", ""] + _md_rows(sec, sec.simulated) + [""]
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
