"""The harness: task -> baseline -> method -> artifact -> measurements -> MLflow run.

Every run measures the model *reloaded from its serialized artifact*, so size, accuracy and
latency all describe the same bytes a user would ship. A method that raises is recorded as
FAILED (traceback attached) and the other runs go on.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shlex
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from slimbench.suite.config import to_dict
from slimbench.suite.progress import ProgressConfig, track

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
        from slimbench.suite.config import ConfigError
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        from slimbench.suite.config import ConfigError
        raise ConfigError(f"unknown device {device!r}; choose cpu, cuda, cuda:N or auto")
    return device


def plan(tasks: list[str], methods: list[str], seeds: list[int], profile: str) -> list[RunSpec]:
    """Validate every task, method and config before any work starts."""
    from slimbench.methods import create_method
    from slimbench.tasks import get_task

    for t in tasks:
        get_task(t, profile)
    for m in methods:
        create_method(m)
    return [RunSpec(t, m, s) for t in tasks for m in methods for s in seeds]


def run_key(task, method, seed: int, device: str) -> str:
    blob = json.dumps({"task": task.name, "profile": task.config.profile,
                       "baseline": task.config.baseline_key(), "method": method.name,
                       "config": to_dict(method.config), "seed": seed,
                       "device": device.split(":")[0]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class Harness:
    """Runs planned (task, method, seed) triples and tracks each as one MLflow run."""

    def __init__(self, opts: RunOptions):
        import os
        import torch

        from slimbench.suite.tracking import Tracker
        from slimbench.suite.trainer import Trainer

        self.opts = opts
        self.device = resolve_device(opts.device)
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.threads = opts.threads or usable or 1
        # CUDA latency runs on the GPU the run uses (cuda:N), else the default GPU
        gpu = self.device if self.device.startswith("cuda") else "cuda"
        self.latency_devices = tuple(gpu if d == "cuda" else d for d in opts.latency_devices
                                     if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available()))
        self.tracker = Tracker(opts.tracking_uri, opts.experiment, opts.results_dir)
        self.trainer = Trainer(self.device, opts.progress)
        self.cache_dir = opts.results_dir / "cache"
        self._tasks: dict[str, Any] = {}
        self._baselines: dict[str, Any] = {}

    def task(self, name: str):
        if name not in self._tasks:
            from slimbench.tasks import get_task
            self._tasks[name] = get_task(name, self.opts.profile)
        return self._tasks[name]

    def baseline(self, task):
        """The task's baseline; a failure is remembered so later runs fail fast instead of retraining."""
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

    def run_all(self, specs: list[RunSpec]) -> list[RunResult]:
        results = []
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

    def run_one(self, spec: RunSpec) -> RunResult:
        from slimbench.methods import create_method
        from slimbench.suite import provenance

        task, method = self.task(spec.task), create_method(spec.method)
        key = run_key(task, method, spec.seed, self.device)
        if not self.opts.force and (done := self.tracker.completed(key)):
            self.opts.log(f"  already done (MLflow run {done}); --force re-runs it")
            return RunResult(spec, "SKIPPED", done)
        command = (f"slimbench run --tasks {task.name} --method {shlex.quote(method.spec)} --seed {spec.seed} "
                   f"--profile {task.config.profile} --device {self.device} --threads {self.threads} --force"
                   + (f" --experiment {shlex.quote(self.opts.experiment)}" if self.opts.experiment != "slimbench" else ""))
        record = {
            "schema": 1, "run_key": key, "status": "RUNNING", "command": command,
            "invocation": self.opts.command,
            "task": {"name": task.name, "kind": task.config.kind, "metric": task.config.metric,
                     "profile": task.config.profile, "num_classes": task.config.num_classes},
            "method": {"name": method.name, "family": method.family, "label": method.label,
                       "description": method.description, "simulated": method.simulated,
                       "config": to_dict(method.config)},
            "seed": spec.seed,
            "device": {"type": self.device.split(":")[0], "name": provenance.device_name(self.device),
                       "threads": self.threads},
            "metrics": {}, "latency": [], "memory": [], "error": None,
            "provenance": provenance.collect(self.device, self.threads),
        }
        tags = {"slimbench.run_key": key, "slimbench.task": task.name, "slimbench.method": method.name,
                "slimbench.family": method.family, "slimbench.label": method.label,
                "slimbench.profile": task.config.profile, "slimbench.simulated": str(method.simulated).lower(),
                **{f"slimbench.{k}": v for k, v in record["provenance"].items() if v is not None}}
        run_id = self.tracker.start(f"{task.name}/{method.label}/s{spec.seed}", tags)
        record["provenance"]["mlflow_run_id"] = run_id
        params = {"task": task.name, "method": method.name, "seed": spec.seed, "profile": task.config.profile,
                  "device": self.device, **{f"config.{k}": v for k, v in to_dict(method.config).items()}}
        start = time.time()
        record["provenance"]["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        try:
            reason = method.supports(task, self.device)
            if reason:
                record.update(status="UNSUPPORTED", error=reason)
                self.opts.log(f"  unsupported here: {reason}")
            else:
                self._measure(task, method, spec.seed, record, run_id)
                record["status"] = "FINISHED"
        except KeyboardInterrupt:
            record.update(status="KILLED", error="interrupted")
            self._finish(run_id, record, params, start, "KILLED")
            raise
        except Exception as exc:  # one failing method must not lose the other runs
            tb = traceback.format_exc()
            record.update(status="FAILED", error=f"{type(exc).__name__}: {exc}")
            self.tracker.log_text(run_id, "traceback.txt", tb)
            self.opts.log(f"  FAILED: {type(exc).__name__}: {exc}")
        mlflow_status = "FAILED" if record["status"] == "FAILED" else "FINISHED"
        self._finish(run_id, record, params, start, mlflow_status)
        return RunResult(spec, record["status"], run_id, record, record["error"])

    def _finish(self, run_id: str, record: dict, params: dict, start: float, status: str) -> None:
        record["provenance"]["duration_s"] = round(time.time() - start, 2)
        metrics = dict(record["metrics"])
        for lat in record["latency"]:
            prefix = f"latency_{lat['device']}_bs{lat['batch_size']}"
            metrics[f"{prefix}_median_ms"], metrics[f"{prefix}_p90_ms"] = lat["median_ms"], lat["p90_ms"]
        for mem in record["memory"]:
            metrics[f"memory_{mem['device']}_bs{mem['batch_size']}_peak_bytes"] = mem["peak_bytes"]
        self.tracker.log(run_id, params, metrics, {"slimbench.status": record["status"]})
        self.tracker.log_json(run_id, "run.json", record)
        self.tracker.end(run_id, status)

    def _measure(self, task, method, seed: int, record: dict, run_id: str) -> None:
        import torch

        from slimbench.methods import CompressionContext
        from slimbench.suite import measure_all  # noqa: F401

        baseline, base_info = self.baseline(task)
        record["baseline"] = {k: base_info[k] for k in ("key", "steps", "train_seconds") if k in base_info}
        cfg = task.config
        ctx = CompressionContext(
            task=task, calibration=lambda: track(task.calibration_batches(), f"{task.name} calibration",
                                                 -(-cfg.calibration_size // 64), self.opts.progress),
            train_batches=lambda: task.train_stream(cfg.finetune.batch_size, seed),
            trainer=self.trainer, teacher=baseline, device=torch.device(self.device), seed=seed,
            budget_steps=cfg.finetune.steps, lr=cfg.finetune.lr, finetune=cfg.finetune)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        compressed = method.compress(copy.deepcopy(baseline).to(self.device), ctx)
        record["metrics"]["compress_seconds"] = round(time.perf_counter() - t0, 3)
        out_dir = self.opts.results_dir / "tmp" / run_id
        try:
            measured = measure_all.measure(
                task, method, compressed.to("cpu").eval(), skeleton=copy.deepcopy(baseline).cpu(),
                out_dir=out_dir, record=record, device=self.device, latency_devices=self.latency_devices,
                threads=self.threads, latency_profile=LATENCY_PROFILES[cfg.profile], progress=self.opts.progress)
            self.tracker.log_dir(run_id, measured.artifact_dir, "artifact")
            floor, acc = cfg.min_accuracy, record["metrics"].get("accuracy")
            if method.name == "baseline" and floor is not None and acc is not None and acc < floor:
                record["warnings"] = [f"baseline accuracy {acc:.4f} is below the task's documented "
                                      f"floor {floor} for profile {cfg.profile}"]
                self.opts.log(f"  WARNING: {record['warnings'][0]}")
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
