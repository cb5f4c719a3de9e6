"""One page per run: its full config, provenance and the command that reproduces it."""
from __future__ import annotations

import json
import shlex
from html import escape
from typing import Any, Callable

from slimbench.leaderboard import fmt
from slimbench.leaderboard.page import Assets
from slimbench.core.metrics import get_metric
from slimbench.leaderboard.board import device_label, get, metric_named, run_metric

_METRIC_FMT: dict[str, Callable[[Any], str]] = {
    "accuracy": lambda v: fmt.pct(v) + " %", "balanced_accuracy": lambda v: fmt.pct(v) + " %",
    "token_accuracy": lambda v: fmt.pct(v) + " %", "perplexity": lambda v: get_metric("perplexity").fmt(v),
    "nll": lambda v: f"{v:.4g}", "eval_tokens": lambda v: f"{v:.0f}", "eval_examples": lambda v: f"{v:.0f}",
    "size_bytes": fmt.size, "weights_bytes": fmt.size, "tensors_bytes": fmt.size, "meta_bytes": fmt.size,
    "index_bytes": fmt.size, "flops_dense": fmt.flops, "flops_effective": fmt.flops, "bops": fmt.bops,
    "compress_seconds": lambda v: f"{v:.3g} s"}
_PROVENANCE_ORDER = ("mlflow_run_id", "git_commit", "slimbench", "torch", "cuda", "python", "platform",
                     "device_name", "cpu_model", "cpu_capability", "threads", "started", "duration_s", "source")


def _text(v: Any) -> str:
    """A value as display text: JSON for structures, so nothing is silently flattened."""
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=str)


def _kv(pairs: list[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(_text(v))}</dd>" for k, v in pairs)
    return f'<dl class="kv">{items}</dl>'


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f'<th class="{"str" if i == 0 else "num"}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"str" if i == 0 else "num"}">{escape(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def command_text(run: dict[str, Any]) -> str | None:
    """The recorded command as one shell line (run.json may store a string or an argv list)."""
    cmd = run.get("command")
    if isinstance(cmd, (list, tuple)):
        return shlex.join(str(c) for c in cmd)
    return str(cmd) if cmd else None


def _metric_text(run: dict[str, Any]) -> str:
    """`perplexity ↓ (lower is better)`: the task's metric and which way is better."""
    m = metric_named(run_metric(run))
    return f"{m.label} {m.arrow} ({'higher' if m.higher_is_better else 'lower'} is better)"


def _metrics(run: dict[str, Any]) -> str:
    """Every measurement; the task's own metric first, marked with its direction."""
    metrics = get(run, "metrics", default={})
    if not isinstance(metrics, dict) or not metrics:
        return '<p class="muted">No metrics recorded.</p>'
    task_metric = metric_named(run_metric(run))
    first = sorted(metrics, key=lambda k: k != task_metric.name)
    rows = [[f"{k} {task_metric.arrow}" if k == task_metric.name else str(k),
             _METRIC_FMT.get(k, lambda v: fmt.si(v, ""))(metrics[k]) if isinstance(metrics[k], (int, float))
             else _text(metrics[k]), _text(metrics[k])] for k in first]
    return _table(["metric", "value", "raw"], rows)


def _entries(run: dict[str, Any], table: str, cols: list[str]) -> str:
    entries = [e for e in get(run, table, default=[]) or [] if isinstance(e, dict)]
    if not entries:
        return f'<p class="muted">No {escape(table)} measurements.</p>'
    shown = {"median_ms": fmt.ms, "p90_ms": fmt.ms, "mean_ms": fmt.ms, "std_ms": fmt.ms, "peak_bytes": fmt.size}
    rows = [[shown[c](e.get(c)) if c in shown else _text(e.get(c, fmt.MISSING)) for c in cols] for e in entries]
    return _table(cols, rows)


def _verification(run: dict[str, Any]) -> str:
    """What `slimbench verify` found when it re-measured this run's artifact: the verdict, and the
    claimed and measured figures side by side (a mismatch's are the point of the page)."""
    v = get(run, "provenance", "verification", default=None)
    if not isinstance(v, dict):  # not re-measured: the index's blank Verified cell says so
        return ""
    verdict = str(v.get("verdict") or "")
    where = f" on {v['machine']}" if v.get("machine") else ""
    head = {"verified": f"Verified{where}: re-measured from its artifact, every figure matched its record.",
            "mismatch": f"Mismatch{where}: re-measured from its artifact, its figures differ from its record.",
            }.get(verdict, f"Cannot verify{where}: its artifact could not be re-measured.")
    cls = verdict if verdict in ("verified", "mismatch") else "sim"
    parts = [f'<h2>Verification</h2><p class="banner {cls}">{escape(head)}</p>']
    reasons = [str(r) for r in v.get("reasons") or []]
    if reasons:
        parts.append("<ul>" + "".join(f"<li>{escape(r)}</li>" for r in reasons) + "</ul>")
    claimed, measured = get(v, "claimed", default={}), get(v, "measured", default={})
    tols = get(v, "tolerances", default={})
    if isinstance(claimed, dict) and isinstance(measured, dict) and (claimed or measured):
        tols = tols if isinstance(tols, dict) else {}
        rows = [[k, _figure(k, claimed.get(k)), _figure(k, measured.get(k)), _text(tols.get(k, 0)),
                 _match(claimed.get(k), measured.get(k), tols.get(k, 0))]
                for k in dict.fromkeys([*claimed, *measured])]
        parts.append(_table(["figure", "claimed", "measured", "tolerance", "matches"], rows))
    lat = [p for p in get(v, "latency", default=[]) or [] if isinstance(p, dict)]
    if lat:
        parts.append(_table(["batch", "claimed (cpu)", "measured here", "compared"],
                            [[_text(p.get("batch_size")), fmt.ms(p.get("claimed_ms")), fmt.ms(p.get("measured_ms")),
                              "yes" if p.get("compared") else "no (another device)"] for p in lat]))
    return "".join(parts)


def _figure(key: str, v: Any) -> str:
    if key in _METRIC_FMT and isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{_METRIC_FMT[key](v)} ({_text(v)})"
    return fmt.MISSING if v is None else _text(v)


def _match(claimed: Any, measured: Any, tol: Any) -> str:
    """✓ / ✗ for one figure, as `slimbench verify` judged it; blank when it was not compared."""
    nums = [x for x in (claimed, measured, tol) if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if claimed is None or measured is None or len(nums) < 3:
        return "" if claimed is None or measured is None else "✗"
    return "✓" if abs(claimed - measured) <= tol + 1e-12 else "✗"


def render_run_page(run: dict[str, Any], assets: Assets, index_href: str = "../index.html") -> str:
    """The HTML of a run's page; every value from the run is escaped."""
    name = str(get(run, "method", "name", default="?"))
    label = str(get(run, "method", "label", default="") or name)
    task = str(get(run, "task", "name", default="?"))
    status = str(run.get("status", "FAILED"))
    simulated = bool(get(run, "method", "simulated", default=False))
    title = f"{label} · {task} · seed {run.get('seed')}"
    parts = [f'<header><p><a href="{escape(index_href)}">← leaderboard</a></p>'
             f"<h1>{escape(title)}</h1></header><main>"]
    if status.upper() != "FINISHED":
        parts.append(f'<p class="banner fail">{escape(status)}: this run did not finish; it is listed '
                     "under failed runs and none of its numbers are ranked.</p>")
    if simulated:
        parts.append('<p class="banner sim">Simulated (not real compression): this method simulates '
                     "compression numerically (fake-quant), so its size and latency are not those of a "
                     "really compressed model. Its results are listed apart from real ones.</p>")
    if get(run, "provenance", "verification", "verdict") == "mismatch":
        parts.append('<p class="banner mismatch">Mismatch: re-measured from its artifact, this run does not give '
                     "the figures its record claims (see Verification).</p>")
    dev = get(run, "device", default={})
    parts.append(_kv([("task", task), ("profile", get(run, "task", "profile", default="")),
                      ("metric", _metric_text(run)), ("method", name),
                      ("label", label), ("family", get(run, "method", "family", default="")),
                      ("description", get(run, "method", "description", default="")),
                      ("seed", run.get("seed")), ("status", status), ("simulated", simulated),
                      ("device", device_label(run)),
                      ("source", get(run, "provenance", "source", default="this tracking store")),
                      ("threads", dev.get("threads") if isinstance(dev, dict) else None),
                      ("run key", run.get("run_key", ""))]))
    if run.get("error"):
        parts.append(f"<h2>Error</h2><pre>{escape(str(run['error']))}</pre>")
    cmd = command_text(run)
    parts.append("<h2>Reproduce</h2>" + (f"<pre><code>{escape(cmd)}</code></pre>" if cmd else
                                         '<p class="muted">The command was not recorded for this run.</p>'))
    if run.get("invocation"):
        parts.append(f'<p class="muted">Part of the invocation: <code>{escape(str(run["invocation"]))}</code></p>')
    cfg = get(run, "method", "config", default={})
    cfg_rows = [[str(k), _text(v)] for k, v in sorted(cfg.items())] if isinstance(cfg, dict) else []
    parts.append("<h2>Config</h2>" + (_table(["field", "value"], cfg_rows) if cfg_rows else
                                      '<p class="muted">Default config (no fields).</p>'))
    parts.append("<h2>Metrics</h2>" + _metrics(run))
    if status.upper() == "FINISHED":
        parts.append(_verification(run))
    own = get(run, "method", default={})
    mm = get(run, "method_metrics", default={})
    parts.append("<h2>What the method reported</h2>" + (
        _table(["name", "value"], [[str(k), _text(v)] for k, v in sorted(mm.items())])
        if isinstance(mm, dict) and mm else '<p class="muted">Nothing beyond the measurements.</p>'))
    budget = get(run, "budget", default={})
    if isinstance(budget, dict) and budget:
        parts.append("<h2>Budget</h2>" + _table(
            ["account", "optimizer steps used", "granted"],
            [[str(k), _text(get(v, "used")), _text(get(v, "budget"))] for k, v in sorted(budget.items())]))
    files = get(own, "config_files", default={})
    for path, text in (files.items() if isinstance(files, dict) else []):
        parts.append(f"<h2>Config file <code>{escape(str(path))}</code></h2><pre>{escape(str(text))}</pre>")
    parts.append("<h2>Latency</h2>" + _entries(run, "latency", ["device", "batch_size", "median_ms", "p90_ms",
                                                               "mean_ms", "std_ms", "runs", "threads"]))
    parts.append("<h2>Memory</h2>" + _entries(run, "memory", ["device", "batch_size", "peak_bytes"]))
    paths = get(run, "execution_paths", default={})
    if isinstance(paths, dict) and paths:
        parts.append("<h2>Execution paths</h2><p>The kernel each weight layer ran where latency was timed; a "
                     "<em>reference</em> path measures a kernel slimbench lacks, not the method.</p>" + _table(
            ["device", "layer", "path"],
            [[str(dev), str(layer), str(path)]
             for dev, layers in sorted(paths.items()) if isinstance(layers, dict)
             for layer, path in layers.items()]))
    prov = get(run, "provenance", default={})
    prov = prov if isinstance(prov, dict) else {}
    prov = {k: v for k, v in prov.items() if k != "verification"}  # its own section above
    keys = [k for k in _PROVENANCE_ORDER if k in prov] + sorted(k for k in prov if k not in _PROVENANCE_ORDER)
    parts.append("<h2>Provenance</h2>" + _kv([(k, prov[k]) for k in keys]))
    raw = json.dumps(run, indent=2, sort_keys=True, default=str)
    parts.append(f"<details><summary>run.json</summary><pre>{escape(raw)}</pre></details></main>")
    return assets.shell(title, "".join(parts))
