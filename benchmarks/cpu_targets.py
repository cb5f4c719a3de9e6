"""The CPU latency targets of the default set, checked in one run on one machine.

    python benchmarks/cpu_targets.py [--threads N] [--rounds 3] [--out results/benchmarks] [--quick]

Each row's method compresses its task's model with the quick profile's budgets (what is timed is the
architecture and the stored format, not the accuracy: the accuracy of these rows is in the
leaderboard, not here); the result is saved as the suite's artifact and reloaded from its bytes onto
a freshly built model, as the harness does; then every reloaded model and the fp32 baseline are timed
eager with the suite's latency protocol at the task's latency batch sizes, in `--rounds` interleaved
rounds (every model once per round), so drift of a shared machine hits all rows alike. A ratio is
the baseline's median over the row's median (>1: faster). For every target missed, the record keeps
the row's top operators from torch.profiler: where the time goes, not a guess.
Writes results/benchmarks/cpu-targets-vm-<isa>.{json,md} (-quick with --quick). Run it on a quiet
machine: these are timings.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (task, method spec, the ratio the row must reach against fp32 at every batch size in `batches`
# (None: all of the task's), what the target is): the CPU targets of the default set.
TARGETS = (
    ("rotten-tomatoes", "torch.dynamic_int8", None, None, "PyTorch's own int8 (fbgemm/oneDNN): the anchor"),
    ("rotten-tomatoes", "quant.w8a8", 1.5, None, "W8A8 >= 1.5x fp32 and never slower than torch.dynamic_int8"),
    ("rotten-tomatoes", "quant.minmax", 1.0, None, "4-bit weight-only >= 1.0x"),
    ("rotten-tomatoes", "prune.magnitude:sparsity=0.9,finetune=false", 1.2, None, "90% unstructured >= 1.2x"),
    ("fashion-mnist", "prune.structured:ratio=0.3", 1.0, (64,), "fewer FLOPs, no slower at batch 64"),
    ("fashion-mnist", "prune.structured:ratio=0.5", 1.0, (64,), "fewer FLOPs, no slower at batch 64"),
    ("fashion-mnist", "distill.kd", 1.0, (64,), "fewer FLOPs, no slower at batch 64"),
    ("fashion-mnist", "nas.evolution", 1.0, (64,), "fewer FLOPs, no slower at batch 64"),
)


def _profile(model, inputs: dict, top: int = 6) -> list[str]:
    """The row's top operators by self CPU time over a few calls."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(**inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                model(**inputs)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [f"{e.key}: {e.self_cpu_time_total / 3e3:.2f} ms/call ({100 * e.self_cpu_time_total / total:.0f}%)"
            for e in events[:top]]


def _build(task_name: str, specs: list[str], tmp: Path) -> dict[str, object]:
    """Each spec compressed with the quick profile's budgets, saved and reloaded; plus the baseline."""
    from slimbench.methods import create_method
    from slimbench.suite.artifact import load_artifact, save_artifact
    from slimbench.suite.context import make_context
    from slimbench.tasks import get_task

    quick = get_task(task_name, "quick")
    base = quick.build_model().eval()
    models = {"baseline": base}
    for i, spec in enumerate(specs):
        method = create_method(spec)
        result = method.compress(copy.deepcopy(base), make_context(quick, baseline=base, seed=0))
        save_artifact(result, method, tmp / f"{task_name}-{i}")
        models[spec] = load_artifact(tmp / f"{task_name}-{i}", quick.build_model, method).eval()
        print(f"built {task_name} {spec}", flush=True)
    return models


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (the median is kept)")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--quick", action="store_true", help="short timings (a smoke run, not a record)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    from slimbench.core.record import capability_text
    from slimbench.suite.measure.latency import LatencyConfig, measure_latency
    from slimbench.suite.measure.paths import execution_paths
    from slimbench.suite.provenance import capability, device_name
    from slimbench.tasks import get_task

    threads = args.threads or len(os.sched_getaffinity(0))
    cfg = LatencyConfig(warmup=2 if args.quick else 5, min_runs=3 if args.quick else 15,
                        min_seconds=0.05 if args.quick else 1.0, max_seconds=1 if args.quick else 6, threads=threads)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in dict.fromkeys(t[0] for t in TARGETS):
            targets = [t for t in TARGETS if t[0] == task_name]
            models = _build(task_name, [t[1] for t in targets], Path(tmp))
            task = get_task(task_name)
            for bs in task.config.latency_batch_sizes:
                inputs = task.example_inputs(bs)
                times: dict[str, list[float]] = {name: [] for name in models}
                for _ in range(args.rounds):
                    for name, model in models.items():
                        def call(model=model):
                            with torch.inference_mode():
                                return model(**inputs)
                        times[name].append(measure_latency(call, "cpu", cfg).median_ms)
                base_ms = statistics.median(times["baseline"])
                anchor = statistics.median(times["torch.dynamic_int8"]) if "torch.dynamic_int8" in times else None
                for _, spec, need, batches, what in targets:
                    ms = statistics.median(times[spec])
                    row = {"task": task_name, "method": spec, "batch": bs, "ms": round(ms, 3),
                           "baseline_ms": round(base_ms, 3), "ratio": round(base_ms / ms, 3),
                           "rounds_ms": [round(t, 3) for t in times[spec]], "target": what}
                    if need is not None and (batches is None or bs in batches):
                        row["need"] = need
                        row["met"] = base_ms / ms >= need
                        if spec == "quant.w8a8" and anchor is not None:
                            row["vs_dynamic_int8"] = round(anchor / ms, 3)
                            row["met"] = row["met"] and anchor / ms >= 1.0
                        if not row["met"]:
                            row["profile"] = _profile(models[spec], inputs)
                            row["baseline_profile"] = _profile(models["baseline"], inputs)
                    rows.append(row)
                    mark = {True: "met", False: "MISSED"}.get(row.get("met"), "")
                    print(f"{task_name:16s} {spec:46s} bs{bs:<3d} {ms:8.3f} ms  x{base_ms / ms:.2f} {mark}", flush=True)
            for spec in (t[1] for t in targets):
                paths = sorted(set(execution_paths(models[spec], "cpu", torch.float32).values()))
                for r in rows:
                    if r["task"] == task_name and r["method"] == spec:
                        r["paths"] = paths
    cap = capability("cpu")
    record = {"benchmark": "cpu_targets", "quick": args.quick, "threads": threads, "rounds": args.rounds,
              "timed": "each model reloaded from its saved artifact (as the harness measures), eager, fp32 inputs",
              "device": device_name("cpu"), "capability": cap, "torch": torch.__version__,
              "python": platform.python_version(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "rows": rows}
    isa = capability_text(cap).lower().replace(" ", "-") or "cpu"
    stem = Path(args.out) / f"cpu-targets-vm-{isa}{'-quick' if args.quick else ''}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
    stem.with_suffix(".md").write_text(markdown(record))
    print(f"wrote {stem}.json and .md")
    return 0


def markdown(record: dict) -> str:
    """The record as a table: one line per row and batch size, the misses' profiles below it."""
    from slimbench.core.record import capability_text

    lines = [f"# CPU latency targets ({record['date'][:10]})", "",
             f"{record['device']}, {record['threads']} threads, ISA: {capability_text(record['capability'])}; "
             f"torch {record['torch']}. {record['timed']}; median of {record['rounds']} interleaved rounds.", "",
             "| task | method | batch | ms | fp32 ms | x fp32 | target | met | execution paths |",
             "|---|---|---:|---:|---:|---:|---|---|---|"]
    for r in record["rows"]:
        met = {True: "yes", False: "**no**"}.get(r.get("met"), "")
        extra = f" ({r['vs_dynamic_int8']}x dynamic_int8)" if "vs_dynamic_int8" in r else ""
        lines.append(f"| {r['task']} | `{r['method']}` | {r['batch']} | {r['ms']} | {r['baseline_ms']} | "
                     f"{r['ratio']}{extra} | {r['target'] if 'need' in r else ''} | {met} | {'; '.join(r['paths'])} |")
    misses = [r for r in record["rows"] if r.get("met") is False]
    if misses:
        lines += ["", "## Where the time goes in the rows that miss (torch.profiler, self CPU time)", ""]
        for r in misses:
            lines += [f"- `{r['method']}` on {r['task']}, batch {r['batch']}: " + "; ".join(r["profile"]),
                      "  - fp32 baseline: " + "; ".join(r["baseline_profile"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
