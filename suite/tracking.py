"""MLflow tracking: one run per (task, method config, seed, profile).

Conventions every consumer (the `results` command, the leaderboard) relies on:
- experiment `slimbench` (override with `--experiment`);
- tags `slimbench.run_key` (hash of task, profile, method, full config, seed, device),
  `slimbench.task`, `slimbench.method`, `slimbench.family`, `slimbench.label`,
  `slimbench.status` (FINISHED | FAILED | UNSUPPORTED), `slimbench.simulated` ("true"/"false"),
  plus provenance tags (`slimbench.git_commit`, versions, device, CPU model, threads);
- params: `task`, `method`, `seed`, `profile`, `device`, and `config.<field>` per config field;
- metrics: the flat numbers of run.json (see RUN_SCHEMA below);
- artifacts: `run.json` (everything the leaderboard needs), `artifact/` (the compressed
  model: `model.safetensors` + `model.json`), and `traceback.txt` for failed runs.

RUN_SCHEMA (run.json, version 1):
    {"schema": 1, "run_key", "status", "command" (reproduces this one run), "invocation",
     "task": {"name", "kind", "metric", "profile", "num_classes"},
     "method": {"name", "family", "label", "description", "simulated", "config": {...}},
     "seed", "device": {"type", "name", "threads"},
     "metrics": {"accuracy", "balanced_accuracy", "size_bytes", "params_total",
                 "params_nonzero", "flops_dense", "flops_effective", "weights_bytes"},
     "latency": [{"device", "batch_size", "median_ms", "p90_ms", "mean_ms", "std_ms",
                  "runs", "threads", "dtype"}],
     "memory": [{"device", "batch_size", "peak_bytes", "dtype"}],
     "provenance": {"git_commit", "slimbench", "torch", "cuda", "device_name", "cpu_model",
                    "threads", "python", "platform", "mlflow_run_id", "started", "duration_s"},
     "error": str | null}
FLOPs are per forward pass at batch size 1.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

EXPERIMENT = "slimbench"
DEFAULT_RESULTS = Path("results")


def tracking_uri(results_dir: Path = DEFAULT_RESULTS) -> str:
    """`MLFLOW_TRACKING_URI` if set, else a SQLite database under results/."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    results_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


def _quiet_mlflow() -> None:
    import logging
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import mlflow  # noqa: F401  (configures its loggers on import; override after)
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Tracker:
    """Thin wrapper over MlflowClient with slimbench's conventions."""

    def __init__(self, uri: str | None = None, experiment: str = EXPERIMENT,
                 results_dir: Path = DEFAULT_RESULTS, create: bool = True):
        """`create=False` is for readers (results, leaderboard): a missing experiment is an
        error naming the ones that exist, never a new empty experiment."""
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.uri = uri or tracking_uri(results_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None and not create:
            from slimbench.suite.config import ConfigError
            names = sorted(e.name for e in self.client.search_experiments())
            raise ConfigError(f"no MLflow experiment {experiment!r} at {self.uri}; existing: "
                              f"{', '.join(names) or '(none: run `slimbench run` first)'}")
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):  # keep artifacts beside the database
                location = (results_dir / "mlartifacts").resolve().as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id

    def completed(self, run_key: str) -> str | None:
        """The id of a FINISHED run with this key, if any (so re-runs can skip it)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`slimbench.run_key` = '{run_key}' and attributes.status = 'FINISHED'",
            max_results=1)
        return runs[0].info.run_id if runs else None

    def start(self, run_name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        return run.info.run_id

    def log(self, run_id: str, params: dict[str, Any], metrics: dict[str, float],
            tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, Param, RunTag
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_json(self, run_id: str, name: str, obj: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(obj, indent=2, default=str))
            self.client.log_artifact(run_id, str(path))

    def log_text(self, run_id: str, name: str, text: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(run_id, str(path))

    def log_dir(self, run_id: str, local_dir: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    def runs(self, max_results: int = 10000) -> list[Any]:
        """All runs of the experiment, newest first."""
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=min(1000, max_results),
                                           order_by=["attributes.start_time DESC"], page_token=token)
            out.extend(page)
            token = page.token
            if not token or len(out) >= max_results:
                return out

    def run_json(self, run_id: str) -> dict[str, Any] | None:
        """run.json of a run, or None if it has none (e.g. killed before the end)."""
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(run_id, "run.json", tmp)
                text = Path(path).read_text()
        except Exception:  # no run.json: the run was killed before it wrote one
            return None
        return json.loads(text)


def latest_per_key(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the newest record per `run_key`: a `--force` re-run or a retry after a failure
    replaces the older run instead of counting as another seed."""
    newest: dict[str, int] = {}
    for i, r in enumerate(records):
        key, started = r.get("run_key"), str((r.get("provenance") or {}).get("started") or "")
        if key and (key not in newest or started > str(records[newest[key]]["provenance"].get("started") or "")):
            newest[key] = i
    keep = set(newest.values())
    return [r for i, r in enumerate(records) if not r.get("run_key") or i in keep]  # input order kept
