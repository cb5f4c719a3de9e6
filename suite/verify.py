"""`slimbench verify BUNDLE [BUNDLE...]`: re-measure every finished run's artifact here and compare
with what its record claims.

A bundle's manifest hashes detect damage, not edits: anyone can change a run.json and rewrite its
hash. What a row's figures rest on is its artifact, so this command measures it again, on this
machine, exactly as the harness does (`measure.isolated.MeasureWorker`: reloaded from its bytes in
a process that never ran `compress`): size from the bytes, accuracy and balanced accuracy on the
task's test split, parameters, sparsity, FLOPs and BOPs, and (`--latency`) CPU latency. The
decisions and the record format are `suite.verdicts`. A run that cannot be re-measured here (no
artifact, a task or method not installed, another task definition or method version) is
"cannot verify", never verified. A verified run's figures are what its bytes deliver; how the bytes
were made (the budget, the data a method saw) is not something re-measuring can check.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from slimbench.suite import verdicts
from slimbench.suite.progress import ProgressConfig

ACCURACY_HELP = ("largest |claimed - measured| accepted for accuracy, as a fraction (default: one test example, "
                 "1/eval_examples, for runs evaluated on a CPU: the same bytes give the same predictions on the "
                 "same kernels, and another CPU's float rounding flips at most a prediction on a decision boundary; "
                 "0.002 at least for runs evaluated on a GPU, whose TF32 and fp16 kernels round differently). "
                 "Balanced accuracy gets the same number of test examples, weighed by the smallest class")


def configure(p) -> None:
    p.description = ("Re-measure every FINISHED run of the bundles that carries its artifact (export --artifacts) "
                     "on this machine, as the harness measures (reloaded from its bytes, in a process that "
                     "never ran the method): size, parameters, sparsity, FLOPs, BOPs, accuracy and balanced "
                     "accuracy on the task's test split; latency with --latency. Each run is verified, a "
                     "MISMATCH (claimed vs measured shown) or 'cannot verify' with the reason. A bundle's "
                     "SHA-256 manifest only detects damage in transit or storage (anyone can rewrite it); this "
                     "is what checks the figures. Exit 0: every verifiable run verified; 1: a mismatch; 2: a "
                     "bundle unreadable or rejected (the reason on stderr; 2 wins over 1).")
    p.add_argument("bundles", nargs="+", type=Path, metavar="BUNDLE", help="bundles written by `slimbench export`")
    p.add_argument("--accuracy-tol", type=float, default=None, metavar="FRAC", help=ACCURACY_HELP)
    p.add_argument("--latency", action="store_true",
                   help="also time each model on this machine's CPU (the run's thread count and timing profile); "
                        "compared only when the run's device label is this machine's and the machine is idle "
                        "(load average below its free cores), else shown beside the claim")
    p.add_argument("--latency-tol", type=float, default=0.5, metavar="FRAC",
                   help="--latency: medians may differ by a factor 1 + FRAC either way (default 0.5: timings on a "
                        "shared machine move by tens of percent; an invented speedup or a slowed baseline is larger)")
    p.add_argument("--task-file", action="append", default=[], metavar="YAML",
                   help="register a task from its YAML file, for runs of a task of your own")
    p.add_argument("--out", type=Path, default=None,
                   help="write the verification record (JSON) here, for `slimbench leaderboard --verified FILE`")
    p.add_argument("--json", action="store_true", help="print the verification record as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


@dataclass(frozen=True)
class VerifyOptions:
    accuracy_tol: float | None = None  # None: `verdicts.accuracy_tolerance`'s default
    latency: bool = False
    latency_tol: float = 0.5
    progress: ProgressConfig = field(default_factory=lambda: ProgressConfig(False))


def cmd(args) -> int:
    from slimbench.core.config import ConfigError
    from slimbench.suite.measure.isolated import MeasureWorker
    from slimbench.suite.runner import register_task_files

    if args.accuracy_tol is not None and not 0 <= args.accuracy_tol < 1:
        raise ConfigError(f"--accuracy-tol {args.accuracy_tol}: a fraction in [0, 1)")
    if not args.latency_tol >= 0:
        raise ConfigError(f"--latency-tol {args.latency_tol}: must be >= 0 (a factor 1 + FRAC)")
    register_task_files(tuple(args.task_file))
    opts = VerifyOptions(args.accuracy_tol, args.latency, args.latency_tol,
                         ProgressConfig(False if args.no_progress else None))
    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    with MeasureWorker() as worker:
        doc = verify_bundles(args.bundles, opts, worker, log)
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True, default=str))
    else:
        render(doc)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str), encoding="utf-8")
        log(f"verification record -> {args.out}")
    return exit_code(doc)


def exit_code(doc: dict[str, Any]) -> int:
    """2 when a bundle was rejected, else 1 when a run mismatched, else 0."""
    if any(b["rejected"] for b in doc["bundles"]):
        return 2
    return 1 if any(r["verdict"] == verdicts.MISMATCH for r in doc["runs"]) else 0


def verify_bundles(paths: list[Path], opts: VerifyOptions, worker, log: Callable[[str], None] = print
                   ) -> dict[str, Any]:
    """The verification record of `paths` (see `suite.verdicts`), measured through `worker`."""
    from slimbench.leaderboard.bundle import BundleError, extract_artifacts
    from slimbench.suite import provenance
    from slimbench.suite.progress import bar

    checker = _Checker(worker, opts)
    bundles, runs = [], []
    with tempfile.TemporaryDirectory(prefix="slimbench-verify-") as tmp:
        for i, path in enumerate(map(Path, paths)):
            dest = Path(tmp) / str(i)
            dest.mkdir()
            try:
                if not path.is_file():
                    raise BundleError("no such file")
                bundle, folders = extract_artifacts(path, dest)
            except BundleError as exc:
                bundles.append({"path": str(path), "rejected": str(exc), "runs": 0, "finished": 0})
                print(f"slimbench verify: {path}: rejected: {exc}", file=sys.stderr)
                continue
            todo = [(r, f) for r, f in zip(bundle.runs, folders) if r.get("status") == "FINISHED"]
            bundles.append({"path": str(path), "rejected": None, "runs": len(bundle.runs), "finished": len(todo)})
            log(f"{path}: {len(bundle.runs)} run(s), {len(todo)} finished: re-measuring on this machine")
            with bar(f"verify {path.name}", len(todo), opts.progress, unit="run") as update:
                for record, folder in todo:
                    runs.append({"bundle": path.name, **checker.check(record, folder)})
                    update(1)
            shutil.rmtree(dest, ignore_errors=True)  # free the disk before the next bundle
    machine = {**provenance.collect("cpu", checker.threads), "device_label": checker.label("")}
    return {"format": verdicts.FORMAT, "schema": verdicts.SCHEMA,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine,
            "options": {"accuracy_tol": opts.accuracy_tol, "latency": opts.latency, "latency_tol": opts.latency_tol},
            "bundles": bundles, "runs": runs}


class _Cannot(Exception):
    """Why a run cannot be re-measured here."""


class _Mismatch(Exception):
    """Why a run's artifact contradicts its record before anything is measured."""


class _Checker:
    """Resolves, measures and judges one run at a time; keeps the tasks it loaded."""

    def __init__(self, worker, opts: VerifyOptions):
        self.worker, self.opts = worker, opts
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.threads = usable or 1
        self.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0  # before our own work adds to it
        self._tasks: dict[tuple[str, str], Any] = {}
        self._supports: dict[tuple[str, str], list[int]] = {}

    def label(self, compile_mode: str) -> str:
        """This machine's CPU as a device label, in the run's compile mode."""
        from slimbench.core.record import device_label
        from slimbench.suite.provenance import capability, cpu_model

        return device_label({"type": "cpu", "name": cpu_model(), "capability": capability("cpu"),
                             "compile": compile_mode})

    def check(self, record: dict[str, Any], folder: Path | None) -> dict[str, Any]:
        from slimbench.suite.measure.isolated import MeasureFailed

        method = record.get("method") or {}
        out = {"run_key": record.get("run_key"), "record_sha256": verdicts.record_digest(record),
               "task": (record.get("task") or {}).get("name"), "method": method.get("label") or method.get("name"),
               "seed": record.get("seed"), "verdict": verdicts.VERIFIED, "reasons": [], "claimed": {},
               "measured": {}, "tolerances": {}, "latency": []}
        try:
            task, meth = self.resolve(record, folder)
            return self.judge(record, task, self.measure(record, task, meth, folder), out)
        except _Cannot as exc:
            return {**out, "verdict": verdicts.CANNOT, "reasons": [str(exc)]}
        except _Mismatch as exc:
            return {**out, "verdict": verdicts.MISMATCH, "reasons": [str(exc)]}
        except MeasureFailed as exc:
            return {**out, "verdict": verdicts.CANNOT, "reasons": [f"the artifact could not be measured here: {exc}"]}
        except Exception as exc:  # whatever else stops this run, the others still get their verdicts
            return {**out, "verdict": verdicts.CANNOT, "reasons": [f"{type(exc).__name__}: {exc}"]}

    def judge(self, record: dict[str, Any], task, parts: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        """`out` with the claimed and measured figures, their tolerances, the reasons and the verdict."""
        claimed, measured = record.get("metrics") or {}, parts["metrics"]
        keys = (*verdicts.EXACT, "sparsity", *verdicts.QUALITY_FIGURES)
        per_token = "perplexity" in claimed
        acc_tol = verdicts.accuracy_tolerance(record, measured.get("eval_tokens" if per_token else "eval_examples"),
                                              self.opts.accuracy_tol)
        tols = {"sparsity": verdicts.SPARSITY_TOL, "accuracy": acc_tol,
                **verdicts.perplexity_tolerances(record, claimed, acc_tol)}
        if not per_token:
            tols["balanced_accuracy"] = verdicts.balanced_tolerance(acc_tol, self.supports(task))
        reasons = verdicts.compare(claimed, measured, tols)
        if self.opts.latency:
            comparable, why = self.comparable(record)
            out["latency"], late = verdicts.compare_latency(record.get("latency") or [], parts["latency"],
                                                            comparable, self.opts.latency_tol)
            reasons += late
            if not comparable:
                out["latency_note"] = why
        out.update(claimed={k: claimed.get(k) for k in keys if k in claimed},
                   measured={k: measured.get(k) for k in keys if k in measured}, tolerances=tols, reasons=reasons,
                   verdict=verdicts.MISMATCH if reasons else verdicts.VERIFIED)
        return out

    def resolve(self, record: dict[str, Any], folder: Path | None):
        """The task and method to re-measure `record` with, or `_Cannot` / `_Mismatch` saying why not."""
        from slimbench.core.config import build, to_dict
        from slimbench.methods import METHODS
        from slimbench.methods.pipeline import NAME as PIPELINE, Pipeline
        from slimbench.tasks import get_task

        if folder is None:
            raise _Cannot("the bundle carries no artifact for this run (export it with --artifacts)")
        if not (folder / "model.safetensors").is_file() or not (folder / "model.json").is_file():
            raise _Cannot("the run's artifact has no model.safetensors and model.json at its top")
        t, m = record.get("task") or {}, record.get("method") or {}
        name, profile = str(t.get("name")), str(t.get("profile") or "default")
        try:
            if (name, profile) not in self._tasks:
                self._tasks[(name, profile)] = get_task(name, profile)
        except Exception as exc:  # unknown name, unknown profile, a loader missing here
            raise _Cannot(f"task {name!r} (profile {profile!r}) is not available here: {exc}") from None
        task = self._tasks[(name, profile)]
        claimed_key, ours = (record.get("baseline") or {}).get("key"), task.config.baseline_key()
        if claimed_key != ours:
            raise _Cannot(f"the task definition differs: the run's {name} has baseline key {claimed_key!r}, this "
                          f"machine's {ours!r} (another model, data split or recipe)")
        mname, config = str(m.get("name")), m.get("config") or {}
        try:  # a pipeline is built from its config (its stages' specs and versions), never registered
            cls = Pipeline if mname == PIPELINE else METHODS.get(mname)
        except Exception as exc:
            raise _Cannot(f"method {mname!r} is not installed here: {exc}") from None
        if m.get("version") != cls.version:
            raise _Cannot(f"method {mname!r} is version {cls.version} here; the run used version "
                          f"{m.get('version')!r}, whose artifacts this restore may not read")
        try:
            method = cls(build(cls.config_cls, {k: v for k, v in config.items() if k != "version"}, owner=mname))
        except Exception as exc:
            raise _Cannot(f"the run's config of {mname} is not valid here: {exc}") from None
        try:
            written = json.loads((folder / "model.json").read_text(encoding="utf-8")).get("method") or {}
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise _Mismatch(f"the artifact's model.json is not readable: {exc}") from None
        if written.get("name") != mname or written.get("config") != config:
            raise _Mismatch(f"the artifact was written by {written.get('name')!r} with config "
                            f"{written.get('config')!r}; the record claims {mname!r} with {config!r}")
        if config != to_dict(method.config):
            raise _Cannot(f"the run's config of {mname} reads differently here ({to_dict(method.config)!r})")
        reason = method.supports(task.spec(), "cpu")
        if reason:
            raise _Cannot(f"{mname} does not run on this machine's CPU: {reason}")
        return task, method

    def measure(self, record: dict[str, Any], task, method, folder: Path) -> dict[str, Any]:
        from slimbench.suite.runner import LATENCY_PROFILES

        device = record.get("device") or {}
        threads = device.get("threads") if isinstance(device.get("threads"), int) else None
        threads = threads if threads and threads <= self.threads else self.threads
        profile = LATENCY_PROFILES.get(task.config.profile, LATENCY_PROFILES["default"])
        return self.worker.measure(task, method, folder, since=None, device="cpu",
                                   latency_devices=("cpu",) if self.opts.latency else (), threads=threads,
                                   latency_profile=profile, compile_mode=str(device.get("compile") or ""))

    def comparable(self, record: dict[str, Any]) -> tuple[bool, str]:
        """Whether this machine's CPU timings compare with the run's, else why they are shown beside."""
        from slimbench.core.record import device_label

        device = record.get("device") or {}
        theirs, ours = device_label(device), self.label(str(device.get("compile") or ""))
        if theirs != ours:
            return False, f"timed on {theirs}; this machine is {ours}: shown beside, not compared"
        threads = device.get("threads") if isinstance(device.get("threads"), int) else self.threads
        if threads > self.threads:
            return False, f"the run timed {threads} threads; this machine has {self.threads} cores"
        if self.load > self.threads - threads + 0.5:  # others' work on our timed cores: waits, not kernels
            return False, (f"this machine was busy when verify started (load average {self.load:.2f} on "
                           f"{self.threads} cores, {threads} timed): shown beside, not compared")
        return True, ""

    def supports(self, task) -> list[int]:
        """Examples per class in the test split as measured (for the balanced-accuracy tolerance)."""
        key = (task.name, task.config.profile)
        if key not in self._supports:
            counts: dict[int, int] = {}
            for _, labels in task.test_batches():
                for y in labels.reshape(-1).tolist():
                    counts[int(y)] = counts.get(int(y), 0) + 1
            self._supports[key] = list(counts.values())
        return self._supports[key]


def render(doc: dict[str, Any]) -> None:
    """One table line per run: task, method, seed, verdict and, for a mismatch, claimed vs measured."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    several = len(doc["bundles"]) > 1
    t = Table(title="slimbench verify")
    for col in (["bundle"] if several else []) + ["task", "method", "seed", "verdict", "details"]:
        t.add_column(col, no_wrap=col not in ("details", "method"))
    style = {verdicts.VERIFIED: "green", verdicts.MISMATCH: "bold red", verdicts.CANNOT: "yellow"}
    for r in doc["runs"]:
        details = list(r["reasons"])
        for p in r.get("latency") or []:
            if not p["compared"] and p["claimed_ms"] is not None and p["measured_ms"] is not None:
                details.append(f"latency batch {p['batch_size']}: claimed {p['claimed_ms']:.4g} ms, here "
                               f"{p['measured_ms']:.4g} ms (not compared)")
        if r.get("latency_note"):
            details.append(r["latency_note"])
        verdict = r["verdict"].upper() if r["verdict"] == verdicts.MISMATCH else r["verdict"]
        t.add_row(*([escape(r["bundle"])] if several else []), escape(str(r["task"])), escape(str(r["method"])),
                  escape(str(r["seed"])), f"[{style[r['verdict']]}]{verdict}[/]", escape("\n".join(details)))
    console = Console()
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 140))
    console.print(t)
    counts = {v: sum(r["verdict"] == v for r in doc["runs"]) for v in style}
    rejected = sum(1 for b in doc["bundles"] if b["rejected"])
    console.print(f"{counts[verdicts.VERIFIED]} verified, {counts[verdicts.MISMATCH]} mismatch, "
                  f"{counts[verdicts.CANNOT]} cannot verify" + (f"; {rejected} bundle(s) rejected" if rejected else "")
                  + f"; re-measured on {escape(str(doc['machine'].get('device_label')))}")
