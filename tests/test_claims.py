"""The run-claim rule (`suite.claims.yield_reason`) on given runs: which of two runs of one key gives way."""
from __future__ import annotations

from types import SimpleNamespace

from slimbench.suite.claims import yield_reason

NOW = 10_000.0


def _run(run_id, status="RUNNING", start_s=9_000.0, beat=None, **tags):
    tags = {k.replace("__", "."): v for k, v in tags.items()}
    if beat is not None:
        tags["slimbench.heartbeat"] = f"{beat:.0f}"
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, status=status, start_time=int(start_s * 1000)),
                           data=SimpleNamespace(tags=tags))


def test_a_finished_run_wins_unless_forced():
    runs = [_run("me"), _run("old", "FINISHED", 100.0)]
    assert "old finished this key" in yield_reason(runs, "me", False, 150, NOW)
    assert yield_reason(runs, "me", True, 150, NOW) is None


def test_the_earlier_live_run_wins_ties_by_id_and_a_silent_one_is_a_leftover():
    me = _run("b", start_s=9_500.0)
    assert "a is running this key" in yield_reason([me, _run("a", start_s=9_400.0, beat=NOW - 10)], "b", False, 150, NOW)
    assert yield_reason([me, _run("c", start_s=9_600.0, beat=NOW)], "b", False, 150, NOW) is None  # started later
    assert "a is running" in yield_reason([me, _run("a", start_s=9_500.0, beat=NOW)], "b", False, 150, NOW)
    assert yield_reason([me, _run("a", start_s=9_500.0, beat=NOW)], "a", False, 150, NOW) is None
    stale = _run("a", start_s=9_400.0, beat=NOW - 151)
    assert yield_reason([me, stale], "b", False, 150, NOW) is None
    no_beat = _run("a", start_s=9_400.0)  # never beat yet: its start time is its last sign of life
    assert "a is running" in yield_reason([me, no_beat], "b", False, 1000, NOW)
    assert yield_reason([me, no_beat], "b", False, 500, NOW) is None


def test_search_candidates_and_nested_runs_never_count():
    runs = [_run("me"), _run("x", "FINISHED", slimbench__kind="candidate"),
            _run("y", "FINISHED", mlflow__parentRunId="p")]
    assert yield_reason(runs, "me", False, 150, NOW) is None
