"""`slimbench plugin check` and `slimbench plugin new`: third-party methods, checked and started.

`check` runs each method of a plugin through the conformance suite (`suite.conformance`) in a
subprocess of its own, under a timeout, so a plugin that hangs, kills the interpreter or floods
stdout gets a failure that says so, never a hung or crashed check. The worker writes its result
to a file; stdout is not parsed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

GROUP = "slimbench.methods"
NO_CHECK_RAN = 3  # exit code: every method declined every task, so nothing was verified
DEFAULT_TASKS = ("toy-cnn", "toy-transformer")


def configure(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("check", help="run a plugin's methods through the conformance suite, each in a subprocess",
                       description="TARGET is a method name (built-in or a plugin's entry point), an installed "
                                   "distribution (all its slimbench.methods entry points), or an entry-point value "
                                   "module:attr (importable from here; not installed).")
    c.add_argument("target", metavar="TARGET")
    c.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated tasks: the conformance tasks (default {','.join(DEFAULT_TASKS)}: tiny, "
                        "trained in seconds) and/or standard tasks, run at the quick profile with their baselines "
                        "from the cache under --results-dir (trained there once if missing)")
    c.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="where the standard tasks' baseline cache lives (default results/)")
    c.add_argument("--timeout", type=float, default=600.0, help="seconds per method before it is killed (default 600)")
    c.add_argument("--json", action="store_true", help="print the report as JSON (for CI)")
    c.epilog = ("exit codes: 0 every method passed on the tasks it supports, 1 a check failed, 2 TARGET names "
                f"nothing, {NO_CHECK_RAN} no check ran (every method declined every task as unsupported)")
    n = sub.add_parser("new", help="write a ready plugin package: pyproject with the entry point, config, method, "
                                   "README and a conformance test")
    n.add_argument("name", metavar="NAME", help="the method name users will type, e.g. myq or mylab.prune")
    n.add_argument("--dir", type=Path, default=Path("."), help="where to create the package folder (default .)")


def cmd(args) -> int:
    if args.action == "new":
        from slimbench.suite.plugin_template import write_plugin
        try:
            root = write_plugin(args.name, args.dir)
        except ValueError as exc:
            print(f"slimbench plugin new: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {root}/ (install: pip install -e {root}; check: slimbench plugin check {args.name})")
        return 0
    return check(args)


# ---------------------------------------------------------------- check

@dataclass
class Target:
    name: str | None   # the registry name, or None for a bare module:attr
    entry: str | None  # an entry-point value to import in the worker, or None (load by name)


def resolve(target: str) -> list[Target]:
    """The methods TARGET stands for, from package metadata alone (no plugin code is imported here)."""
    from slimbench.core.config import ConfigError

    eps = list(metadata.entry_points(group=GROUP))
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", target):
        named = [ep.name for ep in eps if ep.value == target]
        return [Target(named[0] if named else None, target)]
    if any(ep.name == target for ep in eps):
        return [Target(target, None)]
    try:
        dist = metadata.distribution(target)
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        mine = [ep for ep in dist.entry_points if ep.group == GROUP]
        if not mine:
            raise ConfigError(f"the distribution {target!r} declares no {GROUP!r} entry point")
        return [Target(ep.name, None) for ep in mine]
    from slimbench.methods import METHODS

    if target in METHODS:
        return [Target(target, None)]
    plugins = sorted({ep.dist.name for ep in eps if ep.dist is not None} | {ep.name for ep in eps})
    raise ConfigError(f"no method, {GROUP} entry point or installed distribution named {target!r}; give a method "
                      f"name, a distribution or module:attr (installed plugins: {', '.join(plugins) or 'none'})")


def run_one(t: Target, tasks: list[str], timeout: float, cache: Path = Path("results/cache")) -> dict[str, Any]:
    """One method's checks in a fresh interpreter; the outcome as a dict (status pass | fail | unsupported)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", "slimbench.suite.conformance.worker", "--out", str(out),
                "--cache", str(Path(cache).resolve())]
        argv += ["--name", t.name] if t.name else []
        argv += ["--entry", t.entry] if t.entry else []
        for task in tasks:
            argv += ["--task", task]
        # the worker imports what this process can: its sys.path, not only the installed packages
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        t0 = time.time()
        errfile = Path(tmp) / "stderr.txt"  # a file: a plugin flooding stderr cannot fill our memory or a pipe
        with errfile.open("wb") as errs:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errs, env=env, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
                problem = None if proc.returncode in (0, 1) else _death(proc.returncode)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended at the last moment
                    pass
                proc.wait()
                problem = f"timed out after {timeout:g} s and was killed (a hang in the method?)"
        seconds = round(time.time() - t0, 1)
        with errfile.open("rb") as f:
            f.seek(max(0, errfile.stat().st_size - 4000))
            err = f.read().decode("utf-8", errors="replace")
        try:
            result = json.loads(out.read_text())
        except (OSError, ValueError):
            result = {"method": t.name or t.entry, "config": None, "tasks": []}
    result["seconds"], result["entry"] = seconds, t.entry
    if problem:
        tail = "\n".join((err or "").strip().splitlines()[-8:])
        result["error"] = problem + (f"; its last words:\n{tail}" if tail else "")
    result["status"] = _status(result, tasks)
    return result


def _death(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the interpreter was killed by {name}"
    return f"the interpreter exited with code {code} before reporting"


def _status(result: dict[str, Any], tasks: list[str]) -> str:
    reports = result.get("tasks") or []
    if result.get("error") or result.get("config") not in ("pass",) or len(reports) < len(tasks) \
            or any(r.get("failure") for r in reports):
        return "fail"
    if reports and all(r.get("unsupported") for r in reports):
        return "unsupported"
    return "pass"


def check(args) -> int:
    from slimbench.core.config import ConfigError
    from slimbench.suite.conformance import TASK_FILES

    from slimbench.tasks import list_tasks

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    known = [*TASK_FILES, *list_tasks()]
    bad = [t for t in tasks if t not in known]
    if bad or not tasks:
        raise ConfigError(f"unknown task(s) {', '.join(map(repr, bad)) or '(none given)'}; choose from "
                          f"{', '.join(known)}")
    if args.timeout <= 0:
        raise ConfigError(f"--timeout {args.timeout} must be > 0 seconds")
    targets = resolve(args.target)
    results = []
    for t in targets:
        if not args.json:
            print(f"checking {t.name or t.entry} on {', '.join(tasks)} ...", flush=True)
        results.append(run_one(t, tasks, args.timeout, Path(args.results_dir) / "cache"))
        if not args.json:
            print(render(results[-1]), flush=True)
    ok = all(r["status"] != "fail" for r in results)
    checked = any(r["status"] == "pass" for r in results)  # at least one method ran its checks somewhere
    if args.json:
        print(json.dumps({"target": args.target, "tasks": tasks, "passed": ok and checked, "checked": checked,
                          "methods": results}, indent=1))
    elif ok and not checked:
        print(f"{args.target}: NO CHECK RAN: every method declined every task ({', '.join(tasks)}) as unsupported; "
              "nothing was verified (give --tasks it supports)")
    else:
        failed = sum(r["status"] == "fail" for r in results)
        print(f"{args.target}: {len(results) - failed} of {len(results)} method(s) passed" +
              ("" if ok else f"; {failed} FAILED"))
    return 1 if not ok else 0 if checked else NO_CHECK_RAN


def render(r: dict[str, Any]) -> str:
    lines = [f"  {r.get('method')}: {r['status'].upper()} ({r.get('seconds')} s)"]
    if r.get("error"):
        lines += ["    " + line for line in str(r["error"]).splitlines()[:12]]
    if r.get("config") not in (None, "pass"):
        lines.append(f"    config: FAIL: {r['config']}")
    elif r.get("config") == "pass":
        lines.append("    config: pass")
    for rep in r.get("tasks") or []:
        if rep.get("unsupported"):
            lines.append(f"    {rep['task']}: unsupported: {rep['unsupported']}")
            continue
        checks = ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in rep.get("passed", {}).items())
        lines.append(f"    {rep['task']}: {checks}")
        if rep.get("failure"):
            lines += ["      " + line for line in str(rep["failure"]).splitlines()[:10]]
    return "\n".join(lines)
