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

from slimbench.core.families import FAMILIES, family_slug
from slimbench.core.metrics import Metric
from slimbench.leaderboard import fmt
from slimbench.leaderboard.export import (FAILED_TITLE, NOTES, SIMULATED_TITLE, UNSUPPORTED, UNSUPPORTED_TITLE,
                                         failed_csv, finite, section_title, split_failed, to_csv, to_json,
                                         to_markdown)
from slimbench.leaderboard.page import Assets
from slimbench.leaderboard.plots import Point, scatter_svg, trace_svg, y_axis
from slimbench.leaderboard.rows import Board, FailedRun, Row, Section, aggregate, get
from slimbench.leaderboard.runpage import render_run_page
from slimbench.leaderboard.table import (MARKS, PER_DEVICE, Column, Key, Laid, Line, layout, lines, quality_text,
                                         sub_title)

TITLE = "slimbench leaderboard"
EXPORTS = (("leaderboard.md", "Markdown"), ("rows.csv", "CSV"), ("rows.json", "JSON"),
           ("failed.csv", "failed runs CSV"))


def _attr(v: Any) -> str:
    return escape(str(v), quote=True)


def _th(title: str, numeric: bool, col: int | None = None, extra: str = "") -> str:
    """A sortable header; `col` is the index of its cells in a body row (a two-row header's cells
    do not line up with the body's by position)."""
    where = f' data-col="{col}"' if col is not None else ""
    return (f'<th class="{"num" if numeric else "str"}"{where}{extra}><button type="button">{escape(title)}</button>'
            "</th>")


def _sub_attrs(col: Column, sub: Key) -> str:
    """What the device and batch filters hide a split column's cells by."""
    batch = "" if col.per == PER_DEVICE or sub[1] is None else str(sub[1])
    return f' data-group="{_attr(col.key)}" data-col-device="{_attr(sub[0])}" data-col-batch="{_attr(batch)}"'


def _cell(col: Column, r: Row | None, metric: Metric, extra: str = "") -> str:
    if r is None:
        return f'<td data-v=""{extra}>{fmt.MISSING}</td>'
    v = col.value(r)
    tip = f' title="{_attr(col.tip(r))}"' if col.tip else ""
    if col.key == "label":
        badge = (' <span class="badge">baseline</span>' if r.is_baseline else "") + (
            f" {_verification_badge(r)}" if r.verification in MARKS else "")
        desc = f"{r.label}: {r.description}" if r.description else r.label
        return (f'<td class="str method" data-v="{_attr(r.label)}"><a class="label" href="{_attr(r.pages[0])}" '
                f'title="{_attr(desc)}">{escape(r.label)}</a>{badge}<span class="family"><span class="dot '
                f'{family_slug(r.family)}"></span>{escape(r.family)}</span></td>')
    if col.key == "n_seeds":
        links = " ".join(f'<a href="{_attr(p)}">s{escape(str(s))}</a>' for s, p in zip(r.seeds, r.pages))
        return f'<td class="seeds" data-v="{r.n_seeds}">{r.n_seeds} <span class="seeds">{links}</span></td>'
    if col.key == "quality":
        ci = f' <span class="ci">± {escape(quality_text(metric, r.quality_ci))}</span>' if r.quality_ci is not None \
            else ""
        return f'<td data-v="{fmt.sort_value(v)}">{escape(quality_text(metric, v))}{ci}</td>'
    if col.numeric:
        return f'<td data-v="{fmt.sort_value(v)}"{tip}{extra}>{escape(col.text(r))}</td>'
    cls = {"note": "str note", "kernels": "str kernels"}.get(col.key, "str")
    return f'<td class="{cls}" data-v="{_attr(v)}"{tip}{extra}>{escape(col.text(r))}</td>'


def _line_html(ln: Line, laid: list[Laid], metric: Metric) -> str:
    r = ln.head
    cells = []
    for la in laid:
        if la.subs:
            cells += [_cell(la.col, ln.cell(la.col, k), metric, _sub_attrs(la.col, k)) for k in la.subs]
        else:
            cells.append(_cell(la.col, r, metric))
    devices = " ".join(dict.fromkeys(k[0] for k in ln.at)) or r.device
    batches = " ".join(dict.fromkeys(str(k[1]) for k in ln.at if k[1] is not None))
    batch = f' data-batch="{_attr(batches)}"' if batches else ""
    cls = " ".join(c for c, on in (("baseline", r.is_baseline), ("mismatch", r.verification == "mismatch")) if on)
    cls = f' class="{cls}"' if cls else ""
    return (f'<tr data-row{cls} data-family="{_attr(r.family)}" data-method="{_attr(r.method)}" '
            f'data-device="{_attr(devices)}" data-verification="{_attr(r.verification)}"{batch}>'
            f'{"".join(cells)}</tr>')


def _verification_badge(r: Row) -> str:
    """✓ / ✗ with what it means; nothing for a row nobody re-measured."""
    mark = MARKS.get(r.verification)
    if not mark:
        return ""
    tip = ("every run re-measured from its artifact by slimbench verify and matched its record"
           if r.verification == "verified" else "a run's re-measurement contradicts its record: see its run page")
    return f'<span class="badge {_attr(r.verification)}" title="{_attr(tip)}">{mark}</span>'


def _rows_table(sec: Section, rows: list[Row], kind: str) -> str:
    """One line per configuration; a column split by batch size (latency...) gets a group header
    over one sub-column per (device, batch)."""
    folded = lines(rows)
    laid = layout(folded, sec.scorer, sec.key[2].split(" ", 1)[0], html=True)
    split = any(la.subs for la in laid)
    top, subs, col = [], [], 0
    for la in laid:
        c = la.col
        if not la.subs:
            top.append(_th(c.title, c.numeric, col, ' rowspan="2"' if split else ""))
            col += 1
            continue
        top.append(f'<th class="group" colspan="{len(la.subs)}" data-group="{_attr(c.key)}">{escape(c.title)}</th>')
        for k in la.subs:
            subs.append(_th(sub_title(laid, k, c.per), c.numeric, col, _sub_attrs(c, k)))
            col += 1
    head = f'<tr>{"".join(top)}</tr>' + (f'<tr>{"".join(subs)}</tr>' if split else "")
    body = "".join(_line_html(ln, laid, sec.scorer) for ln in folded)
    return (f'<div class="table-wrap"><table class="lb {kind}" data-kind="{kind}"><thead>{head}'
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


def _points(rows: Iterable[Row], cost: str, fmt_cost: Any, metric: Metric) -> list[Point]:
    pts = []
    for r in rows:
        c = getattr(r, cost)
        if c is None or r.quality is None:
            continue
        detail = f"{metric.fmt(r.quality)} {metric.label}, {fmt_cost(c)}, {r.n_seeds} seed(s)"
        pts.append(Point(cost=c, quality=r.quality, label=r.label, href=r.pages[0], family=r.family,
                         detail=detail))
    return pts


def _plots(sec: Section) -> str:
    """The task metric vs size (one mark per configuration), vs sparsity, and vs latency per
    (device, batch), each with its Pareto front by the metric's score (better is up)."""
    if not sec.real:
        return ""
    m = sec.scorer
    name = m.label[:1].upper() + m.label[1:]
    configs = list({tuple(r.pages): r for r in sec.real}.values())
    svgs = [scatter_svg(_points(configs, "size_bytes", fmt.size, m), f"{name} vs size", "size", fmt.size, m)]
    pruned = [r for r in configs if r.sparsity is not None]
    if any(r.sparsity >= 0.01 for r in pruned):  # quality against the share of weights kept (1 - sparsity)
        dense = [dataclasses.replace(r, sparsity=1 - r.sparsity) for r in pruned]
        svgs.append(scatter_svg(_points(dense, "sparsity", lambda v: f"{100 * v:.3g}% of weights kept", m),
                                f"{name} vs sparsity", "weight density (1 - sparsity)", lambda v: f"{v:.2f}", m))
    combos = sorted({(r.device, r.batch_size) for r in sec.real if r.latency_median_ms is not None},
                    key=lambda k: (k[0], k[1] if isinstance(k[1], int) else -1))
    for dev, bs in combos:
        rows = [r for r in sec.real if (r.device, r.batch_size) == (dev, bs)]
        svgs.append(scatter_svg(_points(rows, "latency_median_ms", fmt.ms, m),
                                f"{name} vs latency · {dev} · batch {bs}", "median latency", fmt.ms, m))
    if sec.traces:  # search candidates are never rows: each search run is one best-so-far curve
        if m.name == "accuracy":
            svgs.append(trace_svg(sec.traces, "Search traces", "proxy training steps used (search budget)"))
        else:  # the search's own score, as it recorded it
            svgs.append(trace_svg(sec.traces, "Search traces", "proxy training steps used (search budget)",
                                  "best validation score (as the search recorded it)", lambda t: f"{t:.3g}"))
    legend = " ".join(f'<svg width="10" height="10" class="plot-key"><circle class="{family_slug(f)}" '
                      f'cx="5" cy="5" r="4"/></svg> {escape(f)}' for f in FAMILIES)
    return (f'<div class="plots">{"".join(svgs)}</div><p class="legend">{legend} · y: {escape(y_axis(m)[0])} · '
            "the dashed line is the Pareto front (labelled where a label fits; hover any point for its name); "
            "dominated configurations are dimmed. Click a point for its run.</p>")


def _section(i: int, sec: Section) -> str:
    task, profile, device, _ = sec.key
    out = [f'<section class="task" id="s-{i}" data-task="{_attr(task)}" data-profile="{_attr(profile)}" '
           f'data-section-device="{_attr(device)}"><h2>{escape(section_title(sec))}</h2>', _plots(sec),
           "<h3>Results</h3>"]
    out.append(_rows_table(sec, sec.real, "real") if sec.real else '<p class="muted">No finished real runs.</p>')
    if sec.simulated:
        out.append(f'<h3><span class="badge sim">simulated</span> {SIMULATED_TITLE}</h3><p class="notes">'
                   "These methods simulate compression numerically (fake-quant): their size and latency are "
                   "not those of a really compressed model, so they are neither ranked nor plotted.</p>")
        out.append(_rows_table(sec, sec.simulated, "simulated"))
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
    n_rows = sum(len(lines(s.real)) for s in board.sections)  # configurations, as the tables show them
    n_failed, n_unsupported = (len(part) for part in split_failed(board.failed()))
    head = (f"<header><h1>{escape(title)}</h1><p class=\"muted\">{n_runs} runs · {n_rows} ranked rows · "
            f"{sum(len(lines(s.simulated)) for s in board.sections)} simulated rows · {n_failed} failed runs · "
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
