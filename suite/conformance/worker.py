"""One method's conformance checks, in a process of its own (what `slimbench plugin check` starts).

    python -m slimbench.suite.conformance.worker (--name NAME | --entry module:attr) --task T ... --out FILE

The result is written as JSON to FILE, never to stdout: a plugin may print anything, and the
parent must still be able to read what was found. A plugin that hangs or kills the interpreter
leaves no file, and the parent reports that instead.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any


def load(name: str | None, entry: str | None) -> str:
    """The registry name of the method to check: `name` as registered (built-in or entry point), or
    the object an entry-point value `module:attr` names, registered under the method name given
    (else `plugin`)."""
    from slimbench.methods import METHODS

    if entry is None:
        METHODS.get(name)  # raises with the load error of a broken plugin, or the valid names
        return name
    module, _, attr = entry.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    key = name or "plugin"
    METHODS.register(key)(obj)
    return key


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name")
    ap.add_argument("--entry")
    ap.add_argument("--task", action="append", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cache", type=Path, default=Path("results/cache"), help="baseline cache for standard tasks")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"method": args.name or args.entry, "config": None, "tasks": [], "error": None}

    def save() -> None:
        args.out.write_text(json.dumps(result, default=str))

    t0 = time.time()
    try:
        name = load(args.name, args.entry)
        result["method"] = name
        from slimbench.suite.conformance import config_checks
        result["config"] = config_checks(name) or "pass"
    except Exception as exc:
        result["error"] = f"the method could not be loaded: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-4)}"
        save()
        return 1
    save()
    from slimbench.methods import create_method
    from slimbench.suite.conformance import TASK_FILES, register_tasks, run_checks, trained_baseline
    from slimbench.suite.measure.isolated import MeasureWorker
    from slimbench.tasks import get_task

    register_tasks()
    fresh = MeasureWorker()  # the self-contained check's fresh interpreter, shared by the tasks
    for task_name in args.task:
        if task_name in TASK_FILES:  # a conformance task: its baseline trains in seconds
            task = get_task(task_name, "default")
            baseline = trained_baseline(task)
        else:  # a standard task at the quick profile: its baseline from the suite's cache (trained once)
            from slimbench.suite.baselines import get_baseline
            from slimbench.suite.trainer import Trainer

            task = get_task(task_name, "quick")
            baseline = get_baseline(task, Trainer(), args.cache, lambda msg: print(msg, file=sys.stderr))[0]
        print(f"[{name}] {task_name}: the checks", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            report = run_checks(lambda: create_method(name), task, baseline, Path(tmp), fresh)
        result["tasks"].append(report.as_dict())
        save()  # after every task: a later crash keeps what was found
    fresh.close()
    result["seconds"] = round(time.time() - t0, 1)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
