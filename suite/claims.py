"""Who runs a run key: claims, heartbeats and the runs a dead or cancelled attempt left behind.

MLflow has no atomic claim, so drivers and Ray workers coordinate through run tags alone:
- a run is created first, then asks `Claims.claim` whether it should give way; the same rule
  (`yield_reason`) picks one winner wherever it is evaluated;
- a RUNNING run tags itself `slimbench.heartbeat` (epoch seconds) while it lives, so a RUNNING
  run silent past `stale_s` is known to be a dead run's leftover;
- a run started by a distributed attempt carries `slimbench.attempt`; `mark_killed` ends the
  runs an attempt left RUNNING as KILLED with the reason in `slimbench.killed`.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

HEARTBEAT = "slimbench.heartbeat"
ATTEMPT = "slimbench.attempt"
KILLED = "slimbench.killed"
CANDIDATE = "candidate"  # `slimbench.kind` of a search's nested runs, which share their parent's key


def yield_reason(runs: Iterable[Any], run_id: str, force: bool, stale_s: float, now: float) -> str | None:
    """Why the run `run_id` should give way to another run of its key among `runs` (MLflow runs of
    that key, itself included), else None: a FINISHED one (unless `force`), or a live RUNNING one
    that started first (ties by run id). Search candidates and nested runs never count."""
    runs = [r for r in runs
            if r.data.tags.get("slimbench.kind") != CANDIDATE and "mlflow.parentRunId" not in r.data.tags]
    mine = next((r for r in runs if r.info.run_id == run_id), None)
    order = (mine.info.start_time, run_id) if mine is not None else (float("inf"), run_id)
    for r in runs:
        if r.info.run_id == run_id:
            continue
        if r.info.status == "FINISHED" and not force:
            return f"run {r.info.run_id} finished this key meanwhile"
        if r.info.status == "RUNNING":
            beat = float(r.data.tags.get(HEARTBEAT) or r.info.start_time / 1000)
            if now - beat <= stale_s and (r.info.start_time, r.info.run_id) < order:
                return f"run {r.info.run_id} is running this key ({r.data.tags.get('slimbench.worker', '?')})"
    return None


class Claims:
    """The protocol over one experiment of an MlflowClient. `search(filter, max_results)` returns
    the experiment's runs matching an MLflow filter string, newest first."""

    def __init__(self, client: Any, search: Callable[[str, int], list[Any]]):
        self.client, self._search = client, search

    def claim(self, run_key: str, run_id: str, force: bool, stale_s: float) -> str | None:
        """Why the just-started run `run_id` should give way to another run of `run_key`, else None
        (`yield_reason` over the key's runs now in the store)."""
        now = time.time()
        return yield_reason(self._search(f"tags.`slimbench.run_key` = '{run_key}'", 1000), run_id, force,
                            stale_s, now)

    def heartbeat(self, run_id: str) -> None:
        self.client.set_tag(run_id, HEARTBEAT, f"{time.time():.0f}")

    def mark_killed(self, attempt: str, reason: str) -> list[str]:
        """End the runs an attempt left RUNNING (its worker died or was cancelled) as KILLED."""
        runs = self._search(f"tags.`{ATTEMPT}` = '{attempt}' and attributes.status = 'RUNNING'", 100)
        for r in runs:
            self.client.set_tag(r.info.run_id, "slimbench.status", "KILLED")
            self.client.set_tag(r.info.run_id, KILLED, reason[:500])
            self.client.set_terminated(r.info.run_id, status="KILLED")
        return [r.info.run_id for r in runs]


class Heartbeat:
    """While a run is RUNNING, a daemon thread tags it with the time every `every` seconds, so another
    driver can tell a live run from a dead one's leftover."""

    def __init__(self, claims: Claims, run_id: str, every: float):
        self._claims, self._run_id, self._every = claims, run_id, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="slimbench-heartbeat")

    def _beat(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._claims.heartbeat(self._run_id)
            except Exception:  # the store is busy or gone: the run itself will report that
                pass

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
