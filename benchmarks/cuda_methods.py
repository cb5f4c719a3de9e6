"""Each built-in quantization method through the harness's own CUDA path, on task-shaped models.

    python benchmarks/cuda_methods.py [--min-seconds 0.3] [--out results/benchmarks]
    python benchmarks/cuda_methods.py --dry-run [--out DIR]    # CPU, small shapes: the plumbing

Why: `slimbench run --device cuda` needs MLflow and the task data, which the lent GPU machine
does not have, yet the CUDA side of the harness (methods compressing for a CUDA device with
`compute=auto`, artifacts rebuilt from their bytes, CUDA-event and CUDA-graph latency, the
allocator's peak) must be known to work before a GPU run is trusted. This script runs those
same pieces (`Method.compress`, `suite.artifact.save_artifact` / `load_artifact`,
`suite.measure.latency`, `suite.measure.memory`) on random-weight copies of the two standard
task models: timm test_resnet on 1x28x28 images (fashion-mnist) and a MiniLM-L6-shaped BERT at
sequence 48 (rotten-tomatoes), at the tasks' latency batch sizes. It also counts the calls into
each Triton kernel during one forward, so a row whose kernels never ran is visible, and the SNR
of the logits against the fp32 model (random weights: it catches broken paths, not accuracy
loss). A method that fails is recorded with its error and the next one runs.

Writes cuda-methods-<gpu>.json under --out (default results/benchmarks; --dry-run writes only
when --out is given) after every row (`complete` says whether all ran). Exits 1 if a method
that should run failed.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import re
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

SPECS = ["baseline", "half", "torch.dynamic_int8", "quant.minmax", "quant.minmax:bits=8", "quant.gptq",
         "quant.kmeans:bits=2", "quant.kmeans:bits=4", "quant.w8a8", "quant.w8a8:activations=static",
         "quant.w8a8:activations=static,fuse_act=true", "quant.fp8"]
DRY_SPECS = ["baseline", "quant.minmax", "quant.kmeans:bits=2", "quant.w8a8",
             "quant.w8a8:activations=static,fuse_act=true", "quant.fp8"]
KERNELS = {"w8a8": ["quantize_act", "int8_gemm"], "w4a16": ["w4a16_linear"], "codebook": ["codebook_gemv"]}


def build_models(dry: bool):
    """(name, model, make_inputs(batch), latency batch sizes) for the two task shapes (small in a dry run)."""
    import timm
    import torch

    from e2e_bert_w8a8 import build_model
    from slimbench.tasks.text import HFClassifier
    from slimbench.tasks.vision import TimmClassifier

    torch.manual_seed(0)
    resnet = TimmClassifier(timm.create_model("test_resnet", num_classes=10, in_chans=1), channels_last=True)
    shape = {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 256} if dry else \
        {"hidden": 384, "layers": 6, "heads": 12, "intermediate": 1536}
    bert = HFClassifier(build_model(shape, "cpu", torch.float32))

    def images(bs):
        return {"pixel_values": torch.randn(bs, 1, 28, 28)}

    def tokens(bs, seq=48):
        g = torch.Generator().manual_seed(bs)
        return {"input_ids": torch.randint(0, 30522, (bs, seq), generator=g),
                "attention_mask": torch.ones(bs, seq, dtype=torch.long)}
    return [("fashion-mnist/test_resnet", resnet.eval(), images, (1, 4) if dry else (1, 64)),
            ("rotten-tomatoes/minilm-l6-shape", bert.eval(), tokens, (1, 4) if dry else (1, 32))]


class KernelCounter:
    """Counts calls into the Triton kernel entry points (modules look them up at call time)."""

    def __init__(self):
        import importlib
        self.counts: dict[str, int] = {}
        self._saved = []
        for mod_name, fns in KERNELS.items():
            mod = importlib.import_module(f"slimbench.methods.quant.kernels.{mod_name}")
            for fn in fns:
                self._saved.append((mod, fn, getattr(mod, fn)))

    def __enter__(self):
        for mod, fn, orig in self._saved:
            key = f"{mod.__name__.rsplit('.', 1)[-1]}.{fn}"

            def counted(*a, _orig=orig, _key=key, **kw):
                self.counts[_key] = self.counts.get(_key, 0) + 1
                return _orig(*a, **kw)
            setattr(mod, fn, counted)
        return self

    def __exit__(self, *exc):
        for mod, fn, orig in self._saved:
            setattr(mod, fn, orig)


def run_one(spec, name, model, make_inputs, batches, dev, args) -> dict:
    import torch

    from slimbench.methods import create_method
    from slimbench.methods.common.layers import snr_db
    from slimbench.suite.artifact import load_artifact, save_artifact
    from slimbench.suite.context import make_context
    from slimbench.suite.measure.latency import LatencyConfig, measure_latency
    from slimbench.suite.measure.memory import peak_memory
    from slimbench.suite.measure.reloaded import compiled

    row: dict = {"model": name, "method": spec}
    method = create_method(spec)
    reason = method.supports(None, dev)
    if reason:
        return {**row, "status": "unsupported", "reason": reason}
    calib = [(make_inputs(16), torch.zeros(16, dtype=torch.long)) for _ in range(4)]
    ctx = make_context(baseline=model, device=dev, calibration=calib, train=calib, owner=spec)
    compressed = method.compress(copy.deepcopy(model).to(dev), ctx)  # as the harness: on the run's device
    meta = getattr(compressed, "meta", {})
    with tempfile.TemporaryDirectory() as tmp:
        info = save_artifact(compressed, method, Path(tmp))
        # a fresh fp32 copy stands in for the task's builder: these models are not tasks
        restored = load_artifact(Path(tmp), lambda **_: copy.deepcopy(model), method).eval().to(dev)
    row.update(status="ok", size_bytes=info.size_bytes, compute_dtype=meta.get("compute_dtype"), batches={})
    ref_model = copy.deepcopy(model).to(dev)
    for bs in batches:
        inputs = {k: v.to(dev) for k, v in make_inputs(bs).items()}
        with torch.inference_mode():
            ref = ref_model(**inputs).float()
            with KernelCounter() as kc:
                out = restored(**inputs).float()
        entry = {"snr_db": round(snr_db(ref, out), 2), "kernel_calls": kc.counts}

        def call(inputs=inputs):
            with torch.inference_mode():
                return restored(**inputs)
        modes = [False, True] if dev.type == "cuda" else [False]
        timed = {"": call}
        if args.compile:  # the same model as torch.compile(model), as `slimbench run --compile` times it
            fn = compiled(restored, "default")

            def timed_compiled(inputs=inputs, fn=fn):
                with torch.inference_mode():
                    return fn(**inputs)
            timed["compiled_"] = timed_compiled
        for prefix, fn in timed.items():
            for graph in modes:
                cfg = LatencyConfig(warmup=1 if args.dry_run else 3, min_runs=2 if args.dry_run else 10,
                                    min_seconds=args.min_seconds, max_seconds=2.0, cuda_graph=graph)
                key = prefix + ("graph_ms" if graph else "eager_ms")
                try:
                    entry[key] = round(measure_latency(fn, dev, cfg).median_ms, 4)
                except Exception as exc:  # a model that cannot be captured (or compiled) is a finding
                    entry[key] = None
                    entry[f"{key}_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        entry["peak_bytes"] = peak_memory(call, dev)
        row["batches"][str(bs)] = entry
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, small BERT shape and batches; writes only with --out")
    ap.add_argument("--min-seconds", type=float, default=0.3, help="timed work per latency point")
    ap.add_argument("--methods", default=None, help="comma-separated method specs (default: a spread of the "
                    "built-ins; --dry-run: a short list)")
    ap.add_argument("--out", default=None, help="folder for the JSON (default results/benchmarks on a GPU)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile(model) (default mode), eager "
                    "and as a CUDA graph (compiled_eager_ms, compiled_graph_ms)")
    args = ap.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("cuda_methods: no CUDA device here; run it on the GPU machine (or --dry-run). Nothing was measured.")
        return 0
    from e2e_bert_w8a8 import import_slimbench
    how = import_slimbench()
    dev = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        args.min_seconds = 0.0
    gpu = "cpu" if args.dry_run else torch.cuda.get_device_name()
    print(f"slimbench: {how}; device {gpu}", flush=True)
    specs = args.methods.split(",") if args.methods else DRY_SPECS if args.dry_run else SPECS
    import triton
    rows, failed = [], 0
    result = {"device": gpu, "torch": torch.__version__, "triton": triton.__version__, "dry_run": args.dry_run,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "rows": rows,
              "complete": False}
    out_dir = args.out or (None if args.dry_run else str(ROOT / "results" / "benchmarks"))
    path = None
    if out_dir:
        slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
        path = Path(out_dir) / f"cuda-methods-{slug}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
    for name, model, make_inputs, batches in build_models(args.dry_run):
        for spec in [s for s in specs if s]:
            try:
                row = run_one(spec, name, model, make_inputs, batches, dev, args)
            except Exception as exc:
                failed += 1
                row = {"model": name, "method": spec, "status": "failed",
                       "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            rows.append(row)
            print(summary_line(row), flush=True)
            if path:  # after every row: a timeout keeps what was measured
                path.write_text(json.dumps(result, indent=1))
    result["complete"] = True
    if path:
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")
    print(f"{len(rows)} rows, {failed} failed")
    return 1 if failed else 0


def summary_line(row: dict) -> str:
    head = f"{row['model']:32s} {row['method']:30s} {row['status']:11s}"
    if row["status"] != "ok":
        return head + " " + (row.get("reason") or row.get("error", ""))[:90]
    parts = []
    for bs, e in row["batches"].items():
        calls = sum(e["kernel_calls"].values())
        eager = "n/a" if e.get("eager_ms") is None else f"{e['eager_ms']:.3f}"
        graph = f"/{e['graph_ms']:.3f}g" if e.get("graph_ms") else ""
        parts.append(f"bs{bs} {eager}{graph}ms snr {e['snr_db']:.1f} k{calls}")
    return head + f" {row['size_bytes'] / 1e6:7.3f}MB " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
