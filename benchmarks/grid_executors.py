"""The same grid of quick runs through the local executor and through Ray: wall time, runs per minute.

    python benchmarks/grid_executors.py [--task fashion-mnist] [--seeds 4] [--threads 1] [--out results/benchmarks]

The grid is 10 cheap method configs x `--seeds` on one task at the quick profile (40 runs by
default), plus the task's baseline row. Both executors use the same per-run protocol (`--threads`
CPU threads for latency), each in a fresh results folder whose baseline cache is filled first (so
neither pays for baseline training), and the whole `slimbench run` command is timed as a user
would see it (Ray's start, the MLflow server it serves the store with, tracking, the summary).
Writes results/benchmarks/grid-executors-vm.json. On a 2-core machine Ray can run at most
2 / threads runs at once; it has start-up costs of its own: the record says what it bought.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("quant.minmax:bits=2", "quant.minmax:bits=3", "quant.minmax", "quant.minmax:bits=8", "quant.kmeans:iters=3",
           "torch.dynamic_int8", "half", "prune.magnitude:sparsity=0.5", "prune.magnitude:sparsity=0.9",
           "lowrank.svd")


def _run(results: Path, args, executor: str) -> tuple[float, int, str]:
    argv = [sys.executable, "-m", "slimbench.suite.cli", "run", "--tasks", args.task, "--profile", "quick",
            "--seeds", str(args.seeds), "--threads", str(args.threads), "--results-dir", str(results),
            "--no-progress", "--executor", executor]
    for spec in CONFIGS:
        argv += ["--method", spec]
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc.returncode, (proc.stdout + proc.stderr)[-3000:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="fashion-mnist")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--work", default="/tmp/slimbench-grid", help="scratch folder for the two stores")
    args = ap.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    warm = work / "warm"  # the baseline trained once, copied into both stores' caches
    subprocess.run([sys.executable, "-m", "slimbench.suite.cli", "run", "--tasks", args.task, "--profile", "quick",
                    "--method", "baseline", "--results-dir", str(warm), "--no-progress"], check=True,
                   capture_output=True)
    record = {"benchmark": "grid_executors", "task": args.task, "profile": "quick", "configs": list(CONFIGS),
              "seeds": args.seeds, "runs": len(CONFIGS) * args.seeds + 1, "threads_per_run": args.threads,
              "cpus": len(os.sched_getaffinity(0)),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "executors": {}}
    for executor in ("local", "ray"):
        store = work / executor
        shutil.copytree(warm / "cache", store / "cache")
        seconds, rc, tail = _run(store, args, executor)
        record["executors"][executor] = {"seconds": round(seconds, 1), "exit_code": rc,
                                         "runs_per_minute": round(60 * record["runs"] / seconds, 2)}
        print(f"{executor}: {seconds:.1f} s, exit {rc}", flush=True)
        if rc:
            record["executors"][executor]["tail"] = tail
    loc, ray = record["executors"]["local"]["seconds"], record["executors"]["ray"]["seconds"]
    record["ray_speedup"] = round(loc / ray, 3)
    out = Path(args.out) / "grid-executors-vm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"ray speedup {record['ray_speedup']}x; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
