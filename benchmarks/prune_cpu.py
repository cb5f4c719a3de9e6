"""What pruning buys in CPU latency, on the standard tasks' models: FLOPs removed vs time saved.

    python benchmarks/prune_cpu.py [--threads N] [--out results/benchmarks] [--quick]

For each standard task's model (weights as built: latency does not depend on training), at the
task's latency batch sizes, with the suite's own latency protocol and FLOP counter:
- structured pruning (`prune.structured`'s surgery) at several ratios: FLOP reduction against
  measured speedup;
- unstructured sparsity (magnitude masks) at 50/70/90%, run with the dense kernel (weights expanded
  once) and with torch's CSR sparse matmul: whether sparsity is ever faster on this CPU.
Convs have no CPU sparse kernel here (a sparse conv runs its expanded weight), so the CNN's
unstructured rows are skipped. Writes results/benchmarks/prune-cpu-vm.json (-quick with --quick):
named after the machine kind, as the other CPU records. Run it on a quiet machine: these are timings.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import re
import sys
import types
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time(model, inputs: dict, threads: int, quick: bool) -> float:
    import torch

    from slimbench.suite.measure.latency import LatencyConfig, measure_latency

    def call():
        with torch.inference_mode():
            return model(**inputs)
    cfg = LatencyConfig(warmup=2 if quick else 5, min_runs=5 if quick else 20, min_seconds=0.2 if quick else 1.0,
                        max_seconds=3.0 if quick else 10.0, threads=threads)
    return measure_latency(call, "cpu", cfg).median_ms


def _flops(model, inputs: dict) -> int:
    from slimbench.suite.measure.flops import count_flops
    return count_flops(model, {k: v[:1] for k, v in inputs.items()})["effective"]


def structured(task, ratios, threads: int, quick: bool) -> list[dict]:
    from slimbench.methods.common.options import DEFAULT_SKIP
    from slimbench.methods.prune.structured import attention_blocks, prune_cnn, prune_transformer, sync_attention

    base = task.build_model().eval()
    out = []
    for ratio in ratios:
        model = copy.deepcopy(base)
        if attention_blocks(model):
            prune_transformer(attention_blocks(model), ratio, None, round_to=8)
            sync_attention(model)
        else:
            ctx = types.SimpleNamespace(device="cpu", example_inputs=lambda n: task.example_inputs(n))
            prune_cnn(model, ratio, "l1", DEFAULT_SKIP, ctx, 1, round_to=8)
        model.eval()
        for bs in task.config.latency_batch_sizes:
            x = task.example_inputs(bs)
            fb, fp = _flops(base, x), _flops(model, x)
            tb, tp = _time(base, x, threads, quick), _time(model, x, threads, quick)
            out.append({"ratio": ratio, "batch": bs, "flops_reduction": fb / fp, "dense_ms": tb, "pruned_ms": tp,
                        "speedup": tb / tp})
            print(f"  {task.name} structured ratio {ratio} bs {bs}: FLOPs /{fb / fp:.2f}, latency x{tb / tp:.2f}",
                  flush=True)
    return out


def unstructured(task, sparsities, threads: int, quick: bool) -> list[dict]:
    import torch

    from slimbench.methods.common.layers import replace_module
    from slimbench.methods.prune import masks as mk
    from slimbench.methods.prune.sparse import SparseLinear
    from slimbench.methods.common.options import DEFAULT_SKIP

    base = task.build_model().eval()
    out = []
    for s in sparsities:
        model = copy.deepcopy(base)
        layers = {n: m for n, m in mk.selected(model, DEFAULT_SKIP, "bench").items()
                  if isinstance(m, torch.nn.Linear)}
        if not layers:
            return out
        mk.apply(layers, mk.masks_from(mk.saliency(model, layers, "magnitude"), {n: s for n in layers}))
        for name, layer in layers.items():
            replace_module(model, name, SparseLinear.from_dense(layer.weight, layer.bias, "csr", "csr"))
        twins = [m for m in model.modules() if isinstance(m, SparseLinear)]
        for bs in task.config.latency_batch_sizes:
            x = task.example_inputs(bs)
            row = {"sparsity": s, "batch": bs, "layers": len(twins), "dense_baseline_ms": _time(base, x, threads, quick)}
            for kernel in ("dense", "csr"):
                for m in twins:
                    m.kernel = kernel
                row[f"{kernel}_ms"] = _time(model, x, threads, quick)
            row["csr_speedup"] = row["dense_baseline_ms"] / row["csr_ms"]
            out.append(row)
            print(f"  {task.name} unstructured {s:.0%} bs {bs}: dense {row['dense_ms']:.3g} ms, csr "
                  f"{row['csr_ms']:.3g} ms (baseline {row['dense_baseline_ms']:.3g} ms)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--tasks", default="fashion-mnist,rotten-tomatoes")
    ap.add_argument("--quick", action="store_true", help="fewer timed runs (a smoke test of the script)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from slimbench.suite.provenance import capability, cpu_model
    from slimbench.tasks import get_task

    torch.manual_seed(0)
    result = {"host": platform.node(), "cpu": cpu_model(), "capability": capability("cpu"), "threads": args.threads,
              "torch": torch.__version__, "quick": args.quick,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "tasks": {}}
    for name in args.tasks.split(","):
        task = get_task(name, "quick" if args.quick else "default")
        print(name, flush=True)
        result["tasks"][name] = {"structured": structured(task, (0.3, 0.5), args.threads, args.quick),
                                 "unstructured": unstructured(task, (0.5, 0.7, 0.9), args.threads, args.quick)}
    tag = "vm" if not args.quick else "quick"
    out = Path(args.out) / f"prune-cpu-{re.sub(r'[^a-z0-9]+', '-', tag)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
