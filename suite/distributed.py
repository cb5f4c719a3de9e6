"""`slimbench run --executor ray`: the (task, method, seed) grid fanned out as Ray tasks.

What is shared and what is per run:
- the tracking store: every worker logs to one MLflow server (`MLFLOW_TRACKING_URI=http://...`).
  A local SQLite store is served for the run's duration by an `mlflow server` the driver starts on
  127.0.0.1, so workers never write one SQLite file at once;
- the baseline cache (`RESULTS_DIR/cache`): the driver trains each task's baseline once, before the
  fan-out, and workers load it (on a cluster, RESULTS_DIR must be a shared path);
- per run: a Ray task asking for the run's CPU threads (or one GPU for a CUDA run), which builds
  its own harness and runs `Harness.run_one`, the same code as the local executor.

Faults: a run whose worker dies, or that passes `--run-timeout`, is ended KILLED in the store (its
runs are found by the attempt tag) and retried up to `--retries` times. Ctrl-C cancels every
pending task and ends their runs KILLED, spending at most `INTERRUPT_GRACE_S` on it. A re-run
skips FINISHED keys, and two drivers on the same grid never both finish a key (`suite.claims`).
No scheduler or RPC of our own: Ray places tasks.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from slimbench.core.config import ConfigError
from slimbench.suite.runner import Harness, RunOptions, RunResult, RunSpec

INTERRUPT_GRACE_S = 10.0  # Ctrl-C: the most the driver spends ending runs (a busy tracking server must not hold it)


@dataclasses.dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: $RAY_ADDRESS, else a local Ray started for the run
    retries: int = 2            # re-submissions of a run whose worker died or timed out
    run_timeout: float | None = None  # seconds one run may take (None: no limit)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """A clear error before any work when an http(s) tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
    except Exception as exc:
        raise ConfigError(f"the MLflow tracking server at {uri} does not answer ({type(exc).__name__}: {exc}); "
                          "start it (mlflow server ...) or fix MLFLOW_TRACKING_URI / --tracking-uri") from None


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """A clear error before any work when a Ray head at host:port does not accept connections
    (`ray.init` would wait minutes for it)."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({type(exc).__name__}: {exc}); start it "
                          "(ray start --head) or fix --address / RAY_ADDRESS") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """`mlflow server` over a local SQLite store, on 127.0.0.1, for the duration of a `with`."""

    def __init__(self, backend_uri: str, results_dir: Path, startup_s: float = 60.0):
        self.backend_uri, self.results_dir, self.startup_s = backend_uri, results_dir.resolve(), startup_s
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LocalServer":
        self.results_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri, "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", "1",
                "--artifacts-destination", str(self.results_dir / "mlartifacts")]
        self.log = self.results_dir / "mlflow-server.log"  # a file, not a pipe nobody reads (it would fill and block)
        # tracking only: MLflow's job executor would start a pool of worker processes (about half the
        # server's start-up CPU, which decides how long it takes to answer on a busy machine)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.time() + self.startup_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                check_server(self.uri, timeout=1.0)
                return self
            except ConfigError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"mlflow server did not answer on {self.uri} within {self.startup_s:g} s")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _run_remote(opts: dict[str, Any], spec: tuple[str, str, int]) -> dict[str, Any]:
    """One run inside a Ray worker: a harness of its own, the same `run_one` as the local executor."""
    opts = {**opts, "results_dir": Path(opts["results_dir"]), "log": lambda msg: print(msg, file=sys.stderr)}
    from slimbench.suite.progress import ProgressConfig
    with Harness(RunOptions(**opts, progress=ProgressConfig(False))) as harness:
        res = harness.run_one(RunSpec(*spec))
    return {"status": res.status, "run_id": res.run_id, "error": res.error}


def run_ray(harness: Harness, specs: list[RunSpec], ray_opts: RayOptions) -> list[RunResult]:
    """Run the plan on Ray; the results in plan order (baseline rows first, as the local executor)."""
    import ray

    address = ray_opts.address or os.environ.get("RAY_ADDRESS") or None
    log = harness.opts.log
    check_address(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 **({} if address else {"num_cpus": len(os.sched_getaffinity(0))}))
    except Exception as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {type(exc).__name__}: {exc}") from None
    try:
        specs, results = harness.with_baselines(specs)
        for name in dict.fromkeys(s.task for s in specs):  # each baseline trained once, here, before the fan-out
            try:
                harness.baseline(harness.task(name))
            except Exception as exc:  # that task's runs fail (as with the local executor); the others go on
                log(f"  the {name} baseline failed: {exc}")
                results += [RunResult(s, "FAILED", error=str(exc)) for s in specs if s.task == name]
        specs = [s for s in specs if not any(r.spec is s for r in results)]
        return results + _fan_out(ray, harness, specs, ray_opts, log)
    finally:
        ray.shutdown()


def _fan_out(ray, harness: Harness, specs: list[RunSpec], ray_opts: RayOptions, log) -> list[RunResult]:
    base = {f.name: getattr(harness.opts, f.name) for f in dataclasses.fields(RunOptions)
            if f.name not in ("progress", "log", "attempt")}
    base["results_dir"] = str(harness.opts.results_dir.resolve())
    base["tracking_uri"] = harness.tracker.uri
    base["threads"] = harness.threads  # what Ray reserves is what the run times with, on any node
    base["task_files"] = tuple(str(Path(f).resolve()) for f in harness.opts.task_files)
    gpu = harness.device.startswith("cuda")
    base["executor"] = f"ray ({'1 GPU and ' if gpu else ''}{harness.threads} CPU thread(s) per run)"
    # a CUDA run also times the host CPU: it reserves those threads too, so no other run shares them
    remote = ray.remote(_run_remote).options(num_cpus=harness.threads, num_gpus=1 if gpu else 0, max_retries=0)
    resources = ray.cluster_resources()
    capacity = int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 0) // harness.threads)
    if capacity < 1:
        raise ConfigError(f"no node of the Ray cluster can hold a run: it needs {harness.threads} CPU thread(s)"
                          f"{' and a GPU' if gpu else ''}; the cluster has {resources} (lower --threads)")
    results: dict[int, RunResult] = {}
    pending: dict[Any, tuple[int, int, str, float]] = {}  # ref -> (spec index, attempt number, attempt id, start)
    queue = [(i, 0) for i in range(len(specs))]  # submitted only as slots free up: a run's clock starts when it can run

    def submit(i: int, attempt: int) -> None:
        tag = uuid.uuid4().hex
        spec = specs[i]
        ref = remote.remote({**base, "attempt": tag}, (spec.task, spec.method, spec.seed))
        pending[ref] = (i, attempt, tag, time.time())

    def fill() -> None:
        while queue and len(pending) < capacity:
            submit(*queue.pop(0))

    def retry_or_fail(i: int, attempt: int, tag: str, why: str) -> None:
        killed = harness.tracker.claims.mark_killed(tag, why)
        spec = specs[i]
        log(f"  {spec.task} · {spec.method} · seed {spec.seed}: {why}"
            + (f" (run {', '.join(killed)} ended KILLED)" if killed else ""))
        if attempt < ray_opts.retries:
            log(f"  retrying ({attempt + 1} of {ray_opts.retries})")
            queue.insert(0, (i, attempt + 1))
        else:
            results[i] = RunResult(spec, "FAILED", killed[-1] if killed else None,
                                   error=f"{why}; gave up after {attempt + 1} attempt(s)")

    log(f"ray: {len(specs)} run(s), {capacity} at a time ({'1 GPU and ' if gpu else ''}{harness.threads} CPU "
        "thread(s) each)")
    try:  # from the first submission: a Ctrl-C at any point cancels what was submitted
        fill()
        while pending or queue:
            fill()
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                i, attempt, tag, _ = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # raised outside the run's own handling: a bug, not luck
                    cause = exc.cause if exc.cause is not None else exc
                    harness.tracker.claims.mark_killed(tag, f"{type(cause).__name__}: {cause}")
                    results[i] = RunResult(specs[i], "FAILED", error=f"{type(cause).__name__}: {cause}")
                    log(f"  {specs[i].task} · {specs[i].method}: FAILED ({type(cause).__name__}: {cause})")
                    continue
                except Exception as exc:  # the worker died (killed, out of memory) or its node went away
                    retry_or_fail(i, attempt, tag, f"the worker died: {type(exc).__name__}: {str(exc)[:300]}")
                    continue
                results[i] = RunResult(specs[i], out["status"], out["run_id"], error=out["error"])
                log(f"[{len(results)}/{len(specs)}] {specs[i].task} · {specs[i].method} · seed {specs[i].seed}: "
                    f"{out['status']}")
            if ray_opts.run_timeout is not None:
                now = time.time()
                for ref, (i, attempt, tag, t0) in list(pending.items()):
                    if now - t0 > ray_opts.run_timeout:
                        ray.cancel(ref, force=True)
                        ray.wait([ref], timeout=10)  # let the worker die before its run is ended KILLED
                        pending.pop(ref)
                        retry_or_fail(i, attempt, tag, f"timed out after {ray_opts.run_timeout:g} s")
    except KeyboardInterrupt:
        end_interrupted(ray, harness.tracker.claims, pending, log)
        raise
    return [results[i] for i in range(len(specs))]


def end_interrupted(ray, claims, pending: dict[Any, tuple], log, grace_s: float = INTERRUPT_GRACE_S) -> list[str]:
    """Ctrl-C: cancel every pending run at once, then, within `grace_s` in all, let the cancelled
    workers die (so none writes after its run is ended) and end their runs KILLED; returns the
    attempts ended. A busy machine or tracking server must not hold the user's terminal: what is
    not ended in time is said, and reads as a dead run's leftover once its heartbeat is stale. A
    second Ctrl-C skips the rest (it raises out of the wait)."""
    deadline = time.monotonic() + grace_s
    for ref in pending:
        ray.cancel(ref, force=True)
    if pending:
        ray.wait(list(pending), num_returns=len(pending), timeout=grace_s / 2)
    tags, ended, errors = [tag for _, _, tag, _ in pending.values()], [], []

    def end() -> None:  # in a thread, so the wait for the tracking server has a deadline
        for tag in tags:
            try:
                claims.mark_killed(tag, "the driver was interrupted (Ctrl-C)")
                ended.append(tag)
            except Exception as exc:  # the server went away: say so, the user asked to stop
                errors.append(f"{type(exc).__name__}: {exc}")
    worker = threading.Thread(target=end, daemon=True, name="slimbench-end-interrupted")
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if len(ended) < len(tags):
        why = (f"the tracking server failed: {errors[0][:300]}" if errors
               else f"the tracking server took over {grace_s:g} s")
        log(f"  {len(tags) - len(ended)} interrupted run(s) not ended KILLED ({why}): they stay RUNNING until their "
            "heartbeat is stale, then the next driver re-runs them")
    return ended
