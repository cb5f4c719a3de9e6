"""Times the suite's own targets on this machine and writes results/benchmarks/suite-timings-<host>.json.

Targets (issue: Foundation): `slimbench --help` and `slimbench list` <= 2 s; `slimbench run
--profile quick` <= 3 min from an empty baseline cache; the default profile's wall time reported.

    python benchmarks/suite_timings.py            # --help, list, quick
    python benchmarks/suite_timings.py --default  # also the default profile (minutes)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slimbench.suite.provenance import cpu_model, git_commit

ROOT = Path(__file__).resolve().parent.parent
EXE = [sys.executable, "-m", "slimbench.suite.cli"]


def timed(args: list[str], repeat: int = 1) -> dict:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(EXE + args, capture_output=True, text=True)
        times.append(round(time.perf_counter() - t0, 3))
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"command": "slimbench " + " ".join(args), "seconds": times, "best_s": min(times)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--default", action="store_true", help="also time the default profile")
    ap.add_argument("--workdir", type=Path, help="keep each profile's results dir here (default: temporary)")
    args = ap.parse_args()
    out: dict = {"benchmark": "suite_timings", "git_commit": git_commit(),
                 "machine": {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()},
                 "targets": {"help_s": 2.0, "list_s": 2.0, "quick_s": 180.0}, "results": {}}
    r = out["results"]
    r["help"] = timed(["--help"], repeat=3)
    r["list"] = timed(["list"], repeat=3)
    profiles = ["quick"] + (["default"] if args.default else [])
    for profile in profiles:
        tmp = args.workdir / profile if args.workdir else Path(tempfile.mkdtemp(prefix=f"slimbench-{profile}-"))
        shutil.rmtree(tmp, ignore_errors=True)  # an empty baseline cache: the target includes training
        try:
            r[profile] = timed(["run", "--profile", profile, "--results-dir", str(tmp), "--no-progress"])
        finally:
            if not args.workdir:
                shutil.rmtree(tmp, ignore_errors=True)
    out["pass"] = (r["help"]["best_s"] <= 2.0 and r["list"]["best_s"] <= 2.0 and r["quick"]["best_s"] <= 180.0)
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname() or "unknown")
    path = ROOT / "results" / "benchmarks" / f"suite-timings-{host}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out["results"], indent=2))
    print(f"wrote {path}")
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
