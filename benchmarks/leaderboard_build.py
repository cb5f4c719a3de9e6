"""Benchmark: build the leaderboard site from 1,000 synthetic runs.

Targets (issue 4): the build takes <= 5 s on a 2-core machine and the index is < 5 MB.
The runs are synthetic run.json dicts (no MLflow, no training), so this times the build
itself. Writes results/benchmarks/leaderboard-build-<host>.json and exits 1 if a target
is missed.

    python benchmarks/leaderboard_build.py [--runs 1000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from slimbench.leaderboard.rows import aggregate
from slimbench.leaderboard.site import build_site
from slimbench.suite.provenance import cpu_model

SYNTHETIC = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "leaderboard" / "synthetic.py"


def synthetic_runs(n: int) -> list[dict]:
    """The tests' synthetic run.json fixture (a source checkout's tests/, loaded by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("leaderboard_fixture_synthetic", SYNTHETIC)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.synthetic_runs(n)

TARGET_BUILD_S = 5.0
TARGET_INDEX_BYTES = 5_000_000


def _host() -> str:
    name = socket.gethostname() or cpu_model()
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)

    runs = synthetic_runs(args.runs)
    t0 = time.perf_counter()
    board = aggregate(runs)
    aggregate_s = time.perf_counter() - t0
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"site-{i}"  # fresh folder each time: no warm files to overwrite
            t0 = time.perf_counter()
            index = build_site(runs, out)
            times.append(time.perf_counter() - t0)
        files = [p for p in out.rglob("*") if p.is_file()]
        index_bytes = index.stat().st_size
        total_bytes = sum(p.stat().st_size for p in files)
    result = {
        "benchmark": "leaderboard_build", "runs": len(runs), "repeat": args.repeat,
        "build_s_median": statistics.median(times), "build_s_max": max(times), "build_s_all": times,
        "aggregate_s": aggregate_s, "rows": len(board.rows()), "failed_runs": len(board.failed()),
        "sections": len(board.sections), "index_bytes": index_bytes, "site_bytes": total_bytes,
        "files": len(files), "targets": {"build_s": TARGET_BUILD_S, "index_bytes": TARGET_INDEX_BYTES},
        "machine": {"host": socket.gethostname(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "platform": platform.platform()},
    }
    result["pass"] = result["build_s_max"] <= TARGET_BUILD_S and index_bytes < TARGET_INDEX_BYTES
    dest = args.results_dir / "benchmarks" / f"leaderboard-build-{_host()}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{len(runs)} runs -> {result['rows']} rows, {len(files)} files: build median "
          f"{result['build_s_median']:.2f} s (max {result['build_s_max']:.2f} s, target <= {TARGET_BUILD_S} s), "
          f"index {index_bytes / 1e6:.2f} MB (target < {TARGET_INDEX_BYTES / 1e6:.0f} MB), "
          f"site {total_bytes / 1e6:.1f} MB -> {dest}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
