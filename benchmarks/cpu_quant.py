"""What the quantization methods' CPU paths cost against fp32 and PyTorch's own int8 kernels.

    python benchmarks/cpu_quant.py [--task rotten-tomatoes] [--threads N] [--out results/benchmarks] [--quick] [--method SPEC ...]

For one standard task's model (weights as built: latency does not depend on training), each method
compresses it (no fine-tuning; dynamic activations need no calibration data), the result is saved
as the suite's artifact and reloaded from those bytes onto a freshly built model, as the harness
does, and the reloaded model is timed with the suite's latency protocol at the task's batch sizes, eager and as
`torch.compile(model)` (the harness's `--compile`), in one process, methods interleaved per mode so
machine drift hits them alike. The question it answers: is `quant.w8a8` ever slower than
`torch.dynamic_int8` (fbgemm) on this CPU, and how far are the weight-only formats from fp32.
Writes results/benchmarks/cpu-quant-<task>-vm-<isa>.json (named after the machine kind and its
instruction set, e.g. -vm-avx512-vnni-amx-bf16, so records of different CPUs sit side by side;
-quick with --quick). Run it on a quiet machine: these are timings.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ("baseline", "torch.dynamic_int8", "quant.w8a8", "quant.minmax:bits=8,granularity=channel",
         "quant.minmax", "quant.kmeans:iters=3")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="rotten-tomatoes")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable)")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--quick", action="store_true", help="short timings (a smoke run, not a record)")
    ap.add_argument("--method", action="append", help="a method spec (repeatable; default: a spread of the built-ins)")
    args = ap.parse_args(argv)
    import tempfile

    import torch

    from slimbench.methods import create_method
    from slimbench.suite.artifact import load_artifact, save_artifact
    from slimbench.methods.quant.w8a8 import cpu_int_mm_exact
    from slimbench.suite.context import make_context
    from slimbench.suite.measure.latency import LatencyConfig, measure_latency
    from slimbench.suite.measure.reloaded import compiled
    from slimbench.suite.provenance import capability, device_name
    from slimbench.tasks import get_task

    threads = args.threads or len(os.sched_getaffinity(0))
    task = get_task(args.task, "quick")
    base = task.build_model().eval()
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(args.method or SPECS):  # what is timed is what the artifact's bytes give
            method = create_method(spec)
            result = method.compress(copy.deepcopy(base), make_context(seed=0))
            save_artifact(result, method, Path(tmp) / str(i))
            models[spec] = load_artifact(Path(tmp) / str(i), task.build_model, method).eval()
    cfg = LatencyConfig(warmup=2 if args.quick else 5, min_runs=3 if args.quick else 20,
                        min_seconds=0.1 if args.quick else 1.5, max_seconds=2 if args.quick else 10, threads=threads)
    rows = {spec: {} for spec in models}
    for mode in ("eager", "compile"):
        for spec, model in models.items():
            fn = compiled(model, "default") if mode == "compile" else model
            for bs in task.config.latency_batch_sizes:
                inputs = task.example_inputs(bs)

                def call(fn=fn, inputs=inputs):
                    with torch.inference_mode():
                        return fn(**inputs)
                try:
                    ms = round(measure_latency(call, "cpu", cfg).median_ms, 3)
                except Exception as exc:  # a model torch.compile cannot build is a finding
                    ms = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                rows[spec][f"{mode}_bs{bs}_ms"] = ms
                print(f"{mode:8s} {spec:42s} bs{bs:<3d} {ms}", flush=True)
    record = {"benchmark": "cpu_quant", "task": args.task, "quick": args.quick, "threads": threads,
              "timed": "each model reloaded from its saved artifact (as the harness measures)",
              "device": device_name("cpu"), "capability": capability("cpu"), "int_mm_exact": cpu_int_mm_exact(),
              "torch": torch.__version__, "python": platform.python_version(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "rows": rows}
    from slimbench.core.record import capability_text

    isa = capability_text(record["capability"]).lower().replace(" ", "-") or "cpu"
    out = Path(args.out) / f"cpu-quant-{args.task}-vm-{isa}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
