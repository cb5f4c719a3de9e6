"""`--executor ray` against a local Ray cluster and a local MLflow server (both started and stopped
here): the grid runs, a re-run duplicates nothing, a killed worker's run is ended KILLED and retried,
a run past its timeout is killed, two drivers on the same grid never both finish a key, and an
unreachable cluster or server is an error before any work."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

from slimbench.suite.cli import main  # noqa: E402
from slimbench.suite.distributed import LocalServer, free_port  # noqa: E402
from slimbench.suite.tracking import Tracker  # noqa: E402

TOY = str(Path(__file__).parent / "fixtures" / "toy.yaml")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A local `mlflow server` over a fresh SQLite store on 127.0.0.1 (a free port)."""
    where = tmp_path_factory.mktemp("mlflow")
    with LocalServer(f"sqlite:///{where / 'mlflow.db'}", where) as srv:
        yield srv.uri


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs (`ray start --head`), stopped at the end."""
    port = free_port()
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, capture_output=True, env=env,
                   timeout=120)
    yield f"127.0.0.1:{port}"
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], capture_output=True, timeout=120)


def _runs(uri: str, experiment: str) -> list:
    t = Tracker(uri, experiment, Path("results"), create=False)
    return [r for r in t.runs() if r.data.tags.get("slimbench.kind") == "run"]


def _argv(tmp_path, uri, experiment, *extra) -> list[str]:
    return ["run", "--task-file", TOY, "--profile", "quick", "--results-dir", str(tmp_path), "--tracking-uri", uri,
            "--experiment", experiment, "--no-progress", "--threads", "1", *extra]


def test_grid_on_ray_then_a_rerun_duplicates_nothing(tmp_path, server, cluster, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    argv = _argv(tmp_path, server, "grid", "--executor", "ray", "--address", cluster,
                 "--method", "quant.minmax", "--method", "torch.dynamic_int8", "--seeds", "2")
    assert main(argv) == 0
    runs = _runs(server, "grid")
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)  # 2 x 2 + the baseline row
    workers = {r.data.tags["slimbench.worker"] for r in runs}
    assert all(w.split(":")[1] != str(os.getpid()) for w in workers)  # measured in Ray workers, not here
    assert all(r.data.tags.get("slimbench.attempt") for r in runs)
    assert {r.data.tags["slimbench.executor"] for r in runs} == {"ray (1 CPU thread(s) per run)"}
    assert main(argv) == 0  # resumes: every key is done
    assert len(_runs(server, "grid")) == 5


def _wait_for_running(uri, experiment, method, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            live = [r for r in _runs(uri, experiment)
                    if r.info.status == "RUNNING" and r.data.tags.get("slimbench.method") == method]
        except Exception:  # the experiment does not exist yet
            live = []
        if live:
            return live[0]
        time.sleep(0.3)
    raise AssertionError(f"no RUNNING {method} run appeared")


def _driver(tmp_path, uri, experiment, *extra) -> subprocess.Popen:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "slimbench.suite.cli", *_argv(tmp_path, uri, experiment, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def test_a_killed_worker_ends_killed_and_its_run_is_retried(tmp_path, server, cluster):
    proc = _driver(tmp_path, server, "kill", "--executor", "ray", "--address", cluster,
                   "--method", "demo.round:sleep_s=6", "--retries", "1")
    try:
        victim = _wait_for_running(server, "kill", "demo.round")
        os.kill(int(victim.data.tags["slimbench.worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    runs = [r for r in _runs(server, "kill") if r.data.tags.get("slimbench.method") == "demo.round"]
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"], out
    killed = next(r for r in runs if r.info.status == "KILLED")
    assert killed.info.run_id == victim.info.run_id and "worker died" in killed.data.tags["slimbench.killed"]
    assert "retrying (1 of 1)" in out


def test_a_run_past_its_timeout_is_killed_then_given_up(tmp_path, server, cluster, monkeypatch, capsys):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert main(_argv(tmp_path, server, "timeout", "--executor", "ray", "--address", cluster,
                      "--method", "demo.round:sleep_s=120", "--run-timeout", "20", "--retries", "1")) == 1
    runs = [r for r in _runs(server, "timeout") if r.data.tags.get("slimbench.method") == "demo.round"]
    assert [r.info.status for r in runs] == ["KILLED", "KILLED"]
    assert "timed out after 20 s; gave up after 2 attempt(s)" in capsys.readouterr().out


def test_two_drivers_on_one_grid_never_both_finish_a_key(tmp_path, server):
    grid = ("--method", "demo.round:sleep_s=2", "--method", "demo.round:sleep_s=2,decimals=3", "--seeds", "2")
    drivers = [_driver(tmp_path, server, "race", *grid) for _ in range(2)]
    outs = [d.communicate(timeout=300)[0] for d in drivers]
    assert all(d.returncode == 0 for d in drivers), outs
    runs = _runs(server, "race")
    finished: dict[str, int] = {}
    for r in runs:
        assert r.info.status == "FINISHED", (r.info.status, outs)
        finished[r.data.tags["slimbench.run_key"]] = finished.get(r.data.tags["slimbench.run_key"], 0) + 1
    assert len(finished) == 5 and set(finished.values()) == {1}, (finished, outs)
    assert any("skipped: run" in o or "already done" in o for o in outs)  # one of them gave way


def test_unreachable_cluster_or_server_fails_before_any_work(tmp_path, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(_argv(tmp_path, dead, "x", "--executor", "ray", "--method", "baseline")) == 2
    assert f"the MLflow tracking server at {dead} does not answer" in capsys.readouterr().err
    assert main(["run", "--task-file", TOY, "--results-dir", str(tmp_path), "--executor", "ray",
                 "--address", f"127.0.0.1:{free_port()}", "--method", "baseline", "--no-progress"]) == 2
    assert "cannot reach the Ray cluster" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # nothing was trained


def test_ctrl_c_on_the_driver_cancels_and_ends_runs_killed(tmp_path, server, cluster):
    proc = _driver(tmp_path, server, "interrupt", "--executor", "ray", "--address", cluster,
                   "--method", "demo.round:sleep_s=120")
    try:
        victim = _wait_for_running(server, "interrupt", "demo.round")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    run = next(r for r in _runs(server, "interrupt") if r.info.run_id == victim.info.run_id)
    assert run.info.status == "KILLED" and "Ctrl-C" in run.data.tags["slimbench.killed"]
    worker = int(victim.data.tags["slimbench.worker"].rsplit(":", 1)[1])
    deadline = time.time() + 30
    while time.time() < deadline:  # the cancelled task's worker is gone
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"worker {worker} still alive after the driver was interrupted")
