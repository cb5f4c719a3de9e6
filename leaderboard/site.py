"""The static site: index (tables, filters, Pareto plots), one page per run, and the exports.

Building takes plain run.json dicts (read from MLflow by `suite.tracking.Tracker.read_records`), so it is fast,
testable and benchmarkable without a tracking server. Every string that came from a run
is passed through `html.escape` before it reaches the markup.
"""
from __future__ import annotations

import dataclasses

import json
from html import escape
from pathlib import Path
from typing import Any, Iterable

from slimbench.core.families import family_slug
from slimbench.leaderboard import fmt
from slimbench.leaderboard.export import (COLUMNS, FAILED_TITLE, MARKS, NOTES, SIMULATED_TITLE, UNSUPPORTED,
                                         UNSUPPORTED_TITLE,
                                         failed_csv, finite, split_failed,
                                         section_title, to_csv, to_json, to_markdown)
from slimbench.leaderboard.page import Assets
from slimbench.leaderboard.plots import Point, scatter_svg, trace_svg
from slimbench.leaderboard.rows import Board, FailedRun, Row, Section, aggregate, get
from slimbench.leaderboard.runpage import render_run_page
from slimbench.core.families import FAMILIES

TITLE = "slimbench leaderboard"
EXPORTS = (("leaderboard.md", "Markdown"), ("rows.csv", "CSV"), ("rows.json", "JSON"),
           ("failed.csv", "failed runs CSV"))


def _attr(v: Any) -> str:
    return escape(str(v), quote=True)


def _th(title: str, numeric: bool) -> str:
    return f'<th class="{"num" if numeric else "str"}"><button type="button">{escape(title)}</button></th>'


def _row_html(r: Row) -> str:
    batch = "" if r.batch_size is None else f' data-batch="{_attr(r.batch_size)}"'
    cells = []
    for col in COLUMNS:
        v = col.value(r)
        if col.key == "label":
            badge = (' <span class="badge">baseline</span>' if r.is_baseline else "") + (
                f" {_verification_badge(r)}" if r.verification in MARKS else "")
            tip = f"{r.label}: {r.description}" if r.description else r.label
            cells.append(f'<td class="str" data-v="{_attr(r.label)}"><a class="label" href="{_attr(r.pages[0])}" '
                         f'title="{_attr(tip)}">{escape(r.label)}</a>{badge}</td>')
        elif col.key == "n_seeds":
            links = " ".join(f'<a href="{_attr(p)}">s{escape(str(s))}</a>' for s, p in zip(r.seeds, r.pages))
            cells.append(f'<td data-v="{r.n_seeds}">{r.n_seeds} <span class="seeds">{links}</span></td>')
        elif col.key == "accuracy":
            ci = f' <span class="ci">± {100 * r.accuracy_ci:.2f}</span>' if r.accuracy_ci is not None else ""
            cells.append(f'<td data-v="{fmt.sort_value(v)}">{escape(fmt.pct(v))}{ci}</td>')
        elif col.key == "verification":
            cells.append(f'<td class="str" data-v="{_attr(v)}">{_verification_badge(r)}</td>')
        elif col.numeric:
            cells.append(f'<td data-v="{fmt.sort_value(v)}">{escape(col.text(r))}</td>')
        else:
            cells.append(f'<td class="str" data-v="{_attr(v)}">{escape(col.text(r))}</td>')
    cls = " ".join(c for c, on in (("baseline", r.is_baseline), ("mismatch", r.verification == "mismatch")) if on)
    cls = f' class="{cls}"' if cls else ""
    return (f'<tr data-row{cls} data-family="{_attr(r.family)}" data-method="{_attr(r.method)}" '
            f'data-device="{_attr(r.device)}" data-verification="{_attr(r.verification)}"{batch}>'
            f'{"".join(cells)}</tr>')


def _verification_badge(r: Row) -> str:
    """✓ / ✗ with what it means; nothing for a row nobody re-measured."""
    mark = MARKS.get(r.verification)
    if not mark:
        return ""
    tip = ("every run re-measured from its artifact by slimbench verify and matched its record"
           if r.verification == "verified" else "a run's re-measurement contradicts its record: see its run page")
    return f'<span class="badge {_attr(r.verification)}" title="{_attr(tip)}">{mark}</span>'


def _rows_table(rows: list[Row], kind: str) -> str:
    head = "".join(_th(c.title, c.numeric) for c in COLUMNS)
    body = "".join(_row_html(r) for r in rows)
    return (f'<div class="table-wrap"><table class="lb {kind}" data-kind="{kind}"><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>")


def _failed_table(failed: list[FailedRun]) -> str:
    head = "".join(_th(t, n) for t, n in (("Method", False), ("Family", False), ("Seed", True),
                                          ("Status", False), ("Error", False)))
    body = []
    for f in failed:
        err = next((ln for ln in f.error.splitlines() if ln.strip()), "")
        err = err if len(err) <= 200 else err[:199] + "…"
        seed = fmt.sort_value(f.seed) if isinstance(f.seed, (int, float)) else ""
        sim = ' <span class="badge sim">simulated</span>' if f.simulated else ""
        body.append(f'<tr data-row data-family="{_attr(f.family)}" data-method="{_attr(f.method)}" '
                    f'data-device="{_attr(f.section_device.split(" ", 1)[0])}">'
                    f'<td class="str" data-v="{_attr(f.label)}"><a class="label" href="{_attr(f.page)}" '
                    f'title="{_attr(f.label)}">{escape(f.label)}</a></td>'
                    f'<td class="str">{escape(f.family)}</td><td data-v="{seed}">{escape(str(f.seed))}</td>'
                    f'<td class="str"><span class="badge {"unsup" if f.status == UNSUPPORTED else "fail"}">'
                    f'{escape(f.status)}</span>{sim}</td>'
                    f'<td class="str wrap">{escape(err)}</td></tr>')
    return (f'<div class="table-wrap"><table class="lb failed" data-kind="failed"><thead><tr>{head}</tr>'
            f'</thead><tbody>{"".join(body)}</tbody></table></div>')


def _points(rows: Iterable[Row], cost: str, fmt_cost: Any) -> list[Point]:
    pts = []
    for r in rows:
        c = getattr(r, cost)
        if c is None or r.accuracy is None:
            continue
        detail = f"{fmt.pct(r.accuracy)}% accuracy, {fmt_cost(c)}, {r.n_seeds} seed(s)"
        pts.append(Point(cost=c, accuracy=r.accuracy, label=r.label, href=r.pages[0], family=r.family,
                         detail=detail))
    return pts


def _plots(sec: Section) -> str:
    """Accuracy vs size (one mark per configuration) and vs latency per (device, batch)."""
    if not sec.real:
        return ""
    configs = list({tuple(r.pages): r for r in sec.real}.values())
    svgs = [scatter_svg(_points(configs, "size_bytes", fmt.size), "Accuracy vs size", "size", fmt.size)]
    pruned = [r for r in configs if r.sparsity is not None]
    if any(r.sparsity >= 0.01 for r in pruned):  # accuracy against the share of weights kept (1 - sparsity)
        dense = [dataclasses.replace(r, sparsity=1 - r.sparsity) for r in pruned]
        svgs.append(scatter_svg(_points(dense, "sparsity", lambda v: f"{100 * v:.3g}% of weights kept"),
                                "Accuracy vs sparsity", "weight density (1 - sparsity)", lambda v: f"{v:.2f}"))
    combos = sorted({(r.device, r.batch_size) for r in sec.real if r.latency_median_ms is not None},
                    key=lambda k: (k[0], k[1] if isinstance(k[1], int) else -1))
    for dev, bs in combos:
        rows = [r for r in sec.real if (r.device, r.batch_size) == (dev, bs)]
        svgs.append(scatter_svg(_points(rows, "latency_median_ms", fmt.ms),
                                f"Accuracy vs latency · {dev} · batch {bs}", "median latency", fmt.ms))
    if sec.traces:  # search candidates are never rows: each search run is one best-so-far curve
        svgs.append(trace_svg(sec.traces, "Search traces", "proxy training steps used (search budget)"))
    legend = " ".join(f'<svg width="10" height="10" class="plot-key"><circle class="{family_slug(f)}" '
                      f'cx="5" cy="5" r="4"/></svg> {escape(f)}' for f in FAMILIES)
    return (f'<div class="plots">{"".join(svgs)}</div><p class="legend">{legend} · the dashed line is the '
            "Pareto front (labelled); dominated configurations are dimmed. Click a point for its run.</p>")


def _section(i: int, sec: Section) -> str:
    task, profile, device, _ = sec.key
    out = [f'<section class="task" id="s-{i}" data-task="{_attr(task)}" data-profile="{_attr(profile)}" '
           f'data-section-device="{_attr(device)}"><h2>{escape(section_title(sec))}</h2>', _plots(sec),
           "<h3>Results</h3>"]
    out.append(_rows_table(sec.real, "real") if sec.real else '<p class="muted">No finished real runs.</p>')
    if sec.simulated:
        out.append(f'<h3><span class="badge sim">simulated</span> {SIMULATED_TITLE}</h3><p class="notes">'
                   "These methods simulate compression numerically (fake-quant): their size and latency are "
                   "not those of a really compressed model, so they are neither ranked nor plotted.</p>")
        out.append(_rows_table(sec.simulated, "simulated"))
    failed, unsupported = split_failed(sec.failed)
    if failed:
        out.append(f'<h3><span class="badge fail">failed</span> {FAILED_TITLE}</h3>{_failed_table(failed)}')
    if unsupported:
        out.append(f'<h3><span class="badge unsup">unsupported</span> {UNSUPPORTED_TITLE}</h3>'
                   f'{_failed_table(unsupported)}')
    return "".join(out) + "</section>"


def _filters(board: Board) -> dict[str, list[str]]:
    rows, failed = board.rows(), board.failed()
    batches = sorted({r.batch_size for r in rows if isinstance(r.batch_size, int)})
    return {"family": sorted({r.family for r in rows} | {f.family for f in failed}),
            "method": sorted({r.method for r in rows} | {f.method for f in failed}),
            "device": sorted({r.device for r in rows} | {f.section_device.split(" ", 1)[0] for f in failed}),
            "batch": [str(b) for b in batches],
            "verification": sorted({r.verification for r in rows})}


def render_index(board: Board, assets: Assets, n_runs: int, title: str = TITLE) -> str:
    """The index page: filters, one section per task/device/profile, plots and tables."""
    started = [str(get(run, "provenance", "started", default="")) for _, run in board.pages]
    newest = max((s for s in started if s), default="")
    exports = " · ".join(f'<a href="{href}">{name}</a>' for href, name in EXPORTS)
    selects = "".join(f'<label>{label}<select name="{key}"><option value="">all</option></select></label>'
                      for key, label in (("family", "Family"), ("method", "Method"), ("device", "Device"),
                                         ("batch", "Batch size"), ("verification", "Verified")))
    nav = "".join(f'<li><a href="#s-{i}">{escape(section_title(s))}</a></li>' for i, s in enumerate(board.sections))
    n_rows = sum(len(s.real) for s in board.sections)
    n_failed, n_unsupported = (len(part) for part in split_failed(board.failed()))
    head = (f"<header><h1>{escape(title)}</h1><p class=\"muted\">{n_runs} runs · {n_rows} ranked rows · "
            f"{sum(len(s.simulated) for s in board.sections)} simulated rows · {n_failed} failed runs · "
            f"{n_unsupported} unsupported"
            + (f" · newest run started {escape(newest)}" if newest else "") + f" · exports: {exports}</p>"
            f'<p class="notes">{escape(NOTES)}</p><form id="filters" class="filters">{selects}'
            '<button type="reset">Reset</button><span id="shown" class="muted"></span></form>'
            f"<nav><ul>{nav}</ul></nav></header>")
    body = "".join(_section(i, s) for i, s in enumerate(board.sections))
    if not board.sections:
        body = '<p class="muted">No runs yet: run `slimbench run` first.</p>'
    return assets.shell(title, f"{head}<main>{body}</main><footer>Built by slimbench from MLflow runs; "
                               "sortable columns, filters apply to every table.</footer>",
                        script=True, data={"filters": _filters(board)})


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def build_site(runs: list[dict[str, Any]], out_dir: Path | str, title: str = TITLE) -> Path:
    """Write the site and its exports into `out_dir`; returns the index path."""
    out = Path(out_dir)
    board = aggregate(runs)
    assets = Assets.load()
    pages = {page for page, _ in board.pages}
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    for stale in runs_dir.glob("*.html"):  # pages of runs no longer in the store
        if f"runs/{stale.name}" not in pages:
            stale.unlink()
    for page, run in board.pages:
        (out / page).write_text(render_run_page(run, assets), encoding="utf-8")
    _write(out / "leaderboard.md", to_markdown(board, title))
    _write(out / "rows.csv", to_csv(board))
    _write(out / "failed.csv", failed_csv(board))
    _write(out / "rows.json", to_json(board))
    index = out / "index.html"
    _write(index, render_index(board, assets, len(board.pages), title))
    return index


def publish(runs: list[dict[str, Any]], out_dir: Path | str, title: str = TITLE) -> Path:
    """A folder ready for static hosting: the site plus the run.json data it was built from."""
    out = Path(out_dir)
    index = build_site(runs, out, title)
    _write(out / "data" / "runs.json", json.dumps(finite(runs), indent=1, sort_keys=True, default=str))
    _write(out / ".nojekyll", "")  # GitHub Pages: serve files as they are
    _write(out / "README.md", f"# {title}\n\nStatic site generated by `slimbench leaderboard publish`: open "
                              "`index.html`. `data/runs.json` holds the run.json records it was built from; "
                              "`rows.csv`, `rows.json` and `leaderboard.md` the aggregated rows.\n")
    return index
