"""`slimbench` command line: run, list, tasks check, results, nas-table, leaderboard.

Heavy modules (torch, mlflow, timm, transformers) are imported inside the commands, so
`slimbench --help` stays fast.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

PROFILES = ("quick", "default", "full")


def _csv(values: list[str] | None) -> list[str]:
    return [v.strip() for item in (values or []) for v in item.split(",") if v.strip()]


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run methods on tasks and track each run in MLflow",
                       description="Run compression methods on standard tasks. With no arguments: the "
                                   "embedded default set (each family's main methods beside their controls, "
                                   "operating-point sweeps on fashion-mnist; `slimbench list default` shows it) "
                                   "on the tasks it lists (those that run offline), default profile, on the CPU, then "
                                   "the leaderboard. "
                                   "A task's baseline row (what every Δ and speedup is measured against) is "
                                   "measured first when the results store has none for this device and profile.")
    p.add_argument("--tasks", action="append", metavar="NAME[,NAME]",
                   help="tasks (default: those of the embedded default, which run offline on a CPU: "
                        "`slimbench list default`; `all`: every registered task)")
    p.add_argument("--method", action="append", metavar="SPEC",
                   help="method spec NAME[:key=value,...], NAME:@FILE.yaml[,key=value] or NAME:{json}; repeat "
                        "for several; `all`: every built-in method at its default config (default: the default "
                        "set, see `slimbench list default`; plugins run when named)")
    p.add_argument("--method-config", action="append", metavar="FILE",
                   help="a YAML/JSON file of config fields naming its method (`method: NAME`); recorded verbatim "
                        "with the run; repeat for several")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="run seeds 0..N-1 (default: each method's own default, 1 for most; 3 for distillation, "
                        "whose gains are often within seed noise)")
    p.add_argument("--seed", type=int, action="append", metavar="S", help="explicit seed(s), instead of --seeds")
    p.add_argument("--profile", choices=PROFILES, default="default",
                   help="quick: CI-sized; default: the embedded default; full: paper-grade budgets (GPU)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for latency (default: all cores)")
    p.add_argument("--compile", action="store_true",
                   help="time every row, the baseline included, as torch.compile(model) (default mode) instead "
                        "of eager; compiled rows are compared only with compiled rows (their own section)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="MLflow database, artifacts and baseline cache (default results/)")
    p.add_argument("--experiment", default="slimbench", help="MLflow experiment name")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else RESULTS_DIR/mlflow.db)")
    p.add_argument("--task-file", action="append", default=[], metavar="YAML",
                   help="register a task from its YAML file (under the name it declares), e.g. a task of your own")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: one run after another in this process (default); ray: the grid as Ray tasks, "
                        "each asking for its CPU threads or one GPU, logging to one MLflow server")
    p.add_argument("--address", default=None,
                   help="--executor ray: the Ray cluster (default: $RAY_ADDRESS, else a local Ray for this run)")
    p.add_argument("--retries", type=int, default=2,
                   help="--executor ray: re-submissions of a run whose worker died or timed out (default 2)")
    p.add_argument("--run-timeout", type=float, default=None, metavar="S",
                   help="--executor ray: seconds one run may take before it is killed (and retried)")
    p.add_argument("--force", action="store_true", help="re-run (task, config, seed) triples already done")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print the result rows as JSON")
    p.add_argument("--no-leaderboard", action="store_true",
                   help="skip building the leaderboard site (RESULTS_DIR/leaderboard/) from the store at the end")


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list tasks, methods with their config fields, and the default set")
    p.add_argument("what", nargs="?", choices=("all", "tasks", "methods", "default"), default="all",
                   help="default: the set `slimbench run` runs when no method is named")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _add_tasks(sub) -> None:
    p = sub.add_parser("tasks", help="check that tasks' data and weights are on this machine (`tasks check NAME`)")
    actions = p.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    c = actions.add_parser("check", help="are a task's data, tokenizer and weights here? (downloads nothing)",
                           description="Before a long run: look for the data, tokenizer, model weights and baseline "
                                       "checkpoint each task needs (folders, the hub and datasets caches, installed "
                                       "packages) without downloading anything, and say where it looked and how to "
                                       "provide what is missing. Exit status 1 when something is missing.")
    c.add_argument("names", nargs="*", metavar="NAME", help="tasks (default: every registered task)")
    c.add_argument("--profile", choices=PROFILES, default="default", help="the profile whose data args are checked")
    c.add_argument("--task-file", action="append", default=[], metavar="YAML",
                   help="register a task from its YAML file (under the name it declares) and check it")
    c.add_argument("--json", action="store_true", help="machine-readable output")


def _add_results(sub) -> None:
    p = sub.add_parser("results", help="show tracked runs from MLflow as a table")
    p.add_argument("--task", help="only this task")
    p.add_argument("--method", help="only this method name")
    p.add_argument("--status", help="only this status (FINISHED, FAILED, UNSUPPORTED, KILLED)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--experiment", default="slimbench")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    from slimbench.suite import __version__

    parser = argparse.ArgumentParser(
        prog="slimbench", description="Benchmark neural-network compression methods: honest sizes, "
        "real kernels, one leaderboard. Runs are tracked in MLflow (default: results/mlflow.db; "
        "set MLFLOW_TRACKING_URI for a server).")
    parser.add_argument("--version", action="version", version=f"slimbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    _add_list(sub)
    _add_tasks(sub)
    _add_results(sub)
    nt = sub.add_parser("nas-table", help="tabular NAS benchmark: evaluate every architecture of a small space once, "
                                          "then compare search strategies on it with many seeds",
                        description="Evaluate every architecture of a small declared search space once (proxy "
                                    "budget, validation and test accuracy, FLOPs, measured latency) into a cached "
                                    "table, then run every search strategy against it with many seeds.")
    from slimbench.suite.nastable import configure as nas_table_args
    nas_table_args(nt)
    lb = sub.add_parser("leaderboard", help="build the static leaderboard site and exports from MLflow runs")
    from slimbench.leaderboard.command import configure
    configure(lb)
    ex = sub.add_parser("export", help="write selected runs (records, optionally artifacts) into one bundle file")
    from slimbench.suite.export import configure as export_args
    export_args(ex)
    ve = sub.add_parser("verify", help="re-measure the artifacts of bundles on this machine and compare with "
                                       "what their records claim")
    from slimbench.suite.verify import configure as verify_args
    verify_args(ve)
    pl = sub.add_parser("plugin", help="check a third-party method against the conformance suite, or start a new "
                                       "plugin package")
    from slimbench.suite.plugin import configure as plugin_args
    plugin_args(pl)
    return parser


def cmd_run(args) -> int:
    from slimbench.core.config import ConfigError, spec_from_file
    from slimbench.methods import METHODS
    from slimbench.suite.defaults import ALL, default_tasks, specs_for
    from slimbench.suite.progress import ProgressConfig
    from slimbench.suite.runner import Harness, RunOptions, plan
    from slimbench.tasks import list_tasks

    from slimbench.suite.runner import register_task_files

    own = register_task_files(tuple(args.task_file))
    tasks = _csv(args.tasks) or own or default_tasks()
    if tasks == [ALL]:
        tasks = list_tasks()
    named = (args.method or []) + [spec_from_file(f) for f in args.method_config or []]
    if named:  # `all`: every built-in method at its default config, beside whatever else is named
        builtins = [n for n in METHODS.names() if METHODS.origin(n).startswith("slimbench.")]
        methods = list(dict.fromkeys(x for m in named for x in (builtins if m == ALL else [m])))
    else:
        methods = {t: specs_for(t) for t in tasks}
    seeds = args.seed if args.seed else (list(range(args.seeds)) if args.seeds is not None else None)
    if not args.seed and args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds} must be >= 1")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be >= 1")
    if args.retries < 0 or (args.run_timeout is not None and args.run_timeout <= 0):
        raise ConfigError(f"--retries {args.retries} must be >= 0 and --run-timeout {args.run_timeout} > 0 seconds")
    specs = plan(tasks, methods, seeds, args.profile)
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    opts = RunOptions(profile=args.profile, device=args.device, threads=args.threads,
                      compile="default" if args.compile else "", results_dir=args.results_dir, force=args.force,
                      experiment=args.experiment, tracking_uri=args.tracking_uri, task_files=tuple(args.task_file),
                      command=" ".join(["slimbench", *map(shlex.quote, sys.argv[1:])]),
                      progress=ProgressConfig(False if args.no_progress else None), log=log)
    with contextlib.ExitStack() as stack:
        if args.executor == "ray":
            opts = _ray_store(opts, stack, args.address)
        harness = stack.enter_context(Harness(opts))
        n_seeds = f"{len(seeds)} seed(s)" if seeds is not None else "each method's default seeds"
        what = (f"{len(methods)} method(s)" if isinstance(methods, list)
                else f"the default set ({', '.join(f'{len(m)} on {t}' for t, m in methods.items())})")
        log(f"{len(specs)} run(s): {len(tasks)} task(s) x {what} x {n_seeds}; "
            f"profile {args.profile}; device {harness.device}; tracking {harness.tracker.uri}; executor {args.executor}")
        if args.executor == "ray":
            from slimbench.suite.distributed import RayOptions, run_ray
            results = run_ray(harness, specs, RayOptions(args.address, args.retries, args.run_timeout))
        else:
            results = harness.run_all(specs)
        code = _report(args, harness, results, log)
        if not args.no_leaderboard:
            _leaderboard(harness, args.results_dir, log)
        return code


def _leaderboard(harness, results_dir: Path, log) -> None:
    """Every run of the store, this one's included, as the static site a user opens next."""
    from slimbench.leaderboard.site import build_site

    runs = harness.tracker.read_records()
    index = build_site(runs, results_dir / "leaderboard", "slimbench leaderboard")
    log(f"leaderboard: {len(runs)} runs from {harness.tracker.uri} -> open {index.resolve().as_uri()} "
        "(Markdown, CSV and JSON beside it)")


def _ray_store(opts, stack, address: str | None):
    """The store Ray workers share: an http(s) server as given (checked before any work), else the local
    SQLite store served by an `mlflow server` for this run."""
    import dataclasses

    from slimbench.core.config import ConfigError
    from slimbench.suite.distributed import LocalServer, check_server
    from slimbench.suite.tracking import Tracker, tracking_uri

    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'slimbench[ray]'") from None
    uri = opts.tracking_uri or tracking_uri(opts.results_dir)
    if uri.startswith(("http://", "https://")):
        check_server(uri)
        return dataclasses.replace(opts, tracking_uri=uri)
    if not uri.startswith("sqlite:"):
        raise ConfigError(f"--executor ray needs an MLflow server or a local SQLite store; got {uri}")
    address = address or os.environ.get("RAY_ADDRESS") or ""
    host = address.split("://", 1)[-1].rpartition(":")[0]
    if address and host not in ("127.0.0.1", "localhost", ""):
        raise ConfigError(f"a Ray cluster at {address} needs a tracking server every node can reach: set "
                          "MLFLOW_TRACKING_URI / --tracking-uri to http://... (a local SQLite store is served on "
                          "127.0.0.1 only)")
    Tracker(uri, opts.experiment, opts.results_dir)  # the experiment, with its artifacts as files beside the database
    server = stack.enter_context(LocalServer(uri, opts.results_dir))
    opts.log(f"serving {uri} at {server.uri} for the Ray workers")
    return dataclasses.replace(opts, tracking_uri=server.uri)


def _report(args, harness, results, log) -> int:
    from slimbench.suite.summary import render, rows_from_records

    records = [r.record if r.record else harness.tracker.record(r.run_id) for r in results if r.run_id]
    rows = rows_from_records(records)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        render(rows, title=f"slimbench run ({args.profile})")
    failed = [r for r in results if r.status == "FAILED"]
    if failed:
        log(f"{len(failed)} run(s) FAILED: " + "; ".join(f"{r.spec.task}/{r.spec.method}: {r.error}" for r in failed))
        return 1
    return 0


def cmd_list(args) -> int:
    from slimbench.core.config import field_specs
    from slimbench.methods import METHODS
    from slimbench.tasks import get_task, list_tasks

    out: dict = {}
    if args.what in ("all", "tasks"):
        out["tasks"] = []
        for name in list_tasks():
            c = get_task(name).config
            out["tasks"].append({"name": name, "kind": c.kind, "metric": c.metric, "description": c.description,
                                 "model": c.model, "train_steps": c.train.steps,
                                 "finetune_steps": c.finetune.steps, "search_candidates": c.search.candidates,
                                 "search_proxy_steps": c.search.proxy_steps,
                                 "latency_batch_sizes": list(c.latency_batch_sizes)})
    if args.what in ("all", "methods"):
        out["methods"] = [{"name": n, "family": (cls := METHODS.get(n)).family, "description": cls.description,
                           "simulated": cls.simulated, "origin": METHODS.origin(n),
                           "config": field_specs(cls.config_cls)} for n in METHODS.names()]
        if METHODS.plugin_errors:
            out["plugin_errors"] = METHODS.plugin_errors
    if args.what in ("all", "default"):
        from slimbench.suite.defaults import DEFAULT_FILE, entries

        out["default"] = [vars(e) for e in entries()]
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    if "tasks" in out:
        t = Table(title="tasks")
        for col in ("name", "kind", "metric", "train steps", "finetune steps", "search", "latency batches",
                    "description"):
            t.add_column(col)
        for x in out["tasks"]:
            t.add_row(escape(x["name"]), x["kind"], x["metric"], str(x["train_steps"]), str(x["finetune_steps"]),
                      f"{x['search_candidates']} x {x['search_proxy_steps']}",
                      ",".join(map(str, x["latency_batch_sizes"])), escape(x["description"].split(". ")[0]))
        console.print(t)
    if "methods" in out:
        t = Table(title="methods (use --method NAME:key=value,...)")
        for col in ("name", "family", "config fields (default)", "description"):
            t.add_column(col)
        for x in out["methods"]:
            fields = "\n".join(f"{f['name']}: {f['type']} = {f['default']!r}" for f in x["config"]) or "—"
            t.add_row(escape(x["name"]), x["family"], escape(fields), escape(x["description"]))
        console.print(t)
        for name, err in out.get("plugin_errors", {}).items():
            console.print(f"[yellow]plugin {escape(repr(name))} failed to load: {escape(err)}[/yellow]")
    if "default" in out:
        t = Table(title=f"default set: `slimbench run` with no --method ({DEFAULT_FILE.name}; --method all: every "
                        "built-in)")
        for col in ("task", "family", "main", "control"):
            t.add_column(col)
        groups: dict[tuple[str, str], dict[str, list[str]]] = {}
        for e in out["default"]:
            groups.setdefault((e["task"], e["family"]), {"main": [], "control": []})[e["role"]].append(e["spec"])
        for (task, family), roles in groups.items():
            t.add_row(escape(task), family, escape("\n".join(roles["main"])), escape("\n".join(roles["control"])))
        console.print(t)
    return 0


def cmd_tasks(args) -> int:
    """`slimbench tasks check`: 0 when every checked task has what it needs here, else 1."""
    import dataclasses

    from slimbench.suite.runner import register_task_files
    from slimbench.tasks import get_task, list_tasks
    from slimbench.tasks.check import check_task, missing, render

    own = register_task_files(tuple(args.task_file))
    results = {}
    for name in args.names or own or list_tasks():
        task = get_task(name, args.profile)
        results[name] = (task, check_task(task))
    if args.json:
        print(json.dumps({n: [dataclasses.asdict(f) for f in found] for n, (_, found) in results.items()}, indent=2))
    else:
        print("\n\n".join(render(task, found) for task, found in results.values()))
    lacking = [n for n, (_, found) in results.items() if missing(found)]
    if lacking:
        print(f"slimbench tasks check: missing data or weights for {', '.join(lacking)}", file=sys.stderr)
    return 1 if lacking else 0


def cmd_results(args) -> int:
    from slimbench.suite.summary import render, rows_from_records
    from slimbench.suite.tracking import Tracker

    tracker = Tracker(None, args.experiment, args.results_dir, create=False)
    rows = rows_from_records(tracker.read_records(task=args.task, method=args.method, status=args.status))
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        render(rows, title=f"slimbench results ({tracker.uri})")
    return 0


def cmd_leaderboard(args) -> int:
    """Read the runs of a store and build (or publish) the leaderboard site from them."""
    action = getattr(args, "action", "build") or "build"
    out = getattr(args, "out", None)
    if action == "publish" and out is None:
        print("slimbench leaderboard publish: --out DIR is required", file=sys.stderr)
        return 2
    from slimbench.leaderboard.site import build_site, publish
    from slimbench.suite.tracking import EXPERIMENT, Tracker

    results_dir = Path(getattr(args, "results_dir", None) or "results")
    sources, rejected = getattr(args, "sources", None), []
    if sources:
        from slimbench.suite.export import read_sources
        runs, rejected = read_sources(sources, getattr(args, "experiment", None))
        where = f"{len(sources)} source(s)"
    else:
        tracker = Tracker(uri=getattr(args, "tracking_uri", None),
                          experiment=getattr(args, "experiment", None) or EXPERIMENT, results_dir=results_dir,
                          create=False)
        runs, where = tracker.read_records(), tracker.uri
    from slimbench.suite.verdicts import attach, read_record
    verified = getattr(args, "verified", None) or []
    counts = attach(runs, [read_record(path) for path in verified])  # also drops verdicts runs carry themselves
    if verified:
        stale = counts.pop("stale")
        print("verification: " + ", ".join(f"{n} {v}" for v, n in counts.items())
              + (f"; {stale} run(s) changed since their verdict: unverified" if stale else ""))
    title = getattr(args, "title", None) or "slimbench leaderboard"
    target = Path(out) if out is not None else results_dir / "leaderboard"
    index = (publish if action == "publish" else build_site)(runs, target, title)
    print(f"leaderboard: {len(runs)} runs from {where} -> {index}")
    for line in rejected:
        print(f"slimbench leaderboard: {line}", file=sys.stderr)
    return 1 if rejected else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from slimbench.core.config import ConfigError
    from slimbench.core.registry import UnknownNameError

    from slimbench.suite.nastable import cmd as cmd_nas_table
    from slimbench.suite.export import cmd as cmd_export
    from slimbench.suite.plugin import cmd as cmd_plugin
    from slimbench.suite.verify import cmd as cmd_verify

    handlers = {"run": cmd_run, "list": cmd_list, "tasks": cmd_tasks, "results": cmd_results,
                "leaderboard": cmd_leaderboard, "nas-table": cmd_nas_table, "plugin": cmd_plugin, "export": cmd_export,
                "verify": cmd_verify}
    try:
        return handlers[args.command](args)
    except (ConfigError, UnknownNameError) as exc:
        print(f"slimbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimbench: interrupted; finished runs are kept in MLflow, re-run to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
