"""Times what a newcomer runs: `make bench` (or `make quick`) on a fresh clone, set-up included.

Clones this repository's HEAD into a temporary folder, runs the make target there with a clean
environment (no results, no venv), and writes results/benchmarks/make-<target>-<machine>.{md,json}:
wall time of set-up and of the run, the runs it made by status, the machine's CPU model and ISA.
Targets (issue 20): `make bench` <= 20 min, `make quick` <= 3 min for the run (2 cores).

    python benchmarks/make_bench.py                # make bench
    python benchmarks/make_bench.py --target quick
    python benchmarks/make_bench.py --venv .venv   # reuse a venv (times the run only; set-up not measured)
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = {"bench": 20 * 60, "quick": 3 * 60}


def machine() -> dict:
    flags = set()
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16") if f in flags]
    return {"cpu_model": model, "cpus": len(os.sched_getaffinity(0)), "isa": isa}


def run_times(results: Path) -> list[dict]:
    """Each tracked run's wall time, from the clone's store (read with this checkout's slimbench)."""
    try:
        from slimbench.suite.tracking import Tracker
        records = Tracker(None, "slimbench", results, create=False).read_records()
    except Exception as exc:  # no store: the run failed before tracking anything
        print(f"no per-run times: {exc}", file=sys.stderr)
        return []
    out = []
    for r in records:
        m, base = r.get("metrics") or {}, r.get("baseline") or {}
        acc = m.get("accuracy")
        out.append({"task": r["task"]["name"], "method": r["method"].get("spec") or r["method"]["name"],
                    "seed": r.get("seed"), "status": r.get("status"),
                    "seconds": (r.get("provenance") or {}).get("duration_s"),
                    "compress_seconds": (base.get("train_seconds") if r["method"]["name"] == "baseline"
                                         else m.get("compress_seconds")),
                    "accuracy": None if acc is None else round(100 * acc, 2),
                    "started": str((r.get("provenance") or {}).get("started"))})
    return sorted(out, key=lambda x: x.pop("started"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=tuple(TARGET_S), default="bench")
    ap.add_argument("--venv", type=Path, help="an existing venv to link into the clone (skips set-up)")
    ap.add_argument("--name", default="vm", help="machine name for the record file (default vm)")
    ap.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder, removed)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="slimbench-fresh-"))
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    if args.venv:
        (work / ".venv").symlink_to(args.venv.resolve())
        subprocess.run(["make", "-C", str(work), "-t", "setup"], check=True, capture_output=True)  # stamp only
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_"))}
    t0 = time.perf_counter()
    proc = subprocess.Popen(["make", "-C", str(work), args.target, "ARGS=--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    setup_s, lines = None, []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
        if setup_s is None and (line.startswith("setup: done") or re.match(r"\d+ run\(s\):", line)):
            setup_s = time.perf_counter() - t0
    code = proc.wait()
    total = time.perf_counter() - t0
    setup_s = setup_s or 0.0
    statuses: dict[str, int] = {}
    failed = work / "results" / "leaderboard" / "failed.csv"
    for row in csv.DictReader(failed.open()) if failed.exists() else []:
        statuses[row.get("status", "?")] = statuses.get(row.get("status", "?"), 0) + 1
    per_run = run_times(work / "results")
    planned = next((ln.split(" run(s)")[0] for ln in lines if re.match(r"\d+ run\(s\):", ln)), "?")
    out = {"benchmark": f"make {args.target}", "git_commit": commit, "machine": machine(), "exit_code": code,
           "setup_s": round(setup_s, 1), "run_s": round(total - setup_s, 1), "total_s": round(total, 1),
           "planned_runs": planned, "not_finished": statuses, "target_s": TARGET_S[args.target],
           "pass": code == 0 and total <= TARGET_S[args.target],
           "setup_measured": not args.venv, "runs": per_run, "tail": "".join(lines[-60:])}
    dest = ROOT / "results" / "benchmarks" / f"make-{args.target}-{args.name}"
    dest.with_suffix(".json").write_text(json.dumps(out, indent=2))
    m = out["machine"]
    dest.with_suffix(".md").write_text(
        f"# `make {args.target}` on a fresh clone\n\n"
        f"git {commit}; {m['cpu_model']}, {m['cpus']} cores, ISA flags: {', '.join(m['isa'])}.\n\n"
        f"| set-up | run | total | target | runs planned | not finished | exit |\n|---:|---:|---:|---:|---:|---|---:|\n"
        f"| {out['setup_s'] / 60:.1f} min{'' if out['setup_measured'] else ' (venv reused)'} | "
        f"{out['run_s'] / 60:.1f} min | {total / 60:.1f} min | {TARGET_S[args.target] / 60:.0f} min | {planned} | "
        f"{statuses or 'none'} | {code} |\n\n"
        "Per run (wall seconds of the whole run, of which the method's compress; the baselines' include training):\n\n"
        "| task | method | seed | run s | compress s | accuracy % |\n|---|---|---:|---:|---:|---:|\n"
        + "".join(f"| {r['task']} | {r['method']} | {r['seed']} | {r['seconds']} | {r['compress_seconds']} | "
                  f"{r['accuracy']} |\n" for r in per_run)
        + f"\nThe run's terminal output ends:\n\n```\n{''.join(lines[-45:])}```\n")
    print(f"wrote {dest}.md/.json: total {total / 60:.1f} min (set-up {setup_s / 60:.1f}, run {(total - setup_s) / 60:.1f})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if out["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
