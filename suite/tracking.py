"""MLflow tracking: one run per (task, method config, seed, profile, device), and the one reader.

Conventions every consumer relies on:
- experiment `slimbench` (override with `--experiment`);
- tags `slimbench.run_key` (hash of task, profile, method, its version and full config, seed,
  device label), `slimbench.task`, `slimbench.method`, `slimbench.family`, `slimbench.label`,
  `slimbench.profile`, `slimbench.device_label`, `slimbench.status`, `slimbench.simulated`
  ("true"/"false"), `slimbench.kind` ("run", or "candidate" for a search's nested runs, which
  carry `mlflow.parentRunId`), plus provenance tags (git commit, versions, device, CPU model);
- params: `task`, `method`, `seed`, `profile`, `device`, `method_version`, `config.<field>`;
- metrics: `RunRecord.flat_metrics()`;
- artifacts: `run.json` (the `RunRecord`, schema in `slimbench.core.record`), `artifact/`
  (the compressed model: `model.safetensors` + `model.json`), `method_metrics.json` (what the
  method reported, structured values included), `method_config/` (config files a spec read,
  verbatim) and `traceback.txt` for failed runs.

Which run owns a run key (claims, heartbeats, runs a dead attempt left RUNNING) is `suite.claims`,
over this tracker's client (`Tracker.claims`).

`read_records` is the one way runs are read back (`slimbench results`, the leaderboard): it
skips search candidates, stands in for runs killed before writing run.json, upgrades old
schemas and keeps the newest run per run key.
"""
from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slimbench.core.record import RunRecord, latest_per_key
from slimbench.suite.claims import CANDIDATE, Claims

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


def record_tags(record: RunRecord) -> dict[str, str]:
    """The tags a run carries from its start (so a killed run can still be listed)."""
    return {"slimbench.run_key": record.run_key, "slimbench.task": record.task.name,
            "slimbench.method": record.method.name, "slimbench.family": record.method.family,
            "slimbench.label": record.method.label, "slimbench.profile": record.task.profile,
            "slimbench.device_label": record.device.label, "slimbench.kind": "run",
            "slimbench.baseline_key": record.baseline.get("key", ""),
            "slimbench.device": json.dumps(dataclasses.asdict(record.device)),
            "slimbench.simulated": str(record.method.simulated).lower(),
            **{f"slimbench.{k}": json.dumps(v) if isinstance(v, (dict, list)) else v
               for k, v in record.provenance.items() if v is not None}}


def record_params(record: RunRecord, device: str) -> dict[str, Any]:
    return {"task": record.task.name, "method": record.method.name, "seed": record.seed,
            "profile": record.task.profile, "device": device, "method_version": record.method.version,
            **{f"config.{k}": v for k, v in record.method.config.items()}}


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
            from slimbench.core.config import ConfigError
            names = sorted(e.name for e in self.client.search_experiments())
            raise ConfigError(f"no MLflow experiment {experiment!r} at {self.uri}; existing: "
                              f"{', '.join(names) or '(none: run `slimbench run` first)'}")
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:"):  # keep artifacts beside the database
                location = (results_dir / "mlartifacts").resolve().as_uri()
            try:
                exp_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # another driver created it a moment ago (a shared server): use theirs
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        self.claims = Claims(self.client, lambda f, n: self._search(f, max_results=n))

    def _search(self, filter_string: str, max_results: int = 1) -> list[Any]:
        return self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=max_results,
                                       order_by=["attributes.start_time DESC"])

    def completed(self, run_key: str) -> str | None:
        """The id of a FINISHED run with this key, if any (so re-runs can skip it)."""
        runs = self._search(f"tags.`slimbench.run_key` = '{run_key}' and attributes.status = 'FINISHED'",
                            max_results=1000)
        runs = [r for r in runs if r.data.tags.get("slimbench.kind") != CANDIDATE]  # a search's nested runs share it
        return runs[0].info.run_id if runs else None

    def finished_baseline(self, task: str, profile: str, baseline_key: str, device_label: str) -> str | None:
        """The newest FINISHED baseline run of a task, profile and task definition (its baseline
        key: model, data, recipe) on a device label, if any."""
        label = device_label.replace("'", "\\'")
        runs = self._search(f"tags.`slimbench.task` = '{task}' and tags.`slimbench.method` = 'baseline' and "
                            f"tags.`slimbench.profile` = '{profile}' and tags.`slimbench.baseline_key` = '{baseline_key}' and "
                            f"tags.`slimbench.device_label` = '{label}' and attributes.status = 'FINISHED'")
        return runs[0].info.run_id if runs else None

    def start(self, run_name: str, tags: dict[str, str]) -> str:
        tags = {k: str(v) for k, v in tags.items()}  # a tracking server takes strings only
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        return run.info.run_id

    def log_candidate(self, parent_id: str, name: str, params: dict[str, Any], metrics: dict[str, float],
                      tags: dict[str, str] | None = None) -> str:
        """A finished nested run under `parent_id` (one search candidate)."""
        run_id = self.start(name, {"mlflow.parentRunId": parent_id, "slimbench.kind": CANDIDATE, **(tags or {})})
        self.log(run_id, params, metrics, {})
        self.client.log_dict(run_id, {"name": name, "params": params, "metrics": metrics}, "candidate.json")
        self.end(run_id, "FINISHED")
        return run_id

    def prior_candidates(self, run_key: str, current: str) -> list[dict[str, Any]]:
        """Candidates tracked under earlier runs of `run_key` that did not finish (killed, failed or
        still marked running), as `{"params", "metrics"}`: what a resumed search starts from. A
        FINISHED run's candidates are never reused (`--force` means search again)."""
        runs = self._search(f"tags.`slimbench.run_key` = '{run_key}' and tags.`slimbench.kind` = '{CANDIDATE}'",
                            max_results=5000)
        status: dict[str, str] = {}
        out = []
        for run in runs:
            parent = run.data.tags.get("mlflow.parentRunId")
            if not parent or parent == current:
                continue
            if parent not in status:
                try:
                    status[parent] = self.client.get_run(parent).info.status
                except Exception:  # a deleted parent: its candidates are still what was measured
                    status[parent] = "FAILED"
            if status[parent] != "FINISHED":
                out.append({"params": dict(run.data.params), "metrics": dict(run.data.metrics)})
        return out

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

    def log_record(self, run_id: str, record: RunRecord, params: dict[str, Any]) -> None:
        """Everything a finished (or failed) run leaves: params, metrics, status tag, run.json."""
        self.log(run_id, params, record.flat_metrics(), {"slimbench.status": record.status})
        self.client.log_dict(run_id, record.to_dict(), "run.json")
        if record.method_metrics:  # all of them, structured ones too (numbers are also metrics)
            self.client.log_dict(run_id, record.method_metrics, "method_metrics.json")
        for i, (path, text) in enumerate(record.method.config_files.items()):
            self.client.log_text(run_id, text, f"method_config/{i}-{Path(path).name}")

    def log_text(self, run_id: str, name: str, text: str) -> None:
        self.client.log_text(run_id, text, name)

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
            data = _download_json(self.client, run_id)
        except Exception:  # no run.json: the run was killed before it wrote one
            return None
        return data if isinstance(data, dict) else None

    def record(self, run_id: str) -> dict[str, Any] | None:
        """One run read back as a normalized record dict (None if it wrote no run.json)."""
        data = self.run_json(run_id)
        return None if data is None else RunRecord.from_dict(data).to_dict()

    def read_records(self, task: str | None = None, method: str | None = None,
                     status: str | None = None) -> list[dict[str, Any]]:
        """Every top-level run as a normalized record dict, newest run per run key, optionally
        filtered; runs killed before writing run.json appear as FAILED stand-ins."""
        out = []
        for run in self.runs():
            tags = run.data.tags
            if tags.get("slimbench.kind") == CANDIDATE or "mlflow.parentRunId" in tags:
                continue
            if task and tags.get("slimbench.task") != task:
                continue
            if method and tags.get("slimbench.method") != method:
                continue
            data = self.run_json(run.info.run_id)
            rec = RunRecord.from_dict(data if data is not None else _stand_in(run)).to_dict()
            if not rec["provenance"].get("mlflow_run_id"):
                rec["provenance"]["mlflow_run_id"] = run.info.run_id
            out.append(rec)
        out = latest_per_key(out)
        if status:
            out = [r for r in out if r["status"] == status.upper()]
        return out


def _download_json(client: Any, run_id: str) -> Any:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, "run.json", tmp)).read_text())


def _stand_in(run: Any) -> dict[str, Any]:
    """A FAILED record for a run that never wrote run.json (killed hard, or still running),
    built from the tags and params the harness logs when a run starts."""
    tags, params = dict(run.data.tags), dict(run.data.params)
    skip = {"task", "method", "family", "label", "status", "simulated", "run_key", "profile", "device_label", "kind",
            "baseline_key", "device", "heartbeat", "attempt", "killed"}
    prov: dict[str, Any] = {k.split(".", 1)[1]: v for k, v in tags.items()
                            if k.startswith("slimbench.") and k.split(".", 1)[1] not in skip}
    prov["mlflow_run_id"] = run.info.run_id
    if run.info.start_time:
        prov["started"] = datetime.fromtimestamp(run.info.start_time / 1000, timezone.utc).isoformat()
    seed = params.get("seed")
    try:  # the whole device (capability included), so the stand-in lands in its run's section
        device = json.loads(tags["slimbench.device"])
    except (KeyError, ValueError):  # stores written before the tag: what the params and provenance give
        kind = str(params.get("device", "?")).split(":")[0]
        device = {"type": kind, "name": prov.get("device_name", ""), "threads": prov.get("threads")}
    killed = run.info.status == "KILLED"
    return {
        "run_key": tags.get("slimbench.run_key", ""), "status": "KILLED" if killed else "FAILED", "command": None,
        "task": {"name": tags.get("slimbench.task") or params.get("task", "?"),
                 "profile": tags.get("slimbench.profile") or params.get("profile", "")},
        "method": {"name": tags.get("slimbench.method") or params.get("method", "?"),
                   "family": tags.get("slimbench.family", ""), "label": tags.get("slimbench.label", ""),
                   "simulated": tags.get("slimbench.simulated") == "true",
                   "config": {k[7:]: v for k, v in params.items() if k.startswith("config.")}},
        "seed": int(seed) if seed and seed.lstrip("-").isdigit() else seed,
        "device": device, "baseline": {"key": tags.get("slimbench.baseline_key", "")},
        "provenance": prov,
        "error": (f"killed: {tags['slimbench.killed']}" if killed and tags.get("slimbench.killed") else
                  "no run.json: the run was killed before writing its results, or is still running "
                  f"(MLflow status {run.info.status})"),
    }
