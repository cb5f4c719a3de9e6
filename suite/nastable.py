"""`slimbench nas-table`: a tabular benchmark of the suite's own search space.

Public tabular benchmarks (NAS-Bench-101/201, HW-NAS-Bench) made strategy comparisons cheap and
fair by evaluating every architecture of a space once. None exists for these tasks, so this
builds one: every architecture of a small declared space (`methods/nas/spaces/*-table*.yaml`)
is built by the task's builder, started from the trained baseline, trained for the profile's
proxy budget, and recorded with its validation and test accuracy, parameters, FLOPs and measured
latency. Strategies are then run against the table (`compare`) with many seeds at no training
cost: they see validation accuracy and latency only; the test accuracy of what each selects is
what the comparison reports. The table is written after every architecture, so a killed build
resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from typing import TYPE_CHECKING

from slimbench.core.config import ConfigError
from slimbench.methods.nas.configs import STRATEGIES  # torch- and numpy-free: `slimbench --help` stays fast

if TYPE_CHECKING:  # pragma: no cover
    from slimbench.methods.nas.space import Space


@dataclass
class Table:
    path: Path
    data: dict[str, Any]

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        return self.data["entries"]


def table_space(task, profile: str, space: str | None, parent) -> "Space":
    from slimbench.methods.common.children import builder_values, model_kind
    from slimbench.methods.nas.space import load_space, resolve
    kind = model_kind(parent)
    if space is None:
        if kind is None:
            raise ConfigError(f"{task.name}: no built-in table space for this model; give --space FILE.yaml")
        space = f"{kind}-table-quick" if profile == "quick" else f"{kind}-table"
    return resolve(load_space(space), builder_values(parent))


def build_table(task, harness, space_ref: str | None = None, log: Callable[[str], None] = print) -> Table:
    """Evaluate every architecture of the space once (resuming a partial table)."""
    import torch

    from slimbench.methods.common.children import child_from
    from slimbench.suite import provenance
    from slimbench.suite.costs import CostTable
    from slimbench.suite.measure.accuracy import evaluate
    from slimbench.suite.progress import bar

    cfg = task.config
    parent, _ = harness.baseline(task)
    parent = parent.to(harness.device).eval()
    space = table_space(task, cfg.profile, space_ref, parent)
    steps = cfg.search.proxy_steps
    if steps < 1:
        raise ConfigError(f"{task.name} grants no proxy steps in profile {cfg.profile!r}: nothing to train a table on")
    costs = CostTable(harness.device, cfg.baseline_key(), harness.cache_dir / "costs", harness.threads,
                      harness.device_ref.label)
    path = harness.opts.results_dir / "nas-table" / f"{task.name}-{cfg.profile}-{space.name}.json"
    import dataclasses
    # everything that changes a stored number: a table built under other settings is rebuilt
    head = {"task": task.name, "profile": cfg.profile, "baseline_key": cfg.baseline_key(), "space": space.name,
            "dims": list(space.dims), "choices": [list(c) for c in space.choices], "fixed": space.fixed,
            "proxy_steps": steps, "proxy_recipe": dataclasses.asdict(_recipe(cfg, steps)),
            "val_limit": cfg.val_limit, "eval_limit": cfg.eval_limit, "device": harness.device_ref.label,
            "cost_table": costs.provenance, "latency_batch": 1}
    data: dict[str, Any] = {**head, "entries": {}}
    if path.exists():
        old = json.loads(path.read_text())
        if all(old.get(k) == v for k, v in head.items()):
            data = old
        else:
            log(f"{path} was built for another task definition, space or device: rebuilding it")
    data["provenance"] = provenance.collect(harness.device, harness.threads)
    table = Table(path, data)
    todo = [a for a in space.all() if space.key(a) not in table.entries]
    log(f"nas-table {task.name} ({cfg.profile}): space {space.name}, {space.size} architectures, "
        f"{len(todo)} to evaluate, {steps} proxy steps each -> {path}")
    view = task.method_data()  # train and validation only: the test split is read by `evaluate` below
    example = {k: v.to(harness.device) for k, v in view.example_inputs(2).items()}
    one = view.example_inputs(1)
    with bar("nas-table", len(todo), harness.opts.progress, unit="arch") as update:
        for arch in todo:
            t0 = time.perf_counter()
            child = task.build_model(**space.overrides(arch)).to(harness.device)
            cost = costs(space.model_key(arch), child, one)
            child_from(parent, child, example)
            harness.trainer.fit(child, task.train_stream(cfg.finetune.batch_size, cfg.seed),
                                _recipe(cfg, steps), cfg.seed, desc="proxy")
            val = evaluate(child, view.val_batches(), harness.device)["accuracy"]
            test = evaluate(child, task.test_batches(), harness.device)["accuracy"]
            table.entries[space.key(arch)] = {
                "arch": list(arch), "val_accuracy": float(val), "test_accuracy": float(test),
                "params": int(sum(p.numel() for p in child.parameters())), "mflops": cost["mflops"],
                "latency_ms": cost["latency_ms"], "seconds": round(time.perf_counter() - t0, 2)}
            _save(table)
            update(1)
            del child
            if harness.device.startswith("cuda"):
                torch.cuda.empty_cache()
    _save(table)
    return table


def _recipe(cfg, steps: int):
    import dataclasses
    return dataclasses.replace(cfg.finetune, steps=steps)


def _save(table: Table) -> None:
    table.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = table.path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table.data, indent=1))
    os.replace(tmp, table.path)


def compare(table: Table, seeds: int, candidates: int, max_latency_ms: float | None = None,
            strategies: tuple[str, ...] = STRATEGIES) -> dict[str, Any]:
    """Every strategy against the table, `seeds` times each, `candidates` architectures per search,
    under a latency budget (default: the table's median latency). Returns per-strategy results:
    test accuracy of the architecture each search selects (best validation accuracy among those it
    evaluated that meet the budget), and the mean best-so-far curve."""
    from slimbench.methods.nas.strategies import Outcome, make_strategy, search
    entries = table.entries
    if not entries:
        raise ConfigError(f"{table.path} holds no architectures yet: build it first")
    cards = tuple(len(c) for c in table.data["choices"])
    by_arch = {tuple(e["arch"]): e for e in entries.values()}
    missing = math.prod(cards) - len(by_arch)
    if missing:
        raise ConfigError(f"{table.path} is incomplete ({missing} architectures missing): finish building it")
    lats = sorted(e["latency_ms"] for e in entries.values())
    budget = max_latency_ms if max_latency_ms is not None else statistics.median(lats)
    feasible = [e for e in entries.values() if e["latency_ms"] <= budget]
    if not feasible:
        raise ConfigError(f"no architecture of the table meets max_latency_ms={budget} "
                          f"(fastest: {lats[0]:.4g} ms)")
    oracle = max(feasible, key=lambda e: (e["test_accuracy"], -e["mflops"]))
    val_oracle = max(feasible, key=lambda e: (e["val_accuracy"], -e["mflops"]))

    def lookup(arch, _index) -> Outcome:
        e = by_arch[arch]
        if e["latency_ms"] > budget:
            return Outcome(None, e["latency_ms"], trained=False)
        return Outcome(e["val_accuracy"], e["latency_ms"], extra=e)

    out: dict[str, Any] = {}
    for name in strategies:
        finals, curves = [], []
        for seed in range(seeds):
            steps = search(make_strategy(name, cards, seed, candidates=candidates), lookup, candidates)
            best: dict[str, Any] | None = None
            curve = []
            for s in steps:
                if s.repeat or not s.outcome.trained:
                    continue
                e = s.outcome.extra
                if best is None or (e["val_accuracy"], -e["mflops"]) > (best["val_accuracy"], -best["mflops"]):
                    best = e
                curve.append(best["test_accuracy"])
            finals.append(best["test_accuracy"] if best else float("nan"))
            curves.append(curve)
        out[name] = {"test_accuracy": _mean_ci(finals), "per_seed": finals,
                     "curve": [statistics.fmean(c[i] for c in curves if len(c) > i)
                               for i in range(max(len(c) for c in curves))]}
    return {"latency_budget_ms": budget, "candidates": candidates, "seeds": seeds,
            "architectures": len(entries), "feasible": len(feasible),
            "oracle_test_accuracy": oracle["test_accuracy"], "best_val_arch_test_accuracy": val_oracle["test_accuracy"],
            "strategies": out}


def _mean_ci(xs: list[float]) -> dict[str, float]:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return {"mean": float("nan"), "ci95": float("nan"), "n": 0}
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return {"mean": statistics.fmean(xs), "ci95": 1.96 * sd / math.sqrt(len(xs)), "n": len(xs)}


def report(table: Table, result: dict[str, Any], out_dir: Path) -> list[Path]:
    """The comparison as Markdown, JSON and an SVG plot (mean test accuracy of the incumbent vs
    candidates evaluated) under `out_dir`."""
    from slimbench.leaderboard.plots import trace_svg

    d = table.data
    stem = f"nas-table-{d['task']}-{d['profile']}-{d['space']}-c{result['candidates']}"
    out_dir.mkdir(parents=True, exist_ok=True)
    strat = result["strategies"]
    rand = strat.get("random", {}).get("test_accuracy", {}).get("mean", float("nan"))
    lines = [f"# nas-table: {d['task']} ({d['profile']} profile), space `{d['space']}`", "",
             f"{result['architectures']} architectures, each trained once for {d['proxy_steps']} proxy steps from the "
             f"baseline; device {d['device']}. Latency budget {result['latency_budget_ms']:.4g} ms at batch 1 "
             f"({result['feasible']} architectures meet it). Each search evaluates {result['candidates']} "
             f"architectures, sees validation accuracy and latency only, and selects the best validation accuracy "
             f"under the budget; the table reports that architecture's test accuracy, mean ± 95% CI over "
             f"{result['seeds']} seeds.", "",
             f"Best test accuracy under the budget (oracle): {100 * result['oracle_test_accuracy']:.2f}%; test "
             f"accuracy of the best-validation architecture under the budget: "
             f"{100 * result['best_val_arch_test_accuracy']:.2f}%.", "",
             "| strategy | test accuracy % (mean ± CI) | vs random (pp) |", "|---|---|---|"]
    for name, r in strat.items():
        m = r["test_accuracy"]
        delta = "" if name == "random" else f"{100 * (m['mean'] - rand):+.2f}"
        lines.append(f"| {name} | {100 * m['mean']:.2f} ± {100 * m['ci95']:.2f} | {delta} |")
    svg = trace_svg({n: [(i + 1, y) for i, y in enumerate(r["curve"])] for n, r in strat.items()},
                    f"{d['task']}: test accuracy of the incumbent (mean of {result['seeds']} seeds)",
                    "architectures evaluated", "test accuracy %")
    style = ("<style>.axes line{stroke:#57606a}.grid{stroke:#e1e4e8}text{font-family:sans-serif}"
             ".tick{font-size:10px;text-anchor:middle}.tick.y{text-anchor:end}.axis-label{font-size:11px;"
             "text-anchor:middle}.plot-title{font-size:12px;font-weight:bold}.legend{font-size:11px}</style>")
    head, sep, rest = svg.partition(">")  # a standalone file: its namespace and the site's plot styles
    svg = head.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1) + sep + style + rest
    paths = [out_dir / f"{stem}.md", out_dir / f"{stem}.json", out_dir / f"{stem}.svg"]
    lines += ["", f"![trace]({paths[2].name})", ""]
    paths[0].write_text("\n".join(lines))
    paths[1].write_text(json.dumps({"table": {k: v for k, v in d.items() if k != "entries"}, **result}, indent=1))
    paths[2].write_text(svg)
    return paths


def configure(p) -> None:
    """The `slimbench nas-table` arguments."""
    p.add_argument("--task", default="fashion-mnist", help="task (default fashion-mnist)")
    p.add_argument("--profile", choices=("quick", "default", "full"), default="default",
                   help="budgets (proxy steps per architecture) and the space: quick uses the tiny "
                        "`<kind>-table-quick` space, the others `<kind>-table`")
    p.add_argument("--space", help="a built-in space name or YAML file instead of the profile's table space")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for latency (default: all cores)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="baseline and cost caches; the table goes to RESULTS_DIR/nas-table/")
    p.add_argument("--seeds", type=int, default=10, help="seeds per strategy in the comparison (default 10)")
    p.add_argument("--candidates", type=int,
                   help="architectures each search evaluates (default: the task's search budget)")
    p.add_argument("--max-latency-ms", type=float, help="latency budget (default: the table's median latency)")
    p.add_argument("--strategy", action="append", choices=STRATEGIES,
                   help="strategies to compare (default: all); repeat for several")
    p.add_argument("--out", type=Path, help="where the comparison report goes (default RESULTS_DIR/benchmarks)")
    p.add_argument("--no-compare", action="store_true", help="only build the table")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def cmd(args) -> int:
    """Build (or finish) the table, then compare every strategy on it."""
    from slimbench.suite.progress import ProgressConfig
    from slimbench.suite.runner import Harness, RunOptions
    from slimbench.tasks import get_task

    if args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds} must be >= 1")
    if args.candidates is not None and args.candidates < 1:
        raise ConfigError(f"--candidates {args.candidates} must be >= 1")
    task = get_task(args.task, args.profile)
    if args.space is not None:
        from slimbench.methods.nas.space import load_space
        load_space(args.space)  # a bad space file fails before the baseline is trained
    harness = Harness(RunOptions(profile=args.profile, device=args.device, threads=args.threads,
                                 results_dir=args.results_dir,
                                 progress=ProgressConfig(False if args.no_progress else None)))
    t0 = time.perf_counter()
    table = build_table(task, harness, args.space)
    print(f"table: {len(table.entries)} architectures in {table.path} ({time.perf_counter() - t0:.0f} s this call)")
    if args.no_compare:
        return 0
    candidates = args.candidates or task.config.search.candidates
    result = compare(table, args.seeds, candidates, args.max_latency_ms, tuple(args.strategy or STRATEGIES))
    if candidates >= result["feasible"]:
        print(f"note: {candidates} candidates cover every architecture under the latency budget "
              f"({result['feasible']}): every strategy can find the best; pass --candidates below that")
    for path in report(table, result, args.out or args.results_dir / "benchmarks"):
        print(f"wrote {path}")
    for name, r in result["strategies"].items():
        m = r["test_accuracy"]
        print(f"  {name:10s} {100 * m['mean']:.2f} ± {100 * m['ci95']:.2f}  (test accuracy %, {m['n']} seeds)")
    return 0
