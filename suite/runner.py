"""The harness: task -> baseline -> method -> artifact -> measurements -> MLflow run.

Every run measures the model *reloaded from its serialized artifact* onto a freshly built
model, in a process that never ran the method's `compress` (`measure.isolated.MeasureWorker`),
so size, accuracy and latency all describe the same bytes a user would ship and nothing else. A
method sees train and validation data only (its context is built by `make_context`), and every
task's test split is sealed while it compresses (`tasks.seal`): a method that reads it fails,
even if it swallows the error. The test split is read once, by the final measurement. A method
that raises is recorded as FAILED (traceback attached) and the other runs go on; every task's
baseline row is measured first when the store has none for this device, so every row shows its
deltas.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from slimbench.core.config import ConfigError, to_dict
from slimbench.core.record import DeviceRef, MethodRef, RunRecord, TaskRef
from slimbench.suite.progress import ProgressConfig

BASELINE = "baseline"

LATENCY_PROFILES = {  # (warmup, min_runs, min_seconds, max_seconds) per profile
    "quick": (2, 5, 0.2, 2.0),
    "default": (5, 20, 1.0, 10.0),
    "full": (10, 100, 3.0, 60.0),
}


@dataclass(frozen=True)
class RunSpec:
    task: str
    method: str  # a method spec: name[:key=value,...]
    seed: int


@dataclass
class RunOptions:
    profile: str = "default"
    device: str = "cpu"  # where methods compress/train and accuracy is evaluated
    latency_devices: tuple[str, ...] = ("cpu", "cuda")  # those available are used
    threads: int | None = None  # CPU threads for timing (default: all cores)
    compile: str = ""  # "": latency of the eager model; a torch.compile mode ("default"): of the compiled one
    task_files: tuple[str, ...] = ()  # task YAML files registered by name (also in every worker)
    attempt: str = ""  # set by a distributed executor: tags the runs of one attempt, so a dead one can be ended
    heartbeat_s: float = 30.0  # a RUNNING run says it is alive this often (runs silent 5x longer are dead)
    executor: str = "local"  # recorded with each run: "local", or "ray (N CPU threads)" / "ray (1 GPU)"
    results_dir: Path = Path("results")
    force: bool = False
    tracking_uri: str | None = None
    experiment: str = "slimbench"
    command: str = ""
    progress: ProgressConfig = field(default_factory=ProgressConfig)
    log: Callable[[str], None] = print


@dataclass
class RunResult:
    spec: RunSpec
    status: str  # FINISHED | FAILED | UNSUPPORTED | SKIPPED
    run_id: str | None = None
    record: dict[str, Any] | None = None
    error: str | None = None


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; choose cpu, cuda, cuda:N or auto")
    return device


def plan(tasks: list[str], methods: list[str] | dict[str, list[str]], seeds: list[int] | None,
         profile: str) -> list[RunSpec]:
    """Validate every task, method and config before any work starts. `methods`: the specs every
    task runs, or a mapping of task name to its own specs. `seeds=None`: each method's
    `default_seeds` (0..N-1)."""
    from slimbench.methods import create_method
    from slimbench.tasks import get_task

    for t in tasks:
        get_task(t, profile)
    per_task = methods if isinstance(methods, dict) else {t: methods for t in tasks}
    per = {m: seeds if seeds is not None else list(range(create_method(m).default_seeds))
           for t in tasks for m in per_task[t]}
    return [RunSpec(t, m, s) for t in tasks for m in per_task[t] for s in per[m]]


def run_key(task, method, seed: int, device_label: str) -> str:
    """What makes two runs the same measurement: task, profile and baseline, the method, its code
    version and full config, the seed, and the device with its capabilities."""
    blob = json.dumps({"task": task.name, "profile": task.config.profile,
                       "baseline": task.config.baseline_key(), "method": method.name,
                       "method_version": method.version, "config": to_dict(method.config), "seed": seed,
                       "device": device_label}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class Harness:
    """Runs planned (task, method, seed) triples and tracks each as one MLflow run."""

    def __init__(self, opts: RunOptions):
        import os
        import torch

        from slimbench.suite import provenance
        from slimbench.suite.tracking import Tracker
        from slimbench.suite.trainer import Trainer

        self.opts = opts
        register_task_files(opts.task_files)
        self.device = resolve_device(opts.device)
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.threads = opts.threads or usable or 1
        # CUDA latency runs on the GPU the run uses (cuda:N), else the default GPU
        gpu = self.device if self.device.startswith("cuda") else "cuda"
        self.latency_devices = tuple(gpu if d == "cuda" else d for d in opts.latency_devices
                                     if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available()))
        also = [{"type": d.split(":")[0], "name": provenance.device_name(d), "capability": provenance.capability(d)}
                for d in self.latency_devices if d.split(":")[0] != self.device.split(":")[0]]
        self.device_ref = DeviceRef(type=self.device.split(":")[0], name=provenance.device_name(self.device),
                                    threads=self.threads, capability=provenance.capability(self.device), also=also,
                                    compile=opts.compile)
        self.tracker = Tracker(opts.tracking_uri, opts.experiment, opts.results_dir)
        self.trainer = Trainer(self.device, opts.progress)
        self.cache_dir = opts.results_dir / "cache"
        self._tasks: dict[str, Any] = {}
        self._baselines: dict[str, Any] = {}
        self._measurer = None

    @property
    def measurer(self):
        """The measurement process, started on first use (see `measure.isolated`)."""
        if self._measurer is None:
            from slimbench.suite.measure.isolated import MeasureWorker
            self._measurer = MeasureWorker(self.opts.progress)
        return self._measurer

    def close(self) -> None:
        """End the measurement process (it also ends with this process)."""
        if self._measurer is not None:
            self._measurer.close()
            self._measurer = None

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def task(self, name: str):
        if name not in self._tasks:
            from slimbench.tasks import get_task
            self._tasks[name] = get_task(name, self.opts.profile)
        return self._tasks[name]

    def baseline(self, task):
        """The task's trained baseline; a failure is remembered so later runs fail fast instead of retraining."""
        if task.name not in self._baselines:
            from slimbench.suite.baselines import get_baseline
            try:
                self._baselines[task.name] = get_baseline(task, self.trainer, self.cache_dir, self.opts.log)
            except Exception as exc:
                self._baselines[task.name] = exc
        cached = self._baselines[task.name]
        if isinstance(cached, Exception):
            raise RuntimeError(f"the {task.name} baseline could not be built: {type(cached).__name__}: {cached}") \
                from cached
        return cached

    def with_baselines(self, specs: list[RunSpec]) -> tuple[list[RunSpec], list[RunResult]]:
        """Every task of the plan needs its baseline row (the one Δ and speedup are measured
        against) on this device: planned, already tracked (returned as SKIPPED), or added first."""
        planned = {s.task for s in specs if _method_name(s.method) == BASELINE}
        extra, known = [], []
        for name in dict.fromkeys(s.task for s in specs):
            if name in planned:
                continue
            task = self.task(name)
            spec = RunSpec(name, BASELINE, task.config.seed)
            done = self.tracker.finished_baseline(name, task.config.profile, task.config.baseline_key(),
                                                  self.device_ref.label)
            if done:
                known.append(RunResult(spec, "SKIPPED", done))
            else:
                self.opts.log(f"{name} has no baseline row on {self.device_ref.label} (profile "
                              f"{task.config.profile}) yet: measuring it first, so every row shows its deltas")
                extra.append(spec)
        return extra + specs, known

    def run_all(self, specs: list[RunSpec]) -> list[RunResult]:
        specs, results = self.with_baselines(specs)
        for i, spec in enumerate(specs, 1):
            self.opts.log(f"[{i}/{len(specs)}] {spec.task} · {spec.method} · seed {spec.seed}")
            try:
                results.append(self.run_one(spec))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # e.g. the tracking store went away: keep going with the rest
                self.opts.log(f"  FAILED before it could be tracked: {type(exc).__name__}: {exc}")
                results.append(RunResult(spec, "FAILED", error=f"{type(exc).__name__}: {exc}"))
        return results

    def new_record(self, task, method, spec: RunSpec, key: str) -> RunRecord:
        """The record of a run about to start: what, where, and how to reproduce it."""
        from slimbench.core.config import spec_sources
        from slimbench.suite import provenance

        command = (f"slimbench run --tasks {task.name} --method {shlex.quote(method.spec)} --seed {spec.seed} "
                   f"--profile {task.config.profile} --device {self.device} --threads {self.threads} --force"
                   + (" --compile" if self.opts.compile else "")
                   + (f" --experiment {shlex.quote(self.opts.experiment)}" if self.opts.experiment != "slimbench"
                      else ""))
        c = task.config
        return RunRecord(
            run_key=key, command=command, invocation=self.opts.command, seed=spec.seed, device=self.device_ref,
            baseline={"key": c.baseline_key()},
            task=TaskRef(name=task.name, kind=c.kind, metric=c.metric, profile=c.profile, num_classes=c.num_classes),
            method=MethodRef(name=method.name, family=method.family, label=method.label,
                             description=method.description, simulated=method.simulated, version=method.version,
                             config=to_dict(method.config), spec=spec.method,
                             config_files=spec_sources(spec.method)),
            provenance={**provenance.collect(self.device, self.threads), "executor": self.opts.executor})

    def run_one(self, spec: RunSpec) -> RunResult:
        """One (task, method, seed): skipped when its key is done (or claimed by a live run
        elsewhere), else compressed, measured and tracked as one MLflow run."""
        from slimbench.methods import create_method
        from slimbench.suite.claims import Heartbeat
        from slimbench.suite.tracking import record_tags

        task, method = self.task(spec.task), create_method(spec.method)
        key = run_key(task, method, spec.seed, self.device_ref.label)
        if not self.opts.force and (done := self.tracker.completed(key)):
            self.opts.log(f"  already done (MLflow run {done}); --force re-runs it")
            return RunResult(spec, "SKIPPED", done)
        record = self.new_record(task, method, spec, key)
        tags = {**record_tags(record), "slimbench.worker": f"{socket.gethostname()}:{os.getpid()}",
                **({"slimbench.attempt": self.opts.attempt} if self.opts.attempt else {})}
        run_id = self.tracker.start(f"{task.name}/{method.label}/s{spec.seed}", tags)
        yielded = self.tracker.claims.claim(key, run_id, self.opts.force, 5 * self.opts.heartbeat_s)
        if yielded:  # another driver or worker has this key: leave it to them, keep no trace
            self.tracker.client.delete_run(run_id)
            self.opts.log(f"  skipped: {yielded}")
            return RunResult(spec, "SKIPPED", error=yielded)
        with Heartbeat(self.tracker.claims, run_id, self.opts.heartbeat_s):
            return self._run_claimed(task, method, spec, record, run_id)

    def _run_claimed(self, task, method, spec: RunSpec, record: RunRecord, run_id: str) -> RunResult:
        from slimbench.methods import Unsupported
        from slimbench.suite.tracking import record_params

        record.provenance["mlflow_run_id"] = run_id
        params = record_params(record, self.device)
        start = time.time()
        record.provenance["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        try:
            reason = method.supports(task.spec(), self.device)
            if reason:
                record.status, record.error = "UNSUPPORTED", reason
                self.opts.log(f"  unsupported here: {reason}")
            else:
                self._measure(task, method, spec.seed, record, run_id)
                record.status = "FINISHED"
        except Unsupported as exc:  # the method looked and found nothing to offer here (no candidate met...)
            record.status, record.error = "UNSUPPORTED", str(exc)
            self.opts.log(f"  unsupported here: {exc}")
        except KeyboardInterrupt:
            record.status, record.error = "KILLED", "interrupted"
            self._finish(run_id, record, params, start, "KILLED")
            raise
        except Exception as exc:  # one failing method must not lose the other runs
            tb = traceback.format_exc()
            if getattr(exc, "details", ""):  # it failed in the measurement process: its own traceback too
                tb += f"\nIn the measurement process:\n{exc.details}"
            record.status, record.error = "FAILED", f"{type(exc).__name__}: {exc}"
            self.tracker.log_text(run_id, "traceback.txt", tb)
            self.opts.log(f"  FAILED: {type(exc).__name__}: {exc}")
        mlflow_status = "FAILED" if record.status == "FAILED" else "FINISHED"
        self._finish(run_id, record, params, start, mlflow_status)
        return RunResult(spec, record.status, run_id, record.to_dict(), record.error)

    def _finish(self, run_id: str, record: RunRecord, params: dict, start: float, status: str) -> None:
        record.provenance["duration_s"] = round(time.time() - start, 2)
        self.tracker.log_record(run_id, record, params)
        self.tracker.end(run_id, status)

    def _measure(self, task, method, seed: int, record: RunRecord, run_id: str) -> None:
        import functools

        import torch

        from slimbench.methods.base import Unsupported
        from slimbench.suite.api import run_method
        from slimbench.core.record import LatencyPoint, MemoryPoint
        from slimbench.suite.artifact import save_artifact
        from slimbench.suite.context import make_context
        from slimbench.suite.costs import CostTable
        from slimbench.suite.measure.isolated import probe_differs, write_probe
        from slimbench.tasks.seal import TEST_READ, sealed

        self.measurer.start()  # its start-up (imports) overlaps the compression
        baseline, base_info = self.baseline(task)
        record.baseline.update({k: base_info[k] for k in ("key", "steps", "train_seconds", "source", "checkpoint")
                                if k in base_info})
        cfg = task.config
        tags = {"slimbench.task": record.task.name, "slimbench.method": record.method.name,
                "slimbench.run_key": record.run_key}
        costs = CostTable(self.device, cfg.baseline_key(), self.cache_dir / "costs", self.threads,
                          dataclasses.replace(self.device_ref, compile="").label)  # it times eager models
        ctx = make_context(task, baseline=baseline, device=self.device, seed=seed, trainer=self.trainer,
                           owner=method.name, progress=self.opts.progress, costs=costs,
                           candidate_logger=functools.partial(self.tracker.log_candidate, run_id, tags=tags),
                           prior_candidates=None if self.opts.force else  # --force: search again
                           functools.partial(self.tracker.prior_candidates, record.run_key, run_id))
        since, t0 = time.time(), time.perf_counter()
        try:
            with sealed() as wire:
                compressed = run_method(method, baseline, ctx, seed)  # seeds, then the door slimbench.compress uses
        except Unsupported as exc:
            record.method_metrics = _jsonable(exc.metrics)
            raise
        finally:
            record.budget = ctx.ledger.summary()
        if wire.tripped:  # it caught the error and went on: the run is void all the same
            raise RuntimeError(f"{TEST_READ} ({'; '.join(wire.reads[:3])}) and went on after the error")
        record.metrics["compress_seconds"] = round(time.perf_counter() - t0, 3)
        record.method_metrics = _jsonable(compressed.metrics)
        out_dir = self.opts.results_dir / "tmp" / run_id
        probe_dir = self.opts.results_dir / "tmp" / f"{run_id}-probe"
        try:
            save_artifact(compressed, method, out_dir)
            probe = write_probe(task, compressed.model.to("cpu").eval(), probe_dir)
            del compressed, ctx
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()  # the measurement process needs the GPU's memory now
            parts = self.measurer.measure(task, method, out_dir, since=since, device=self.device,
                                          latency_devices=self.latency_devices, threads=self.threads,
                                          latency_profile=LATENCY_PROFILES[cfg.profile],
                                          compile_mode=self.opts.compile, probe=probe)
            if (differs := probe_differs(probe)):
                record.warnings.append(differs)
                self.opts.log(f"  WARNING: {differs}")
            record.metrics.update(parts["metrics"])
            record.method_metrics.update({k: v for k, v in parts["method_metrics"].items()
                                          if k not in record.method_metrics})
            record.sparsity_layers = parts["sparsity_layers"]
            record.latency += [LatencyPoint(**p) for p in parts["latency"]]
            record.memory += [MemoryPoint(**p) for p in parts["memory"]]
            record.latency_unsupported.update(parts["latency_unsupported"])
            record.execution_paths = parts["execution_paths"]
            record.warnings += parts["warnings"]
            self.tracker.log_dir(run_id, out_dir, "artifact")
            if method.name == BASELINE and (missed := baseline_bound_missed(cfg, record.quality)):
                record.warnings.append(missed)
                self.opts.log(f"  WARNING: {record.warnings[-1]}")
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
            shutil.rmtree(probe_dir, ignore_errors=True)


def baseline_bound_missed(cfg, value: float | None) -> str | None:
    """Why a baseline's quality misses the profile's documented bound (`min_accuracy`, or
    `max_perplexity` for a lower-is-better metric); None when it meets it or none is set."""
    if value is None:
        return None
    if cfg.metric == "perplexity":
        bound = cfg.max_perplexity
        if bound is not None and value > bound:
            return (f"baseline perplexity {value:.3f} is above the task's documented ceiling {bound} "
                    f"for profile {cfg.profile}")
        return None
    if cfg.min_accuracy is not None and value < cfg.min_accuracy:
        return (f"baseline accuracy {value:.4f} is below the task's documented floor {cfg.min_accuracy} "
                f"for profile {cfg.profile}")
    return None


def register_task_files(paths: tuple[str, ...]) -> list[str]:
    """Register task YAML files under the names they declare (a task of one's own, unpackaged);
    returns the names. The same file twice is fine; another task's name is an error."""
    from slimbench.tasks import TASKS, load_yaml

    names = []
    for path in paths:
        p = Path(path).resolve()
        if not p.is_file():
            raise ConfigError(f"--task-file {path}: no such file")
        name = load_yaml(str(p)).get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"--task-file {path}: the YAML has no `name`")
        if name not in TASKS:
            TASKS.register(name)(str(p))
        elif TASKS.get(name) != str(p):
            raise ConfigError(f"--task-file {path} declares the task {name!r}, which is already "
                              f"{TASKS.get(name)!r}; give your task a name of its own")
        names.append(name)
    return names


def _method_name(spec: str) -> str:
    """The method a spec names (the part before ':'; a config file is not read for it)."""
    return spec.partition(":")[0].strip()


def _jsonable(obj: Any) -> Any:
    """Method metrics as plain JSON (tuples, numpy and torch scalars included)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
