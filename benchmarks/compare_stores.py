"""Compare the deterministic figures of two result stores, run by run.

Why: a refactor of the harness must not change what the existing methods measure. Run the same
profile with the old and the new code into two results folders, then:

    python benchmarks/compare_stores.py OLD_RESULTS NEW_RESULTS --out results/benchmarks/NAME.md

For every (task, method label, seed, status) present in either store it prints accuracy, balanced
accuracy, size, parameter counts and FLOPs side by side, flagging any difference (latency is
left out: it is a timing, not a result, and differs from run to run).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

FIELDS = ("accuracy", "balanced_accuracy", "size_bytes", "params_total", "params_nonzero",
          "flops_dense", "flops_effective")


def records(results: Path) -> dict[tuple, dict]:
    from slimbench.suite.tracking import Tracker

    out = {}
    for r in Tracker(None, "slimbench", results, create=False).read_records():
        out[(r["task"]["name"], r["method"]["label"], r["seed"])] = r
    return out


def compare(old: dict[tuple, dict], new: dict[tuple, dict]) -> tuple[list[str], int]:
    lines = ["| task | method | status | " + " | ".join(FIELDS) + " |", "|---" * (len(FIELDS) + 3) + "|"]
    differ = 0
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        status = f"{(a or {}).get('status', '—')} / {(b or {}).get('status', '—')}"
        cells = []
        for f in FIELDS:
            x = (a or {}).get("metrics", {}).get(f)
            y = (b or {}).get("metrics", {}).get(f)
            if x == y:
                cells.append("=" if x is not None else "—")
            else:
                differ += 1
                cells.append(f"**{_fmt(x)} → {_fmt(y)}**")
        lines.append(f"| {key[0]} | {key[1]} | {status} | " + " | ".join(cells) + " |")
    return lines, differ


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:.4f}" if isinstance(v, float) and v < 1 else f"{v:,.0f}" if isinstance(v, (int, float)) else str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="results folder of the reference run")
    p.add_argument("new", type=Path, help="results folder of the run to check")
    p.add_argument("--out", type=Path, help="also write the table as Markdown here")
    args = p.parse_args(argv)
    lines, differ = compare(records(args.old), records(args.new))
    text = "\n".join(lines) + f"\n\n{differ} differing figure(s); '=' means identical.\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
